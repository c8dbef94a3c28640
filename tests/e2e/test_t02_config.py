"""A bad config is refused by check-config and by serve, naming the file,
line and key."""

import subprocess

from conftest import binary

# [acme] needs the HTTPS host the CA validates on.
ACME_HTTPS = '[http]\nbind = "127.0.0.1:8025"\nmta_sts_bind = "127.0.0.1:8443"\n\n'

CASES = {
    "unknown_key": ('hostname = "mx.test"\nlistner = 1\n', 2, "listner", "unknown field"),
    "bad_address": ('[[listener]]\nrole = "mx"\nbind = ["127.0.0.1:99999"]\n', 3, "listener.bind", "address"),
    "missing_cert": ('[tls]\ncert = "/nonexistent/cert.pem"\nkey = "/nonexistent/key.pem"\n', 2, "tls.cert", "/nonexistent/cert.pem"),
    "acme_plain_http": (ACME_HTTPS + '[acme]\ndirectory = "http://ca.test/dir"\n', 6, "acme.directory", "https://"),
    "acme_http_01": (ACME_HTTPS + '[acme]\ndirectory = "https://ca.test/dir"\nchallenge = "http-01"\n', 7,
                     "acme.challenge", "tls-alpn-01"),
    "acme_contact": (ACME_HTTPS + '[acme]\ndirectory = "https://ca.test/dir"\ncontact = ["me@example.test"]\n', 7,
                     "acme.contact", "mailto:"),
    "acme_no_https_host": ('[acme]\ndirectory = "https://ca.test/dir"\n', 2, "acme.directory", "mta_sts_bind"),
}


def run(*args):
    return subprocess.run([binary(), *args], capture_output=True, text=True, timeout=30)


def check(result, path, line, key, words):
    assert result.returncode != 0
    assert f"{path}:{line}:" in result.stderr, result.stderr
    assert f"key `{key}`" in result.stderr, result.stderr
    assert words in result.stderr, result.stderr


def test_bad_configs_are_refused_by_check_config_and_serve(workdir):
    for name, (text, line, key, words) in CASES.items():
        path = workdir / f"{name}.toml"
        path.write_text(text)
        check(run("check-config", "--config", str(path)), path, line, key, words)
        check(run("serve", "--config", str(path)), path, line, key, words)


def test_good_config_passes(workdir):
    path = workdir / "good.toml"
    path.write_text('hostname = "mx.test"\n[[domain]]\nname = "example.test"\n')
    r = run("check-config", "--config", str(path))
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout


def test_the_example_config_is_valid(workdir):
    from conftest import ROOT

    text = (ROOT / "portcullis.example.toml").read_text().replace("/var/lib/portcullis", str(workdir / "data"))
    path = workdir / "example.toml"
    path.write_text(text)
    r = run("check-config", "--config", str(path))
    assert r.returncode == 0, r.stderr
