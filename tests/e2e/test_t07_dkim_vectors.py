"""Every DKIM vector in ../shared/testdata/dkim (RFC 6376, RFC 8463, dkimpy,
mail-auth, derived) sent through the mx listener: the dkim= results in our
Authentication-Results header must be what testdata/dkim/README.md says.
Keys are served by NSD on loopback."""

import re
import smtplib
import time
from pathlib import Path

import pytest

from conftest import ROOT
from dnsserver import DnsServer
from keys import txt

DATA = ROOT.parent / "shared" / "testdata" / "dkim"
CONFIG = '[limits]\ntext_line_octets = 100000\n\n[[domain]]\nname = "label.test"\nrecipients = "any"\n'


def crlf(b: bytes) -> bytes:
    return b.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def dns_file(path: Path) -> list[tuple[str, str]]:
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            name, value = line.split(" ", 1)
            out.append((name.strip(), value.strip()))
    return out


def mail_auth_case(path: Path) -> tuple[list[tuple[str, str]], bytes]:
    text = path.read_bytes()
    records, message = text.split(b"\n\n", 1)
    return [tuple(l.split(" ", 1)) for l in records.decode().splitlines() if l.strip()], crlf(message)


def zones_for(records) -> dict[str, str]:
    """One zone per registered-looking domain (the last two labels)."""
    zones: dict[str, list[str]] = {}
    for name, value in records:
        labels = name.rstrip(".").split(".")
        zone = ".".join(labels[-2:])
        rel = ".".join(labels[:-2]) or "@"
        zones.setdefault(zone, []).append(f"{rel} IN TXT {txt(value)}")
    return {z: "\n".join(r) for z, r in zones.items()}


def vectors():
    """(id, message bytes, records, expected) with expected pass/notpass."""
    v = []
    rfc8463 = dns_file(DATA / "rfc8463/dns.txt")
    rfc6376 = dns_file(DATA / "rfc6376/dns.txt")
    dkimpy = dns_file(DATA / "dkimpy/dns.txt")
    exim = [("sed._domainkey.test.ex", (DATA / "dkimpy/eximtest.dns").read_text().strip())]
    v.append(("rfc8463-signed", (DATA / "rfc8463/signed.eml").read_bytes(), rfc8463, "pass"))
    v.append(("rfc6376-A2", (DATA / "rfc6376/A2_signed.eml").read_bytes(), rfc6376, "pass"))
    v.append(("dkimpy-exim-ed25519", crlf((DATA / "dkimpy/ed25519test2.msg").read_bytes()), exim, "pass"))
    v.append(("dkimpy-rfc6376-signed", crlf((DATA / "dkimpy/rfc6376.signed.msg").read_bytes()), dkimpy, "pass"))
    v.append(("dkimpy-gmail-2013", crlf((DATA / "dkimpy/test2.message").read_bytes()), dkimpy, "pass"))
    for n in range(1, 7):
        records, msg = mail_auth_case(DATA / f"mail-auth/00{n}.txt")
        # 005 carries x=1667930064: expired at today's time (README §4).
        v.append((f"mail-auth-00{n}", msg, records, "notpass" if n == 5 else "pass"))
    for name, expected in [
        ("rfc8463_body_altered", "notpass"),
        ("rfc8463_subject_altered", "notpass"),
        ("rfc8463_extra_from_appended", "notpass"),
        ("rfc8463_relaxed_whitespace_ok", "pass"),
    ]:
        v.append((name, (DATA / f"derived/{name}.eml").read_bytes(), rfc8463, expected))
    for name in ["rfc6376_A2_body_two_spaces", "rfc6376_A2_header_refolded"]:
        v.append((name, (DATA / f"derived/{name}.eml").read_bytes(), rfc6376, "notpass"))
    return v


VECTORS = vectors()


def key_variants():
    out = []
    for canon in ["simple_simple", "relaxed_relaxed"]:
        msg = (DATA / f"derived/dkimpy_test_message_signed_{canon}.eml").read_bytes()
        for key, expected in [
            ("test.txt", "pass"),
            ("test2.txt", "pass"),
            ("badversion.txt", "notpass"),
            ("badk.txt", "notpass"),
            ("test_bad.txt", "notpass"),
            ("test_tlsrpt.txt", "notpass"),
        ]:
            value = (DATA / "dkimpy" / key).read_text().strip()
            out.append((f"{canon}-{key}", msg, [("test._domainkey.example.com", value)], expected))
    return out


KEY_VARIANTS = key_variants()


def dkim_results(msg: bytes) -> list[str]:
    m = re.search(rb"\r\nAuthentication-Results: mx\.portcullis\.test;(.*?)\r\n(?=\S)", msg, re.S)
    assert m, msg[:600]
    return re.findall(r"\bdkim=(\w+)", m.group(1).decode())


def run_vector(make_server, workdir, ident, msg, records, expected):
    dns = DnsServer(workdir / f"dns-{ident}", zones_for(records))
    (workdir / f"dns-{ident}").mkdir(exist_ok=True)
    dns.start()
    try:
        s = make_server(CONFIG, dns=f"127.0.0.1:{dns.port}")
        local = re.sub(r"[^a-z0-9]", "", ident.lower())[:60]
        with smtplib.SMTP("127.0.0.1", s.mx) as c:
            c.sendmail("sender@elsewhere.test", [f"{local}@label.test"], msg)
        d = s.data / "mail" / "label.test" / local / "new"
        for _ in range(100):
            if d.is_dir() and any(d.iterdir()):
                break
            time.sleep(0.05)
        [got] = [p.read_bytes() for p in d.iterdir()]
        results = dkim_results(got)
        assert results, "no dkim result"
        if expected == "pass":
            assert all(r == "pass" for r in results), results
        else:
            assert "pass" not in results, results
    finally:
        dns.stop()


@pytest.mark.parametrize("ident,msg,records,expected", VECTORS, ids=[v[0] for v in VECTORS])
def test_dkim_vector(make_server, workdir, ident, msg, records, expected):
    run_vector(make_server, workdir, ident, msg, records, expected)


@pytest.mark.parametrize("ident,msg,records,expected", KEY_VARIANTS, ids=[v[0] for v in KEY_VARIANTS])
def test_dkim_key_record_variants(make_server, workdir, ident, msg, records, expected):
    run_vector(make_server, workdir, ident, msg, records, expected)
