"""DMARC aggregate reports, sending side (RFC 7489 §7.2, issue 20). NSD
serves three sender domains: good.test publishes rua and passes SPF,
bad.test publishes rua and fails everything, plain.test publishes no
DMARC record. After one message from each, the report run sends exactly
one report, for good.test, to its confirmed external destination (§7.1)
only; parsedmarc reads it, dkimpy verifies it, and it validates against
RFC 7489 Appendix C's schema. A second run the same day sends nothing."""

import email
import gzip
import json
import re
from pathlib import Path

import dkim
import parsedmarc
import pytest
import xmlschema

from conftest import send, wait_until
from dnsserver import DnsServer

SCHEMA = Path(__file__).parent / "data" / "rfc7489-appendix-c.xsd"

ZONES = {
    "test": "",
    "good.test": ('@ IN TXT "v=spf1 ip4:127.0.0.1 -all"\n'
                  # A destination outside good.test that confirms it
                  # takes good.test's reports, and one that does not.
                  '_dmarc IN TXT "v=DMARC1; p=none; rua=mailto:dmarc@far.test,mailto:dmarc@unconfirmed.test"\n'),
    "bad.test": ('@ IN TXT "v=spf1 -all"\n'
                 '_dmarc IN TXT "v=DMARC1; p=none; rua=mailto:dmarc@far.test"\n'),
    "plain.test": '@ IN TXT "v=spf1 ip4:127.0.0.1 -all"\n',
    "far.test": ('@ IN MX 10 mx.far.test.\nmx IN A 127.0.0.1\n'
                 'good.test._report._dmarc IN TXT "v=DMARC1"\n'
                 'bad.test._report._dmarc IN TXT "v=DMARC1"\n'),
    "unconfirmed.test": '@ IN MX 10 mx.far.test.\n',
}


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    d = DnsServer(tmp_path_factory.mktemp("dmarc-dns"), ZONES).start()
    yield d
    d.stop()


def reporter(make_server, dns, far):
    s = make_server(f'[delivery]\nport = {far.mx}\nretry_base_secs = 300\n', dns=f"127.0.0.1:{dns.port}",
                    start=False)
    record = s.cli("dkim", "keygen", "--domain", "local.test", "--selector", "s1").stdout
    return s.start(), "".join(re.findall(r'"([^"]*)"', record)).encode()


def far_receiver(make_server, dns):
    domains = "".join(f'[[domain]]\nname = "{d}"\nrecipients = "any"\n\n' for d in ["far.test", "unconfirmed.test"])
    return make_server(domains, local_test=False, dns=f"127.0.0.1:{dns.port}")


def mail_from(s, domain: str) -> None:
    send(s.mx, f"news@{domain}", "u@local.test",
         f"From: news@{domain}\r\nTo: u@local.test\r\nSubject: from {domain}\r\n\r\nhello\r\n")


def run_reports(s) -> dict:
    r = s.cli("dmarc-reports", "send")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def attachment_xml(raw: bytes) -> bytes:
    msg = email.message_from_bytes(raw)
    [part] = [p for p in msg.walk() if p.get_content_type() == "application/gzip"]
    assert re.fullmatch(r"mx\.portcullis\.test!good\.test!\d+!\d+\.xml\.gz", part.get_filename())
    return gzip.decompress(part.get_payload(decode=True))


def test_one_report_goes_out_for_the_identified_domain_only(make_server, dns):
    far = far_receiver(make_server, dns)
    s, key = reporter(make_server, dns, far)
    for domain in ["good.test", "bad.test", "plain.test"]:
        mail_from(s, domain)
    s.wait_messages("u", 3)

    ran = run_reports(s)
    assert [x["domain"] for x in ran["sent"]] == ["good.test"], ran
    assert ran["sent"][0]["to"] == ["dmarc@far.test"], "the unconfirmed destination is left out (§7.1)"
    assert [x["domain"] for x in ran["skipped"]] == ["bad.test"], ran
    assert "identified" in ran["skipped"][0]["reason"]

    raw = far.wait_message("dmarc", b"Report Domain: good.test", domain="far.test")
    wait_until(lambda: not s.queued(), 20, "the report delivered")
    reports = [m for m in far.messages("dmarc", domain="far.test") if b"Report Domain:" in m]
    assert len(reports) == 1, "exactly one report"
    assert far.messages("dmarc", domain="unconfirmed.test") == []

    # dkimpy verifies the signature against the key `dkim keygen` printed.
    assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: key), "DKIM"

    xml = attachment_xml(raw)
    xmlschema.XMLSchema(SCHEMA).validate(xml)

    parsed = parsedmarc.parse_report_email(raw, offline=True, always_use_local_files=True)
    assert parsed["report_type"] == "aggregate"
    report = parsed["report"]
    assert report["policy_published"]["domain"] == "good.test"
    [record] = report["records"]
    assert record["source"]["ip_address"] == "127.0.0.1"
    assert record["count"] == 1
    assert record["identifiers"]["header_from"] == "good.test"
    assert record["policy_evaluated"]["spf"] == "pass"
    assert record["auth_results"]["spf"][0]["result"] == "pass"


def test_a_domain_gets_no_second_report_the_same_day(make_server, dns):
    far = far_receiver(make_server, dns)
    s, _ = reporter(make_server, dns, far)
    mail_from(s, "good.test")
    s.wait_messages("u", 1)
    assert [x["domain"] for x in run_reports(s)["sent"]] == ["good.test"]
    mail_from(s, "good.test")
    s.wait_messages("u", 2)
    again = run_reports(s)
    assert again["sent"] == []
    assert again["skipped"] == [{"domain": "good.test", "reason": "already reported today"}]


def test_excluded_domains_get_no_report(make_server, dns):
    far = far_receiver(make_server, dns)
    s = make_server(f'[delivery]\nport = {far.mx}\n[dmarc]\nreport_exclude = ["good.test"]\n',
                    dns=f"127.0.0.1:{dns.port}", start=False)
    s.cli("dkim", "keygen", "--domain", "local.test", "--selector", "s1")
    s.start()
    mail_from(s, "good.test")
    s.wait_messages("u", 1)
    ran = run_reports(s)
    assert ran["sent"] == [] and ran["skipped"][0]["reason"].startswith("excluded"), ran
