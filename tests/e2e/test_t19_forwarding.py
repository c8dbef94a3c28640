"""Aliases and forwarding that survive SPF and DMARC (issue 10): a
DKIM-signed message from a domain with `-all` SPF and `p=reject` DMARC
reaches a local alias on one portcullis ("fwd", the forwarder) and is
forwarded to an external domain served by a second portcullis ("far")
behind MX records on the test DNS server. The next hop sees SPF pass for
our SRS domain, a valid ARC chain (dkimpy's arc_verify) and the original
DKIM signature intact. Bounces to SRS addresses find the original sender;
forged and expired SRS addresses are refused; an alias loop bounces
once."""

import base64
import hashlib
import hmac
import smtplib
import time

import dkim
import pytest

from conftest import send, wait_until
from dnsserver import DnsServer
from keys import rsa_key, txt
from smtpraw import Raw

ORIGIN_IP = "127.0.0.9"


@pytest.fixture(scope="module")
def keys():
    """origin.test's and lists.test's DKIM keys: test data, made once."""
    return {"origin": rsa_key(), "list": rsa_key()}


@pytest.fixture
def pair(make_server, workdir, keys):
    far = make_server('[[domain]]\nname = "far.test"\nrecipients = "any"\n\n[[domain]]\nname = "origin.test"\nrecipients = "any"\n', start=False)
    # No tarpit on refused recipients (test_t10 has its own): the SRS
    # refusals here would each hold the next reply a second longer.
    fwd = make_server(
        f'[[domain]]\nname = "fwd.test"\n\n[forwarding]\nsrs_domain = "fwd.test"\n\n[delivery]\nport = {far.mx}\nretry_base_secs = 1\n'
        "\n[limits]\ntarpit_step_ms = 0\n",
        start=False,
    )
    far.config.write_text(far.config.read_text().replace("mx.portcullis.test", "mx.far.test"))
    arc_key = fwd.cli("dkim", "keygen", "--domain", "fwd.test", "--selector", "arc", "--algorithm", "rsa")
    assert arc_key.returncode == 0, arc_key.stderr
    for args in (["list@fwd.test", "bob@far.test"], ["loop1@fwd.test", "loop2@fwd.test"], ["loop2@fwd.test", "loop1@fwd.test"]):
        r = fwd.cli("alias", "add", *args)
        assert r.returncode == 0, r.stderr
    pem, public = keys["origin"]
    list_pem, list_public = keys["list"]
    zones = {
        "test": "",
        "origin.test": (
            f'@ IN TXT "v=spf1 ip4:{ORIGIN_IP} -all"\n'
            '_dmarc IN TXT "v=DMARC1; p=reject"\n'
            f"sel._domainkey IN TXT {txt('v=DKIM1; k=rsa; p=' + public)}\n"
            "@ IN MX 10 mx.far.test.\n"
        ),
        "fwd.test": '@ IN TXT "v=spf1 ip4:127.0.0.1 -all"\n@ IN MX 10 mx.fwd.test.\nmx IN A 127.0.0.1\n' + arc_key.stdout.strip() + "\n",
        "far.test": "@ IN MX 10 mx.far.test.\nmx IN A 127.0.0.1\n",
        "lists.test": f"lsel._domainkey IN TXT {txt('v=DKIM1; k=rsa; p=' + list_public)}\n",
    }
    dns = DnsServer(workdir / "fwd-dns", zones).start()
    for s in (far, fwd):
        s.use_dns(dns.port)
        s.start()
    fwd.list_pem = list_pem
    yield fwd, far, dns, pem
    dns.stop()


def signed(pem: bytes, subject: str) -> bytes:
    msg = (
        "From: Alice <alice@origin.test>\r\nTo: list@fwd.test\r\n"
        f"Subject: {subject}\r\nMessage-ID: <{subject.replace(' ', '-')}@origin.test>\r\n"
        "Date: Sun, 29 Nov 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n"
        "Hello list,\r\nthis goes round.\r\n"
    ).encode()
    sig = dkim.sign(msg, b"sel", b"origin.test", pem, include_headers=[b"From", b"To", b"Subject", b"Date", b"Message-ID"])
    return sig + msg


def test_forwarded_mail_passes_spf_arc_and_keeps_dkim(pair):
    fwd, far, dns, pem = pair
    send(fwd.mx, "alice@origin.test", "list@fwd.test", signed(pem, "forwarded"), source=ORIGIN_IP)
    msg = far.wait_message("bob", b"Subject: forwarded", "far.test")
    head = msg.split(b"\r\n\r\n")[0].decode()
    assert "Return-Path: <SRS0=" in head and "=origin.test=alice@fwd.test>" in head, head
    assert "Delivered-To: list@fwd.test" in head
    far_results = [l for l in head.split("\r\nAuthentication-Results: ")[1:] if l.startswith("mx.far.test")]
    assert far_results and "spf=pass" in far_results[0] and "smtp.mailfrom=\"SRS0=" in far_results[0], head
    dnsfunc = lambda name, timeout=5: dns.txt(name)
    assert dkim.verify(msg, dnsfunc=dnsfunc), "the original DKIM signature is intact"
    cv, results, comment = dkim.arc_verify(msg, dnsfunc=dnsfunc)
    assert cv == dkim.CV_Pass, (cv, comment, results)
    assert "d=fwd.test" in head and "ARC-Seal: i=1" in head


def test_a_bounce_to_the_srs_address_reaches_the_original_sender(pair):
    fwd, far, dns, pem = pair
    send(fwd.mx, "alice@origin.test", "list@fwd.test", signed(pem, "to be bounced"), source=ORIGIN_IP)
    msg = far.wait_message("bob", b"Subject: to be bounced", "far.test")
    srs = msg.split(b"Return-Path: <")[1].split(b">")[0].decode()
    dsn = b"From: MAILER-DAEMON@far.test\r\nSubject: Undelivered Mail Returned to Sender\r\n\r\nbob is gone\r\n"
    send(fwd.mx, "", srs, dsn, source="127.0.0.1")
    far.wait_message("alice", b"bob is gone", "origin.test")


def srs_address(secret: bytes, days_ago: int, local: str = "alice", domain: str = "origin.test") -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    day = (int(time.time()) // 86400 - days_ago) % 1024
    tt = alphabet[day >> 5] + alphabet[day & 31]
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    for part in (tt, domain, local):
        mac.update(part.lower().encode() + b"\0")
    h = base64.b32encode(mac.digest()).decode()[:6]
    return f"SRS0={h}={tt}={domain}={local}@fwd.test"


def test_forged_and_expired_srs_addresses_are_refused(pair):
    fwd, *_ = pair
    secret = bytes.fromhex((fwd.data / "srs.secrets").read_text().split()[0])
    c = Raw(fwd.mx)
    c.cmd("EHLO far.test")
    c.cmd("MAIL FROM:<>")
    assert c.cmd(f"RCPT TO:<{srs_address(secret, 1)}>")[0] == 250, "a fresh one is valid (the scheme matches)"
    code, text = c.cmd(f"RCPT TO:<{srs_address(secret, 30)}>")
    assert code == 550 and "5.1.1" in text and "expired" in text
    code, text = c.cmd(f"RCPT TO:<{srs_address(b'not our secret', 1)}>")
    assert code == 550 and "5.1.1" in text and "forged" in text


def test_addresses_stay_valid_after_the_secret_is_rotated(pair):
    fwd, *_ = pair
    old = bytes.fromhex((fwd.data / "srs.secrets").read_text().split()[0])
    assert fwd.cli("srs", "rotate").returncode == 0
    new = bytes.fromhex((fwd.data / "srs.secrets").read_text().split()[0])
    assert new != old
    c = Raw(fwd.mx)
    c.cmd("EHLO far.test")
    c.cmd("MAIL FROM:<>")
    assert c.cmd(f"RCPT TO:<{srs_address(old, 2)}>")[0] == 250
    assert c.cmd(f"RCPT TO:<{srs_address(new, 0)}>")[0] == 250


def test_an_alias_loop_bounces_once(pair):
    fwd, far, dns, pem = pair
    send(fwd.mx, "alice@origin.test", "loop1@fwd.test", signed(pem, "round and round"), source=ORIGIN_IP)
    dsn = far.wait_message("alice", b"5.4.6", "origin.test")
    assert b"loop1@fwd.test" in dsn
    # Both queues empty: no other report is on its way.
    for s in (fwd, far):
        wait_until(lambda: s.queue_size() == 0, 10, "an empty queue")
    loops = [m for m in far.messages("alice", "origin.test") if b"5.4.6" in m]
    assert len(loops) == 1
    assert len(fwd.events("alias_loop")) == 1


def test_too_many_hops_is_refused(pair):
    fwd, *_ = pair
    hops = "".join(f"Received: from hop{i}.test by hop{i + 1}.test; Sun, 29 Nov 2026 12:00:00 +0000\r\n" for i in range(31))
    data = (hops + "From: a@origin.test\r\nSubject: looping\r\n\r\nround\r\n").encode()
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(fwd.mx, "alice@origin.test", "list@fwd.test", data, source=ORIGIN_IP)
    assert e.value.smtp_code == 554 and b"5.4.6" in e.value.smtp_error


def test_alias_cli_lists_and_removes(pair):
    fwd, *_ = pair
    listed = fwd.cli("alias", "list").stdout
    assert "list@fwd.test  ->  bob@far.test" in listed
    assert fwd.cli("alias", "del", "list@fwd.test").returncode == 0
    assert "list@fwd.test" not in fwd.cli("alias", "list").stdout
    assert fwd.cli("alias", "add", "bad", "x@y.test").returncode != 0


def list_message(pem: bytes, list_pem: bytes) -> bytes:
    """What a mailing list at lists.test sends on: alice's signed message
    with a [list] tag in the subject (her DKIM signature no longer
    verifies), the list's own results and an ARC set sealed by it."""
    original = signed(pem, "from the list")
    modified = original.replace(b"Subject: from the list", b"Subject: [list] from the list")
    results = (
        b"Authentication-Results: lists.test; dkim=pass header.d=origin.test header.s=sel; "
        b"spf=pass smtp.mailfrom=alice@origin.test\r\n"
    )
    with_results = results + modified
    arc = dkim.arc_sign(with_results, b"lsel", b"lists.test", list_pem, b"lists.test")
    return b"".join(arc) + with_results


def dmarc_server(make_server, dns, trusted: list[str]):
    sealers = ", ".join(f'"{t}"' for t in trusted)
    s = make_server(
        f'[[domain]]\nname = "far.test"\npolicy = "dmarc"\nrecipients = "any"\n\n[forwarding]\narc_trusted_sealers = [{sealers}]\n',
        start=False,
    )
    s.use_dns(dns.port)
    return s.start()


def test_a_trusted_sealer_outweighs_a_dmarc_reject(pair, make_server):
    fwd, far, dns, pem = pair
    msg = list_message(pem, fwd.list_pem)
    strict = dmarc_server(make_server, dns, [])
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(strict.mx, "list-bounces@lists.test", "bob@far.test", msg, source="127.0.0.50")
    assert e.value.smtp_code == 550 and b"DMARC" in e.value.smtp_error
    trusting = dmarc_server(make_server, dns, ["lists.test"])
    send(trusting.mx, "list-bounces@lists.test", "bob@far.test", msg, source="127.0.0.50")
    got = trusting.wait_message("bob", b"[list] from the list", "far.test")
    head = got.split(b"\r\n\r\n")[0]
    assert b"arc=pass" in head and b"dmarc=fail" in head
