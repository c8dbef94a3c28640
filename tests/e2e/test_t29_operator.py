"""In an operator's hands (issue 22): every command finds the same config
(`--config`, `PORTCULLIS_CONFIG`, `/etc/portcullis/portcullis.toml`, the
embedded default, which says so); `check-config` refuses what `serve`
would; the generated certificate is named for the host; SIGHUP on the
embedded default reloads the certificate; 587 asks for STARTTLS before
MAIL, and HELP offers STARTTLS only where it can be used; the CLI has
help for every option, `sendmail --help` included, says what it did, and
finds a reputation by the address."""

import os
import signal
import smtplib
import socket
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from conftest import PASSWORD, binary, insecure_tls, port_open, send, wait_until

SYSTEM_CONFIG = Path("/etc/portcullis/portcullis.toml")


def run(*args, env=None, cwd=None, stdin=None):
    """The CLI with PORTCULLIS_CONFIG and PORTCULLIS_DATA as given (unset
    otherwise), so the test decides where the config comes from."""
    base = {k: v for k, v in os.environ.items() if k not in ("PORTCULLIS_CONFIG", "PORTCULLIS_DATA")}
    return subprocess.run([binary(), *args], capture_output=True, text=True, timeout=30,
                          env={**base, **(env or {})}, cwd=cwd, input=stdin)


def test_portcullis_config_is_used_by_serve_and_every_command(make_server, workdir):
    s = make_server(start=False)
    env = {"PORTCULLIS_CONFIG": str(s.config)}
    # serve with no --config: the file of PORTCULLIS_CONFIG, its ports.
    logf = open(s.log, "ab")
    s.proc = subprocess.Popen([binary(), "serve"], stdout=logf, stderr=logf, cwd=workdir,
                              env={**os.environ, **env, "PORTCULLIS_LOG_FORMAT": "json"})
    wait_until(lambda: port_open(s.mx), 30, "serve to listen on the configured port")
    # A command with no --config works on the same data: the account is
    # the running server's, and nothing is made in the working directory.
    r = run("user", "add", "carol@local.test", "--password-stdin", env=env, cwd=workdir, stdin=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    assert "embedded default" not in r.stderr
    assert not (workdir / "portcullis-data").exists()
    send(s.mx, "a@remote.test", ["u@local.test"], "Subject: x\r\n\r\nhi\r\n")
    s.wait_messages("u", 1)
    with smtplib.SMTP("127.0.0.1", s.sub, timeout=10) as c:
        c.starttls(context=insecure_tls())
        c.ehlo()
        c.login("carol@local.test", PASSWORD)
    r = run("check-config", env=env, cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{s.config}: ok"), r.stdout
    # SIGHUP reads the file serve found, though no --config named it.
    s.proc.send_signal(signal.SIGHUP)
    [reloaded] = s.wait_event("reloaded")
    assert reloaded["path"] == str(s.config)


@pytest.mark.skipif(SYSTEM_CONFIG.exists(), reason="this machine has a system-wide config")
def test_the_embedded_default_says_so_on_stderr(workdir):
    r = run("queue", "list", cwd=workdir, env={"PORTCULLIS_DATA": str(workdir / "d")})
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert "no config file (--config, PORTCULLIS_CONFIG, /etc/portcullis/portcullis.toml)" in r.stderr
    assert f"using the embedded default, data in {workdir / 'd'}" in r.stderr


def test_a_missing_config_file_is_reported_once(workdir):
    r = run("queue", "list", "--config", str(workdir / "nope.toml"))
    assert r.returncode != 0
    assert r.stderr.count("No such file") == 1, r.stderr


def openssl_pair(dir: Path, cn: str) -> tuple[Path, Path]:
    dir.mkdir(parents=True, exist_ok=True)
    cert, key = dir / "cert.pem", dir / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={cn}"],
                   check=True, capture_output=True)
    return cert, key


def test_check_config_refuses_a_mismatched_or_swapped_pair_and_an_unusable_data_dir(workdir):
    a_cert, a_key = openssl_pair(workdir / "a", "a.test")
    _, b_key = openssl_pair(workdir / "b", "b.test")

    def check(cert, key, data_dir=workdir / "data"):
        path = workdir / "c.toml"
        path.write_text(f'data_dir = "{data_dir}"\n[tls]\ncert = "{cert}"\nkey = "{key}"\n')
        return run("check-config", "--config", str(path))

    assert check(a_cert, a_key).returncode == 0
    mismatched = check(a_cert, b_key)
    assert mismatched.returncode != 0 and "do not match" in mismatched.stderr, mismatched.stderr
    swapped = check(a_key, a_cert)
    assert swapped.returncode != 0 and "no certificate" in swapped.stderr, swapped.stderr
    (workdir / "plain").write_text("a file")
    unusable = check(a_cert, a_key, data_dir=workdir / "plain" / "data")
    assert unusable.returncode != 0 and "not a directory" in unusable.stderr, unusable.stderr


def served_certificate(port: int) -> x509.Certificate:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with insecure_tls().wrap_socket(sock) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def common_name(cert: x509.Certificate) -> str:
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def test_the_generated_certificate_is_named_for_the_host_and_valid_for_a_year(server):
    cert = served_certificate(server.subs)
    assert common_name(cert) == "mx.portcullis.test"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "mx.portcullis.test" in sans.get_values_for_type(x509.DNSName)
    now = datetime.now(timezone.utc)
    assert now - timedelta(days=2) < cert.not_valid_before_utc < now
    assert now + timedelta(days=300) < cert.not_valid_after_utc < now + timedelta(days=400)


EMBEDDED_PORTS = (2525, 2587, 2465, 8025)


@pytest.mark.skipif(any(port_open(p) for p in EMBEDDED_PORTS), reason="the embedded default's ports are in use")
def test_sighup_on_the_embedded_default_reloads_the_certificate(workdir):
    data = workdir / "data"
    log = workdir / "server.log"
    base = {k: v for k, v in os.environ.items() if k not in ("PORTCULLIS_CONFIG",)}
    proc = subprocess.Popen([binary(), "serve"], stdout=open(log, "ab"), stderr=subprocess.STDOUT, cwd=workdir,
                            env={**base, "PORTCULLIS_DATA": str(data), "PORTCULLIS_LOG_FORMAT": "json"})
    try:
        wait_until(lambda: port_open(2465), 30, "the embedded default's 465")
        generated = common_name(served_certificate(2465))
        # The operator puts a real certificate where the generated one was.
        openssl_pair(data / "tls", "replaced.portcullis.test")
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: common_name(served_certificate(2465)) == "replaced.portcullis.test", 10,
                   lambda: f"the new certificate (was {generated}):\n{log.read_text()[-1500:]}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_sendmail_help_works():
    r = run("sendmail", "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Usage: portcullis sendmail")


def test_mail_before_starttls_on_587_asks_for_starttls(server):
    with smtplib.SMTP("127.0.0.1", server.sub, timeout=10) as c:
        c.ehlo("client.test")
        assert c.mail("alice@local.test") == (530, b"5.7.0 Must issue a STARTTLS command first")
        code, text = c.docmd("HELP")
        assert code == 214 and b"STARTTLS" in text
    # On 465 TLS is already on: HELP does not offer it.
    with smtplib.SMTP_SSL("127.0.0.1", server.subs, timeout=10, context=insecure_tls()) as c:
        c.ehlo("client.test")
        assert "starttls" not in c.esmtp_features
        code, text = c.docmd("HELP")
        assert code == 214 and b"STARTTLS" not in text


def test_state_commands_say_what_they_did_and_reputation_takes_an_address(server):
    r = server.cli("blocklist", "add", "192.0.2.0/24", "--secs", "60")
    assert (r.returncode, r.stdout) == (0, "192.0.2.0/24 blocked for 60s\n"), r.stderr
    r = server.cli("blocklist", "del", "192.0.2.0/24")
    assert (r.returncode, r.stdout) == (0, "192.0.2.0/24 unblocked\n"), r.stderr
    r = server.cli("known-senders", "add", "198.51.100.0/24", "partner")
    assert (r.returncode, r.stdout) == (0, "198.51.100.0/24 is known sender partner\n"), r.stderr
    r = server.cli("known-senders", "del", "198.51.100.0/24")
    assert (r.returncode, r.stdout) == (0, "198.51.100.0/24 is no longer a known sender\n"), r.stderr
    r = server.cli("alias", "add", "team@local.test", "u@local.test", "v@local.test")
    assert (r.returncode, r.stdout) == (0, "team@local.test -> u@local.test, v@local.test\n"), r.stderr
    r = server.cli("alias", "del", "team@local.test")
    assert (r.returncode, r.stdout) == (0, "team@local.test removed\n"), r.stderr
    # A message from 127.0.0.1 gives its range a reputation, found by the
    # address as the operator types it.
    send(server.mx, "a@remote.test", ["u@local.test"], "Subject: x\r\n\r\nhi\r\n")
    server.wait_messages("u", 1)

    def shown():
        r = server.cli("reputation", "show", "127.0.0.1")
        return r if r.returncode == 0 else None

    r = wait_until(shown, 10, "a reputation for 127.0.0.1")
    assert "range:127.0.0.1/32" in r.stdout, r.stdout
