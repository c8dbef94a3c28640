"""The sendmail drop-in (issue 9): programs pipe a message to `portcullis
sendmail` (or a `sendmail` link) and it reaches a running portcullis
found by RFC 6186 SRV records on the test DNS server: over 465 first,
587 when 465 is closed, never authenticating in plaintext or to a
certificate it does not trust, and keeping mail in an outbox while the
server is down."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import Server, binary, free_port
from dnsserver import DnsServer
from smtpraw import ScriptedPeer

SERVER_NAME = "mail.example.test"


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(d: Path, name: str) -> tuple[Path, Path]:
    key, cert = d / f"{name}-ca.key", d / f"{name}-ca.pem"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name} test CA",
            "-keyout", str(key), "-out", str(cert))
    return key, cert


def server_cert(d: Path, ca_key: Path, ca_cert: Path) -> tuple[Path, Path]:
    key, csr, cert = d / "server.key", d / "server.csr", d / "server.pem"
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={SERVER_NAME}", "-keyout", str(key), "-out", str(csr))
    ext = d / "ext.cnf"
    ext.write_text(f"subjectAltName = DNS:{SERVER_NAME}\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
            "-days", "2", "-extfile", str(ext), "-out", str(cert))
    return key, cert


class PlainServer(ScriptedPeer):
    """A submission server that offers no STARTTLS and records every line."""

    def __init__(self):
        self.lines: list[str] = []
        super().__init__()

    def session(self, conn):
        with conn:
            f = conn.makefile("rwb")
            f.write(b"220 plain.example.test ESMTP\r\n")
            f.flush()
            for line in f:
                self.lines.append(line.decode(errors="replace").strip())
                if line.upper().startswith(b"EHLO"):
                    f.write(b"250-plain.example.test\r\n250 AUTH PLAIN LOGIN\r\n")
                elif line.upper().startswith(b"QUIT"):
                    f.write(b"221 bye\r\n")
                    f.flush()
                    break
                else:
                    f.write(b"250 ok\r\n")
                f.flush()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("sendmail")
    ca_key, ca = make_ca(d, "good")
    _, wrong_ca = make_ca(d, "wrong")
    key, cert = server_cert(d, ca_key, ca)
    workdir = d / "server"
    workdir.mkdir()
    s = Server(workdir, f'[tls]\ncert = "{cert}"\nkey = "{key}"\n\n[[domain]]\nname = "example.test"\n')
    subprocess.run(s.cli_args("user", "add", "app@example.test", "--password-stdin"), input="app secret\n",
                   text=True, check=True)
    s.start()
    plain = PlainServer()
    closed = free_port()
    zones = {
        "test": "",
        "example.test": (
            "mail IN A 127.0.0.1\n"
            f"_submissions._tcp IN SRV 0 1 {s.subs} mail.example.test.\n"
            f"_submission._tcp IN SRV 0 1 {s.sub} mail.example.test.\n"
        ),
        "fallback.test": (
            f"_submissions._tcp IN SRV 0 1 {closed} mail.example.test.\n"
            f"_submission._tcp IN SRV 0 1 {s.sub} mail.example.test.\n"
        ),
        "plain.test": f"mail IN A 127.0.0.1\n_submission._tcp IN SRV 0 1 {plain.port} mail.plain.test.\n",
        "down.test": (
            f"_submissions._tcp IN SRV 0 1 {closed} mail.example.test.\n"
            f"_submission._tcp IN SRV 0 1 {closed} mail.example.test.\n"
        ),
    }
    dns = DnsServer(d / "dns", zones).start()
    fingerprint = subprocess.run(
        f"openssl x509 -in {cert} -outform DER | sha256sum", shell=True, capture_output=True, text=True, check=True
    ).stdout.split()[0]
    (d / "pw").write_text("app secret\n")
    yield {"server": s, "dns": dns, "dir": d, "ca": ca, "wrong_ca": wrong_ca, "plain": plain,
           "fingerprint": fingerprint}
    s.stop()
    dns.stop()


def client_config(world, name: str, **extra) -> Path:
    lines = {
        "sender": '"app@example.test"',
        "password_file": f'"{world["dir"] / "pw"}"',
        "ca_file": f'"{world["ca"]}"',
        "nameservers": f'["127.0.0.1:{world["dns"].port}"]',
        "helo": '"client.example.test"',
        "timeout_secs": "10",
    }
    for k, v in extra.items():
        if v is None:
            lines.pop(k, None)
        else:
            lines[k] = json.dumps(v)  # a TOML basic string
    path = world["dir"] / f"{name}.toml"
    path.write_text("".join(f"{k} = {v}\n" for k, v in lines.items()))
    return path


def sendmail(config: Path, *args: str, message: str, argv0: str | None = None) -> subprocess.CompletedProcess:
    cmd = [argv0 or binary(), *([] if argv0 else ["sendmail"]), *args]
    return subprocess.run(cmd, input=message.encode(), capture_output=True, timeout=60,
                          env={**os.environ, "PORTCULLIS_SENDMAIL_CONFIG": str(config)})


def arrived(world, subject: str) -> bytes:
    """The message with this subject in u@local.test's mailbox, waited for."""
    return world["server"].wait_message("u", f"Subject: {subject}\r\n".encode(), timeout=10)


def accepted(world, listener: str | None = None) -> float:
    """Messages the server has answered 250 (on one listener)."""
    labels = {"listener": listener} if listener else {}
    return world["server"].metric("portcullis_messages_accepted_total", **labels)


def listener_of(world, subject: str) -> str:
    """Which listener took the message, from the server's Received line."""
    for m in world["server"].messages("u"):
        if f"Subject: {subject}\r\n".encode() in m:
            return m.split(b"\r\n\r\n")[0].decode()
    return ""


def test_delivers_through_srv_over_465(world):
    before = accepted(world, "submissions")
    r = sendmail(client_config(world, "srv"), "-t", message="To: u@local.test\nSubject: via srv\n\nhello\n")
    assert r.returncode == 0, r.stderr
    assert arrived(world, "via srv")
    assert accepted(world, "submissions") == before + 1


def test_falls_back_to_587_when_465_is_closed(world):
    cfg = client_config(world, "fallback", domain="fallback.test")
    r = sendmail(cfg, "-t", message="To: u@local.test\nSubject: via 587\n\nhello\n")
    assert r.returncode == 0, r.stderr
    assert arrived(world, "via 587")
    assert "ESMTPSA" in listener_of(world, "via 587")


def test_never_authenticates_over_plaintext(world):
    cfg = client_config(world, "plain", domain="plain.test")
    r = sendmail(cfg, "-t", message="To: u@local.test\nSubject: plain\n\nhello\n")
    assert r.returncode == 69, (r.returncode, r.stderr)
    assert b"STARTTLS" in r.stderr
    assert any(l.upper().startswith("EHLO") for l in world["plain"].lines)
    assert not any(l.upper().startswith("AUTH") for l in world["plain"].lines)


def test_a_certificate_from_an_untrusted_ca_is_refused(world):
    cfg = client_config(world, "wrongca", ca_file=str(world["wrong_ca"]))
    before = accepted(world)
    r = sendmail(cfg, "-t", message="To: u@local.test\nSubject: wrong ca\n\nhello\n")
    assert r.returncode == 69, (r.returncode, r.stderr)
    assert b"certificate" in r.stderr.lower()
    # The client has exited: anything it got a 250 for is counted already.
    assert accepted(world) == before
    assert not any(b"Subject: wrong ca\r\n" in m for m in world["server"].messages("u"))


def test_a_pinned_certificate_is_accepted_and_a_wrong_pin_refused(world):
    good = client_config(world, "pin", ca_file=None, pin_sha256=world["fingerprint"])
    r = sendmail(good, "-t", message="To: u@local.test\nSubject: pinned\n\nhello\n")
    assert r.returncode == 0, r.stderr
    assert arrived(world, "pinned")
    bad = client_config(world, "badpin", ca_file=None, pin_sha256="00" * 32)
    r = sendmail(bad, "-t", message="To: u@local.test\nSubject: bad pin\n\nhello\n")
    assert r.returncode == 69 and b"pinned" in r.stderr


def test_with_the_server_down_mail_waits_in_the_outbox(world):
    outbox = world["dir"] / "outbox"
    down = client_config(world, "down", domain="down.test", outbox=str(outbox))
    r = sendmail(down, "-t", message="To: u@local.test\nSubject: waited\n\nhello\n")
    assert r.returncode == 0, r.stderr  # queued, as sendmail does
    assert b"kept in" in r.stderr
    assert len(list(outbox.glob("*.json"))) == 1
    r = sendmail(down, "-q", message="")
    assert r.returncode == 75, "still down: EX_TEMPFAIL"
    no_outbox = client_config(world, "down-no-outbox", domain="down.test")
    r = sendmail(no_outbox, "-t", message="To: u@local.test\nSubject: lost?\n\nhello\n")
    assert r.returncode == 75, "EX_TEMPFAIL when there is nowhere to keep it"
    up = client_config(world, "up", outbox=str(outbox))
    r = sendmail(up, "-t", message="To: u@local.test\nSubject: next run\n\nhello\n")
    assert r.returncode == 0, r.stderr
    assert arrived(world, "waited") and arrived(world, "next run")
    assert list(outbox.glob("*.json")) == []


def test_works_as_a_php_sendmail_path(world, tmp_path):
    # php.ini: sendmail_path = "/usr/sbin/sendmail -t -i"; mail() writes
    # the headers and body with bare LF and closes stdin.
    link = tmp_path / "sendmail"
    link.symlink_to(binary())
    message = (
        "To: u@local.test\n"
        "Subject: from php\n"
        "X-PHP-Originating-Script: 1000:contact.php\n"
        "Content-Type: text/plain; charset=UTF-8\n"
        "\n"
        "A form was submitted.\n"
        ".\n"
        "The dot above is text, as -i says.\n"
    )
    r = subprocess.run(f"{link} -t -i", shell=True, input=message.encode(), capture_output=True, timeout=60,
                       env={**os.environ, "PORTCULLIS_SENDMAIL_CONFIG": str(client_config(world, "php"))})
    assert r.returncode == 0, r.stderr
    assert arrived(world, "from php")
    [msg] = [m for m in world["server"].messages("u") if b"Subject: from php\r\n" in m]
    assert b"\r\n.\r\nThe dot above is text" in msg
    assert b"X-PHP-Originating-Script" in msg


def test_usage_errors_exit_64(world):
    r = sendmail(client_config(world, "usage"), message="Subject: nobody\n\nhello\n")
    assert r.returncode == 64 and b"no recipients" in r.stderr
    r = sendmail(client_config(world, "usage"), "-bp", message="")
    assert r.returncode == 64
