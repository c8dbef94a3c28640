"""Recipient policy of local domains (the slides' "Error mails on ISPes"):
reject-unknown with a tarpit, or accept-all with bounces only for senders
SPF does not call forged."""

import select
import smtplib
import socket
import subprocess
import time

import pytest

from conftest import send
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


def first_readable(socks: list[socket.socket], timeout: float = 10) -> socket.socket:
    """The one socket of `socks` with something to read first; two ready
    at once is no order, and fails the test."""
    ready, _, _ = select.select(socks, [], [], timeout)
    assert len(ready) == 1, f"{len(ready)} answered together"
    return ready[0]


def race(slow: Raw, quick: Raw) -> tuple[bool, float]:
    """NOOP to `slow`, then to `quick`: whether `quick` answered first
    although asked second, and how long `slow` took to answer."""
    t0 = time.monotonic()
    slow.send(b"NOOP\r\n")
    quick.send(b"NOOP\r\n")
    quick_first = first_readable([slow.sock, quick.sock]) is quick.sock
    assert quick.reply()[0] == 250
    assert slow.reply()[0] == 250
    return quick_first, time.monotonic() - t0


def session(mx) -> Raw:
    c = Raw(mx.mx)
    c.cmd("EHLO harvester.test")
    c.cmd("MAIL FROM:<a@good.test>")
    return c


def test_user_unknown_slows_the_session_down(mx):
    # No stopwatch bound on a quick answer: orders instead. The tarpit
    # holds each reply step x unknown users (300 ms each here); a session
    # that has not hit one answers before a slowed one asked first, and
    # the slowed one takes at least its delay (a lower bound cannot flake).
    tarpitted, harvester, clean = session(mx), session(mx), session(mx)
    tarpitted.cmd("RCPT TO:<guess0@strict.test>")
    tarpitted.cmd("RCPT TO:<guess00@strict.test>")
    quick_first, _ = race(tarpitted, harvester)
    assert quick_first, "before its unknown users the harvester is not slowed"
    harvester.cmd("RCPT TO:<guess1@strict.test>")
    harvester.cmd("RCPT TO:<guess2@strict.test>")
    quick_first, slow = race(harvester, clean)
    assert quick_first and slow >= 0.55, (quick_first, slow)


def test_user_unknown_slows_the_next_connection_from_that_client(mx):
    # The slides: "if a client causes user unknown, taking a longer time
    # to accept the next connection from the client".
    c = session(mx)
    c.cmd("RCPT TO:<guess1@strict.test>")
    c.cmd("RCPT TO:<guess2@strict.test>")
    c.close()
    # That client connects first, another client second: the other is
    # greeted first, and that client waits at least 2 x 300 ms.
    t0 = time.monotonic()
    harvester = socket.create_connection(("127.0.0.1", mx.mx), timeout=10, source_address=("127.0.0.1", 0))
    other = socket.create_connection(("127.0.0.1", mx.mx), timeout=10, source_address=("127.0.0.2", 0))
    with harvester, other:
        assert first_readable([harvester, other]) is other, "other clients are not slowed"
        assert other.recv(512).startswith(b"220")
        assert harvester.recv(512).startswith(b"220")
        assert time.monotonic() - t0 >= 0.55


def body(sender):
    return f"From: {sender}\r\nSubject: x\r\n\r\nhello\r\n"


def test_accept_all_accepts_unknown_users_at_rcpt_and_bounces_when_spf_passes(mx):
    assert send(mx.mx, "a@good.test", ["nobody@open.test", "bob@open.test"], body("a@good.test")) == {}
    # bob's copy is delivered; the bounce to a@good.test waits in the queue
    # for outbound delivery.
    assert mx.wait_messages("bob", 1, domain="open.test")
    assert not (mx.data / "mail" / "open.test" / "nobody").exists()
    mx.stop()
    lines = mx.queued()
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
    [line] = mx.queued()
    shown = mx.cli("queue", "show", line.split()[0]).stdout
    assert "Original-Envelope-Id: abc+0D+0ABcc:+20evil@x.test" in shown
    fields = [l.split(":")[0].lower() for l in shown.splitlines() if ":" in l]
    assert "bcc" not in fields and "x-injected" not in fields, shown


@pytest.mark.parametrize("sender", ["ceo@forged.test", "news@soft.test"])
def test_accept_all_suppresses_the_bounce_for_spf_fail_and_softfail(mx, sender):
    assert send(mx.mx, sender, ["nobody@open.test"], body(sender)) == {}
    # The decision is logged where the bounce would have been queued.
    [suppressed] = mx.wait_event("bounce_suppressed", sender=sender)
    assert suppressed["spf"] in ("fail", "softfail")
    mx.stop()
    assert mx.queued() == []
