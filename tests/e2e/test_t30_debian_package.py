"""The Debian package (issue 22): packaging/build-deb.sh builds it from
the release binary under test, lintian finds no errors, systemd-analyze
accepts the unit, and the packaged binary, run from a scratch root with
the packaged config moved to loopback ports, takes and delivers a
message."""

import gzip
import re
import subprocess
from pathlib import Path

import pytest

from conftest import SESSION_DNS, binary, free_port, send, wait_port, wait_until

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def debs(tmp_path_factory):
    out = tmp_path_factory.mktemp("deb")
    r = subprocess.run(["bash", str(REPO / "packaging" / "build-deb.sh"), "--binary", binary(), "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    main = next(out.glob("portcullis_*.deb"))
    dbgsym = next(out.glob("portcullis-dbgsym_*.deb"))
    return main, dbgsym


@pytest.fixture(scope="module")
def scratch_root(debs, tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(root)], check=True)
    return root


def test_lintian_finds_no_errors(debs):
    r = subprocess.run(["lintian", "--fail-on", "error", *map(str, debs)], capture_output=True, text=True,
                       timeout=600)
    errors = [l for l in r.stdout.splitlines() if l.startswith("E:")]
    assert r.returncode == 0 and not errors, r.stdout + r.stderr


def test_the_package_holds_what_an_operator_expects(debs, scratch_root):
    fields = subprocess.run(["dpkg-deb", "-f", str(debs[0])], capture_output=True, text=True, check=True).stdout
    assert re.search(r"^Depends: .*adduser", fields, re.M), fields
    conffiles = subprocess.run(["dpkg-deb", "-I", str(debs[0]), "conffiles"], capture_output=True, text=True,
                               check=True).stdout
    assert conffiles.split() == ["/etc/portcullis/portcullis.toml"]
    for path in ["usr/bin/portcullis", "lib/systemd/system/portcullis.service",
                 "usr/share/man/man1/portcullis.1.gz", "usr/share/man/man1/portcullis-queue.1.gz",
                 "usr/share/man/man5/portcullis.toml.5.gz",
                 "usr/share/bash-completion/completions/portcullis", "usr/share/zsh/vendor-completions/_portcullis",
                 "usr/share/doc/portcullis/copyright"]:
        assert (scratch_root / path).exists(), path
    # portcullis.toml(5) is docs/configuration.md: every table, as roff.
    man5 = gzip.decompress((scratch_root / "usr/share/man/man5/portcullis.toml.5.gz").read_bytes()).decode()
    assert man5.startswith(".TH PORTCULLIS.TOML 5"), man5[:200]
    assert "\\fB[[listener]]\\fR" in man5 and "\\fBtrust_ad\\fR" in man5, man5[:2000]
    # Stripped: the debug info lives in the -dbgsym package, by build id.
    sections = subprocess.run(["readelf", "-S", str(scratch_root / "usr/bin/portcullis")], capture_output=True,
                              text=True, check=True).stdout
    assert ".debug_info" not in sections and ".symtab" not in sections
    listing = subprocess.run(["dpkg-deb", "-c", str(debs[1])], capture_output=True, text=True, check=True).stdout
    assert re.search(r"usr/lib/debug/\.build-id/[0-9a-f]{2}/[0-9a-f]+\.debug", listing), listing
    # The postinst makes the system user and the data directory.
    postinst = subprocess.run(["dpkg-deb", "-I", str(debs[0]), "postinst"], capture_output=True, text=True,
                              check=True).stdout
    assert "adduser --system" in postinst and "/var/lib/portcullis" in postinst


def test_systemd_accepts_the_unit(scratch_root, tmp_path):
    # The unit names /usr/bin/portcullis; verify it against the scratch
    # root's copy of the binary (systemd-analyze checks it is executable).
    unit = (scratch_root / "lib/systemd/system/portcullis.service").read_text()
    copy = tmp_path / "portcullis.service"
    copy.write_text(unit.replace("/usr/bin/portcullis", str(scratch_root / "usr/bin/portcullis")))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(), r.stdout + r.stderr


def test_the_packaged_binary_serves_with_the_packaged_config(scratch_root, tmp_path):
    mx, sub, subs, http = (free_port() for _ in range(4))
    text = (scratch_root / "etc/portcullis/portcullis.toml").read_text()
    text = text.replace('data_dir = "/var/lib/portcullis"', f'data_dir = "{tmp_path / "data"}"')
    text = text.replace('bind = ["0.0.0.0:25", "[::]:25"]', f'bind = ["127.0.0.1:{mx}"]')
    text = text.replace('bind = ["[::]:587"]', f'bind = ["127.0.0.1:{sub}"]')
    text = text.replace('bind = ["[::]:465"]', f'bind = ["127.0.0.1:{subs}"]')
    text = text.replace('bind = "127.0.0.1:8025"', f'bind = "127.0.0.1:{http}"')
    text = text.replace('nameservers = ["127.0.0.1:53"]', f'nameservers = ["127.0.0.1:{SESSION_DNS["port"]}"]')
    config = tmp_path / "portcullis.toml"
    config.write_text(text)
    exe = str(scratch_root / "usr/bin/portcullis")
    check = subprocess.run([exe, "check-config", "--config", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen([exe, "serve", "--config", str(config)], stdout=log, stderr=log)
    try:
        wait_port(mx, proc=proc)
        send(mx, "a@remote.test", "postmaster@example.test", "Subject: from the package\r\n\r\nhi\r\n")
        inbox = tmp_path / "data" / "mail" / "example.test" / "postmaster" / "new"
        wait_until(lambda: inbox.exists() and any(b"from the package" in p.read_bytes() for p in inbox.iterdir()),
                   20, lambda: (tmp_path / "server.log").read_text()[-2000:])
    finally:
        proc.terminate()
        proc.wait(timeout=20)
