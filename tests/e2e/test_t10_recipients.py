"""Recipient policy of local domains (the slides' "Error mails on ISPes"):
reject-unknown with a tarpit, or accept-all with bounces only for senders
SPF does not call forged."""

import smtplib
import socket
import time

import pytest

from dnsserver import DnsServer
from smtpraw import Raw

CONFIG = """
[limits]
tarpit_step_ms = 300
tarpit_max_ms = 900

[[domain]]
name = "strict.test"

[[domain]]
name = "open.test"
recipients = "accept-all"
"""

ZONES = {
    "test": "",
    "good.test": '@ IN TXT "v=spf1 ip4:127.0.0.1 -all"\n',
    "forged.test": '@ IN TXT "v=spf1 -all"\n',
    "soft.test": '@ IN TXT "v=spf1 ~all"\n',
}


@pytest.fixture(scope="module")
def dns_server(tmp_path_factory):
    d = DnsServer(tmp_path_factory.mktemp("rcpt-dns"), ZONES).start()
    yield d
    d.stop()


@pytest.fixture
def mx(make_server, dns_server):
    import subprocess

    s = make_server(CONFIG, dns=f"127.0.0.1:{dns_server.port}", start=False)
    subprocess.run(s.cli_args("user", "add", "alice@strict.test", "--password-stdin"), input="pw\n", text=True, check=True)
    subprocess.run(s.cli_args("user", "add", "bob@open.test", "--password-stdin"), input="pw\n", text=True, check=True)
    return s.start()


def test_unknown_user_gets_550_511_and_known_ones_are_accepted(mx):
    c = Raw(mx.mx)
    c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<a@good.test>")
    assert c.cmd("RCPT TO:<alice@strict.test>")[0] == 250
    assert c.cmd("RCPT TO:<postmaster@strict.test>")[0] == 250
    code, text = c.cmd("RCPT TO:<nobody@strict.test>")
    assert code == 550 and "5.1.1" in text and "user unknown" in text


def test_user_unknown_slows_the_session_down(mx):
    c = Raw(mx.mx)
    c.cmd("EHLO harvester.test")
    c.cmd("MAIL FROM:<a@good.test>")
    t0 = time.monotonic()
    c.cmd("NOOP")
    fast = time.monotonic() - t0
    c.cmd("RCPT TO:<guess1@strict.test>")
    c.cmd("RCPT TO:<guess2@strict.test>")
    t0 = time.monotonic()
    c.cmd("NOOP")
    slow = time.monotonic() - t0
    assert fast < 0.2 and slow >= 0.55, (fast, slow)


def greeting_delay(port: int, source: str) -> float:
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as c:
        assert c.recv(512).startswith(b"220")
    return time.monotonic() - t0


def test_user_unknown_slows_the_next_connection_from_that_client(mx):
    # The slides: "if a client causes user unknown, taking a longer time
    # to accept the next connection from the client".
    c = Raw(mx.mx)
    c.cmd("EHLO harvester.test")
    c.cmd("MAIL FROM:<a@good.test>")
    c.cmd("RCPT TO:<guess1@strict.test>")
    c.cmd("RCPT TO:<guess2@strict.test>")
    c.close()
    assert greeting_delay(mx.mx, "127.0.0.1") >= 0.55
    assert greeting_delay(mx.mx, "127.0.0.2") < 0.5, "other clients are not slowed"


def send(mx, sender, rcpts):
    with smtplib.SMTP("127.0.0.1", mx.mx) as s:
        refused = s.sendmail(sender, rcpts, f"From: {sender}\r\nSubject: x\r\n\r\nhello\r\n")
    return refused


def queued(mx):
    out = mx.cli("queue", "list").stdout
    return [l for l in out.splitlines() if "message(s) queued" not in l]


def test_accept_all_accepts_unknown_users_at_rcpt_and_bounces_when_spf_passes(mx):
    assert send(mx, "a@good.test", ["nobody@open.test", "bob@open.test"]) == {}
    # bob's copy is delivered; the bounce to a@good.test waits in the queue
    # for outbound delivery.
    new = mx.data / "mail" / "open.test" / "bob" / "new"
    for _ in range(100):
        if new.is_dir() and any(new.iterdir()):
            break
        time.sleep(0.05)
    assert any(new.iterdir())
    assert not (mx.data / "mail" / "open.test" / "nobody").exists()
    mx.stop()
    lines = queued(mx)
    assert len(lines) == 1 and "<>" in lines[0] and "a@good.test" in lines[0], lines
    qid = lines[0].split()[0]
    shown = mx.cli("queue", "show", qid).stdout
    assert "multipart/report; report-type=delivery-status" in shown
    assert "Final-Recipient: rfc822; nobody@open.test" in shown
    assert "Status: 5.1.1" in shown


def test_dsn_parameters_cannot_inject_header_fields(mx):
    # ENVID and ORCPT carry xtext; a CRLF encoded in them must stay
    # encoded in the report, never become a field of its own.
    with smtplib.SMTP("127.0.0.1", mx.mx) as c:
        c.ehlo("client.test")
        code, _ = c.mail("a@good.test", ["ENVID=abc+0D+0ABcc:+20evil@x.test"])
        assert code == 250
        code, _ = c.rcpt("nobody@open.test", ["NOTIFY=FAILURE", "ORCPT=rfc822;x+0D+0AX-Injected:+20yes@open.test"])
        assert code == 250
        assert c.data("Subject: probe\r\n\r\nhi\r\n")[0] == 250
    mx.stop()
    [line] = queued(mx)
    shown = mx.cli("queue", "show", line.split()[0]).stdout
    assert "Original-Envelope-Id: abc+0D+0ABcc:+20evil@x.test" in shown
    fields = [l.split(":")[0].lower() for l in shown.splitlines() if ":" in l]
    assert "bcc" not in fields and "x-injected" not in fields, shown


@pytest.mark.parametrize("sender", ["ceo@forged.test", "news@soft.test"])
def test_accept_all_suppresses_the_bounce_for_spf_fail_and_softfail(mx, sender):
    assert send(mx, sender, ["nobody@open.test"]) == {}
    time.sleep(0.3)
    mx.stop()
    assert queued(mx) == []
    assert "bounce_suppressed" in mx.log.read_text()
