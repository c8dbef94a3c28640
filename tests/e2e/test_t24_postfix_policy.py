"""Protecting a Postfix site (issue 21): a real Postfix (its own instance
directory, `bench/postfix_instance.sh`) asks portcullis' policy listener
at CONNECT, RCPT and END-OF-MESSAGE. The test client speaks to Postfix
and uses XCLIENT (`smtpd_authorized_xclient_hosts`) to be any client
address, or an authenticated user, without a SASL setup."""

import os
import smtplib
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT, answer, free_port, wait_port, wait_until
from dnsserver import DnsServer

ZONES = {"test": "", "good.test": '@ IN TXT "v=spf1 ip4:192.0.2.50 -all"\n'}


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    d = DnsServer(tmp_path_factory.mktemp("policy-dns"), ZONES).start()
    yield d
    d.stop()


class Site:
    """portcullis as the policy service of a Postfix on loopback."""

    def __init__(self, make_server, dns, extra: str = ""):
        self.policy_port = free_port()
        self.portcullis = make_server(
            f"""
[class.default]
max_connections = 0
connections_per_minute = 0
messages_per_minute = 2
[class.new]
messages_per_minute = 60000
connections_per_minute = 60000
[admission]
per_range_max_connections = 0
per_range_connections_per_minute = 0
remediation_url = "https://mx.portcullis.test/cos"
[submission]
recipients_per_hour = 2
[[listener]]
role = "policy"
bind = ["127.0.0.1:{self.policy_port}"]
allow_from = ["127.0.0.1/32"]
{extra}
""",
            dns=f"127.0.0.1:{dns.port}",
        )
        wait_port(self.policy_port)
        # Postfix's daemons run as `postfix`: a directory it can enter.
        self.dir = Path(tempfile.mkdtemp(prefix="pc-postfix-", dir="/var/tmp"))
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        policy = f"check_policy_service inet:127.0.0.1:{self.policy_port}"
        env = dict(
            os.environ,
            PF_EXTRA=f"""mynetworks = 127.0.0.1/32
smtpd_authorized_xclient_hosts = 127.0.0.1
smtpd_delay_reject = no
smtpd_client_restrictions = {policy}
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions = {policy}
smtpd_end_of_data_restrictions = {policy}
virtual_mailbox_domains = local.test bench.test
""",
        )
        subprocess.run(["bash", str(ROOT / "bench/postfix_instance.sh"), "start", str(self.dir), str(self.port)],
                       check=True, env=env, capture_output=True)
        wait_port(self.port)

    def stop(self):
        subprocess.run(["bash", str(ROOT / "bench/postfix_instance.sh"), "stop", str(self.dir)], capture_output=True)
        subprocess.run(["rm", "-rf", str(self.dir)])

    def session(self, addr: str, login: str | None = None) -> smtplib.SMTP:
        """A Postfix session that Postfix believes comes from `addr`."""
        s = smtplib.SMTP("127.0.0.1", self.port, timeout=20)
        s.ehlo("client.test")
        args = f"ADDR={addr} NAME=[UNAVAILABLE]" + (f" LOGIN={login}" if login else "")
        code, text = s.docmd("XCLIENT", args)
        if code != 220:
            raise smtplib.SMTPConnectError(code, text)
        s.ehlo("client.test")
        return s

    def send(self, addr: str, sender: str, rcpts=("u@local.test",), login=None) -> tuple[int, str]:
        """(250, "") or the first refusal."""
        def exchange():
            s = self.session(addr, login)
            s.sendmail(sender, list(rcpts), f"From: <{sender}>\r\nSubject: t\r\n\r\nhello\r\n")
            s.quit()
        return answer(exchange)

    def delivered(self) -> int:
        return sum(len(files) for _, _, files in os.walk(self.dir / "mail"))


@pytest.fixture
def site(make_server, dns):
    s = Site(make_server, dns)
    yield s
    s.stop()


def test_strangers_share_the_default_pool_through_postfix(site):
    assert site.send("203.0.113.1", "a@stranger.test")[0] == 250
    assert site.send("203.0.113.2", "b@other.test")[0] == 250
    code, text = site.send("203.0.113.3", "c@third.test")
    assert code == 450 and "4.7.1" in text and "class default" in text, (code, text, site.portcullis.log_tail(3000))
    assert "https://mx.portcullis.test/cos" in text, "our own remediation URL"
    wait_until(lambda: site.delivered() == 2, 20, "Postfix delivered the two accepted messages")
    assert site.portcullis.metric("portcullis_policy_requests_total", answer="defer") >= 1


def test_an_spf_authenticated_sender_gets_its_own_class(site):
    for _ in range(5):
        assert site.send("192.0.2.50", "news@good.test") == (250, "")


def test_a_blocked_range_is_refused_at_connect(site):
    out = site.portcullis.cli("blocklist", "add", "127.0.0.9", "--reason", "flooding")
    assert out.returncode == 0, out.stderr
    # A client that really comes from the blocked address (no XCLIENT):
    # Postfix asks at CONNECT (smtpd_delay_reject = no) and refuses.
    with pytest.raises(smtplib.SMTPException) as refused:
        c = smtplib.SMTP("127.0.0.1", site.port, source_address=("127.0.0.9", 0), timeout=20)
        c.ehlo("client.test")
        c.sendmail("x@stranger.test", ["u@local.test"], "Subject: t\r\n\r\nhi\r\n")
    assert "127.0.0.9/32 is blocked" in str(refused.value) and "flooding" in str(refused.value), refused.value
    assert site.portcullis.metric("portcullis_policy_requests_total", state="CONNECT", answer="reject") == 1


def test_an_authenticated_submitters_recipient_quota_holds(site):
    # Postfix authenticated bob (XCLIENT LOGIN); portcullis counts his
    # recipients against his quota, one per RCPT.
    s = site.session("192.0.2.61", login="bob@local.test")
    s.mail("bob@local.test")
    codes = [s.rcpt(f"{n}@bench.test") for n in ("a", "b", "c")]
    s.quit()
    assert [c for c, _ in codes] == [250, 250, 450], codes
    assert b"Recipient quota of 2 per hour exceeded for bob@local.test" in codes[2][1]


def test_a_thousand_garbage_connections_do_not_starve_postfix(site):
    socks = []
    for i in range(1000):
        c = socket.create_connection(("127.0.0.1", site.policy_port), timeout=5)
        # Half send garbage (answered DUNNO), half an unfinished request (held).
        c.sendall(b"GET / HTTP/1.0\n\n" if i % 2 else b"request=smtpd_access_policy\nprotocol_state=RC")
        socks.append(c)
    try:
        # Postfix waits at most its smtpd_policy_service_timeout, then
        # answers 451: a 250 says the real request was answered in time.
        assert site.send("192.0.2.50", "news@good.test") == (250, "")
    finally:
        for c in socks:
            c.close()
    assert site.portcullis.metric("portcullis_policy_requests_total", answer="malformed") >= 500
