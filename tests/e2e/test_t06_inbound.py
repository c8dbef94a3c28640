"""Transfer on port 25 labels every message with SPF, DKIM and DMARC
results and applies each local domain's policy stage, against zones served
by a real DNS server (NSD) on loopback."""

import re
import smtplib

import dkim
import pytest

from conftest import free_port, send
from dnsserver import DnsServer
from keys import ed25519_key, rsa_key, txt

POLICIES = """
[[domain]]
name = "label.test"
recipients = "any"

[[domain]]
name = "strict.test"
recipients = "any"
policy = "reject-both-fail"

[[domain]]
name = "dmarc.test"
recipients = "any"
policy = "dmarc"
"""


@pytest.fixture(scope="module")
def keys():
    return {"rsa": rsa_key(), "ed25519": ed25519_key()}


def zones(keys):
    rsa_pub, ed_pub = keys["rsa"][1], keys["ed25519"][1]
    dkim_records = (
        f"rsa._domainkey IN TXT {txt('v=DKIM1; k=rsa; p=' + rsa_pub)}\n"
        f"ed._domainkey IN TXT {txt('v=DKIM1; k=ed25519; p=' + ed_pub)}\n"
    )
    return {
        # The parent zone, so the DMARC tree walk (RFC 9989) up to _dmarc.test
        # gets NXDOMAIN rather than a refusal.
        "test": "",
        # Sends from 127.0.0.1: SPF passes.
        "good.test": '@ IN TXT "v=spf1 ip4:127.0.0.1 -all"\n_dmarc IN TXT "v=DMARC1; p=reject"\n' + dkim_records,
        # Never sends from here: SPF fails; DMARC says reject.
        "forged.test": '@ IN TXT "v=spf1 -all"\n_dmarc IN TXT "v=DMARC1; p=reject"\n' + dkim_records,
        # SPF fails; DMARC says quarantine.
        "quar.test": '@ IN TXT "v=spf1 -all"\n_dmarc IN TXT "v=DMARC1; p=quarantine"\n',
        # SPF softfail, no DMARC.
        "soft.test": '@ IN TXT "v=spf1 ~all"\n',
    }


@pytest.fixture(scope="module")
def dns_server(keys, tmp_path_factory):
    d = DnsServer(tmp_path_factory.mktemp("inbound-dns"), zones(keys)).start()
    yield d
    d.stop()


@pytest.fixture
def mx(make_server, dns_server):
    return make_server(POLICIES, dns=f"127.0.0.1:{dns_server.port}")


def message(sender, to, subject="test", extra=""):
    return (
        f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@x>\r\n{extra}\r\n"
        "Hello,\r\nthis is a test.\r\n"
    ).encode()


def sign(msg, keys, alg="rsa", domain="forged.test", canon=(b"relaxed", b"relaxed"), length=False):
    key = keys[alg][0]
    sig = dkim.sign(
        msg,
        alg.encode(),
        domain.encode(),
        key,
        canonicalize=canon,
        include_headers=[b"from", b"to", b"subject", b"message-id"],
        length=length,
        signature_algorithm=b"ed25519-sha256" if alg == "ed25519" else b"rsa-sha256",
    )
    return sig + msg


def auth_results(msg: bytes) -> str:
    m = re.search(rb"\r\nAuthentication-Results: mx\.portcullis\.test;(.*?)\r\n(?=\S)", msg, re.S)
    assert m, msg[:800]
    return m.group(1).decode()


def test_label_stage_accepts_and_labels_a_forgery(mx):
    send(mx.mx, "ceo@forged.test", "u@label.test", message("ceo@forged.test", "u@label.test"))
    [msg] = mx.wait_messages("u", 1, domain="label.test")
    ar = auth_results(msg)
    assert "spf=fail" in ar and "smtp.mailfrom=ceo@forged.test" in ar
    assert "dkim=none" in ar
    assert "dmarc=fail" in ar


def test_helo_identity_is_checked_and_labelled_beside_mail_from(mx):
    # RFC 7208 §2.3: the HELO name's own SPF result, next to MAIL FROM's.
    send(mx.mx, "ceo@forged.test", "h@label.test", message("ceo@forged.test", "h@label.test"), helo="good.test")
    send(mx.mx, "ceo@forged.test", "l@label.test", message("ceo@forged.test", "l@label.test"), helo="[127.0.0.1]")
    [named] = mx.wait_messages("h", 1, domain="label.test")
    [literal] = mx.wait_messages("l", 1, domain="label.test")
    ar = auth_results(named)
    assert "spf=fail" in ar and "smtp.mailfrom=ceo@forged.test" in ar
    assert re.search(r"spf=pass \([^)]*\) smtp\.helo=good\.test", ar), ar
    # An address literal is no identity to check.
    assert "smtp.helo" not in auth_results(literal)


def test_spf_pass_and_dkim_pass_are_labelled(mx, keys):
    msg = sign(message("a@good.test", "u@label.test"), keys, domain="good.test")
    send(mx.mx, "a@good.test", "u@label.test", msg)
    [got] = mx.wait_messages("u", 1, domain="label.test")
    ar = auth_results(got)
    assert "spf=pass" in ar and "dkim=pass" in ar and "dmarc=pass" in ar


def test_forged_results_claiming_our_id_are_removed(mx):
    extra = (
        "Authentication-Results: mx.portcullis.test; spf=pass smtp.mailfrom=ceo@forged.test\r\n"
        "Authentication-Results: elsewhere.test; spf=pass\r\n"
    )
    send(mx.mx, "ceo@forged.test", "v@label.test", message("ceo@forged.test", "v@label.test", extra=extra))
    [msg] = mx.wait_messages("v", 1, domain="label.test")
    assert msg.count(b"Authentication-Results: mx.portcullis.test;") == 1
    assert b"spf=pass smtp.mailfrom=ceo@forged.test" not in msg
    assert b"Authentication-Results: elsewhere.test; spf=pass" in msg


def test_reject_both_fail_refuses_when_neither_passes(mx):
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(mx.mx, "ceo@forged.test", "u@strict.test", message("ceo@forged.test", "u@strict.test"))
    assert e.value.smtp_code == 550
    assert b"5.7.1" in e.value.smtp_error and b"spf=fail" in e.value.smtp_error


def test_reject_both_fail_accepts_a_dkim_pass_despite_spf_fail(mx, keys):
    msg = sign(message("ceo@forged.test", "w@strict.test"), keys, domain="forged.test")
    send(mx.mx, "ceo@forged.test", "w@strict.test", msg)
    assert mx.wait_messages("w", 1, domain="strict.test")


def test_reject_both_fail_accepts_an_spf_pass(mx):
    send(mx.mx, "a@good.test", "x@strict.test", message("a@good.test", "x@strict.test"))
    assert mx.wait_messages("x", 1, domain="strict.test")


def test_dmarc_reject_is_applied(mx):
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(mx.mx, "ceo@forged.test", "u@dmarc.test", message("ceo@forged.test", "u@dmarc.test"))
    assert e.value.smtp_code == 550 and b"DMARC" in e.value.smtp_error


def test_dmarc_quarantine_goes_to_junk(mx):
    send(mx.mx, "news@quar.test", "u@dmarc.test", message("news@quar.test", "u@dmarc.test"))
    [msg] = mx.wait_messages("u", 1, domain="dmarc.test", folder="Junk")
    assert b"dmarc=fail" in msg
    assert mx.messages("u", "dmarc.test") == []


def test_dmarc_pass_lands_in_the_inbox(mx, keys):
    msg = sign(message("a@good.test", "y@dmarc.test"), keys, domain="good.test", alg="ed25519")
    send(mx.mx, "a@good.test", "y@dmarc.test", msg)
    [got] = mx.wait_messages("y", 1, domain="dmarc.test")
    assert "dmarc=pass" in auth_results(got)


CASES = [
    (alg, canon, length, modified)
    for alg in ("rsa", "ed25519")
    for canon in ((b"simple", b"simple"), (b"relaxed", b"relaxed"))
    for length in (False, True)
    for modified in (False, True)
]


@pytest.mark.parametrize("alg,canon,length,modified", CASES)
def test_dkim_agrees_with_dkimpy(mx, keys, dns_server, alg, canon, length, modified):
    local = f"k{CASES.index((alg, canon, length, modified))}"
    msg = sign(message("a@good.test", f"{local}@label.test", subject=local), keys, alg, "good.test", canon, length)
    if modified:
        # With l=, appended text is outside the signed length; a change
        # inside the body breaks it either way.
        msg = msg.replace(b"this is a test.", b"this is a TEST!") if not length else msg + b"appended\r\n"
    try:
        expected = dkim.verify(msg, dnsfunc=lambda n, timeout=5: dns_server.txt(n))
    except dkim.ValidationError:
        expected = False
    send(mx.mx, "a@good.test", f"{local}@label.test", msg)
    [got] = mx.wait_messages(local, 1, domain="label.test")
    ours = "dkim=pass" in auth_results(got)
    assert ours == expected, auth_results(got)


class FailingDns:
    """A DNS server that answers SERVFAIL to everything, or (timeout)
    never answers at all (dnslib)."""

    def __init__(self, mode: str):
        from dnslib import RCODE
        from dnslib.server import BaseResolver, DNSError, DNSServer

        class Resolver(BaseResolver):
            def resolve(self, request, handler):
                if mode == "timeout":
                    raise DNSError("no answer")
                reply = request.reply()
                reply.header.rcode = RCODE.SERVFAIL
                return reply

        self.port = free_port()
        self.server = DNSServer(Resolver(), port=self.port, address="127.0.0.1")
        self.server.start_thread()

    def stop(self):
        self.server.stop()


@pytest.mark.parametrize("mode", ["servfail", "timeout"])
def test_dns_failure_gives_451_where_the_decision_depends_on_it(make_server, mode):
    dns = FailingDns(mode)
    try:
        # The resolver gives up after 300 ms rather than 2 s: a server that
        # fails is the behaviour under test, not how long we wait for it.
        s = make_server(POLICIES, dns=f"127.0.0.1:{dns.port}", dns_timeout_ms=300)
        with pytest.raises(smtplib.SMTPDataError) as e:
            send(s.mx, "a@good.test", "u@strict.test", message("a@good.test", "u@strict.test"))
        assert e.value.smtp_code == 451 and b"4.4.3" in e.value.smtp_error
        # Label only: accepted, and the header says temperror.
        send(s.mx, "a@good.test", "u@label.test", message("a@good.test", "u@label.test"))
        [msg] = s.wait_messages("u", 1, domain="label.test")
        assert "spf=temperror" in auth_results(msg)
    finally:
        dns.stop()
