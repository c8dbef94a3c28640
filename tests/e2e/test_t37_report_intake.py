"""Issue 20, item 3: DMARC aggregate (RFC 7489 §7.2, Appendix C) and
TLS-RPT (RFC 8460) reports sent by SMTP to `[dmarc] report_mailbox` are
read, stored and shown by `GET /api/reports` and the dashboard; a zip
bomb, a truncated gzip, an oversized report and a message that is no
report are set aside with their reasons, and the server keeps serving.

The DMARC reports are written here from Appendix C's schema (parsedmarc's
wheel carries no sample files); the TLS report is RFC 8460's own example.
parsedmarc then reads our stored copies and must agree with the API."""

import gzip
import io
import json
import random
import subprocess
import zipfile
from email.message import EmailMessage
from pathlib import Path

import parsedmarc
import pytest
import xmlschema

from conftest import send, wait_until

HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE / "artifacts"
SCHEMA = HERE / "data" / "rfc7489-appendix-c.xsd"
MAILBOX = "dmarc-rua@example.test"
MAX_BYTES = 10 * 1024 * 1024  # the default report_max_bytes

CONFIG = f"""
[[domain]]
name = "example.test"

[dmarc]
report_mailbox = "{MAILBOX}"
"""

TLSRPT = {
    "organization-name": "Company-X",
    "date-range": {"start-datetime": "2016-04-01T00:00:00Z", "end-datetime": "2016-04-01T23:59:59Z"},
    "contact-info": "sts-reporting@company-x.example",
    "report-id": "5065427c-23d3-47ca-b6e0-946ea0e8c4be",
    "policies": [{
        "policy": {
            "policy-type": "sts",
            "policy-string": ["version: STSv1", "mode: testing", "mx: *.mail.example.test", "max_age: 86400"],
            "policy-domain": "example.test",
            "mx-host": ["*.mail.example.test"],
        },
        "summary": {"total-successful-session-count": 5326, "total-failure-session-count": 303},
        "failure-details": [
            {"result-type": "certificate-expired", "sending-mta-ip": "2001:db8:abcd:0012::1",
             "receiving-mx-hostname": "mx1.mail.example.test", "failed-session-count": 100},
            {"result-type": "starttls-not-supported", "sending-mta-ip": "2001:db8:abcd:0013::1",
             "receiving-mx-hostname": "mx2.mail.example.test", "receiving-ip": "203.0.113.56",
             "failed-session-count": 200},
            {"result-type": "validation-failure", "sending-mta-ip": "198.51.100.62",
             "receiving-ip": "203.0.113.58", "receiving-mx-hostname": "mx-backup.mail.example.test",
             "failed-session-count": 3, "failure-reason-code": "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED"},
        ],
    }],
}


def aggregate(org: str, report_id: str, rows: list[tuple[str, int, str, str, str]]) -> bytes:
    """An aggregate report (RFC 7489 Appendix C): rows of (source_ip,
    count, disposition, dkim, spf) for mail From: example.test."""
    records = "".join(
        f"""
  <record>
    <row>
      <source_ip>{ip}</source_ip>
      <count>{count}</count>
      <policy_evaluated><disposition>{disp}</disposition><dkim>{dkim}</dkim><spf>{spf}</spf></policy_evaluated>
    </row>
    <identifiers><header_from>example.test</header_from><envelope_from>example.test</envelope_from></identifiers>
    <auth_results>
      <dkim><domain>example.test</domain><selector>s1</selector><result>{dkim}</result></dkim>
      <spf><domain>example.test</domain><scope>mfrom</scope><result>{spf}</result></spf>
    </auth_results>
  </record>"""
        for ip, count, disp, dkim, spf in rows
    )
    return f"""<?xml version="1.0" encoding="UTF-8" ?>
<feedback>
  <version>1.0</version>
  <report_metadata>
    <org_name>{org}</org_name>
    <email>noreply-dmarc@{org}</email>
    <report_id>{report_id}</report_id>
    <date_range><begin>1700000000</begin><end>1700086399</end></date_range>
  </report_metadata>
  <policy_published>
    <domain>example.test</domain><adkim>r</adkim><aspf>r</aspf><p>quarantine</p><sp>none</sp><pct>100</pct><fo>1</fo>
  </policy_published>{records}
</feedback>
""".encode()


def zipped(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, data)
    return out.getvalue()


def report_mail(subject: str, payload: bytes, media: str, filename: str) -> bytes:
    m = EmailMessage()
    m["From"] = "noreply-reports@reporter.test"
    m["To"] = MAILBOX
    m["Subject"] = subject
    m.set_content("This is a report (RFC 7489 §7.2 / RFC 8460).")
    maintype, subtype = media.split("/")
    m.add_attachment(payload, maintype=maintype, subtype=subtype, filename=filename)
    return m.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


GOOD_ROWS = {
    "plain": ("mail.google.example", "g-1", [("192.0.2.10", 40, "none", "pass", "pass"),
                                              ("203.0.113.7", 3, "quarantine", "fail", "fail")]),
    "gzip": ("yahoo.example", "y-1", [("192.0.2.10", 25, "none", "pass", "fail"),
                                       ("198.51.100.9", 7, "reject", "fail", "fail")]),
    "zip": ("outlook.example", "o-1", [("192.0.2.11", 9, "none", "fail", "pass")]),
}


def bad_reports() -> dict[str, tuple[bytes, str, str, str]]:
    """(payload, media type, file name, the code the API must give)."""
    bomb = zipped("bomb.xml", b"\0" * 50_000_000)
    good_gz = gzip.compress(aggregate("cut.example", "c-1", GOOD_ROWS["plain"][2]))
    # 50 MB of zeros zip to 49 kB: 100 times that is 4.9 MB, under the
    # size limit, so the ratio stops the bomb. Records with random
    # addresses compress about 50:1, so the size limit stops the big one.
    rnd = random.Random(7)
    rows = [(f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(256)}", rnd.randrange(1, 999),
             "none", "pass", "pass") for _ in range(22000)]
    big = aggregate("big.example", "b-1", rows)
    assert len(big) > MAX_BYTES
    return {
        "bomb": (bomb, "application/zip", "bomb.zip", "ratio"),
        "truncated": (good_gz[: len(good_gz) // 2], "application/gzip", "cut.xml.gz", "truncated"),
        "too-large": (gzip.compress(big), "application/gzip", "big.xml.gz", "too_large"),
        "not-a-report": (b"<html><body>hello</body></html>", "text/xml", "hello.xml", "bad_dmarc"),
    }


def sources(api: dict) -> dict[str, dict]:
    return {
        f"{r['org_name']} {row['source_ip']}": row
        for r in api["dmarc"]
        for row in r["rows"]
    }


@pytest.fixture
def reports_server(make_server):
    s = make_server(CONFIG)
    good = {
        "plain": (aggregate(*GOOD_ROWS["plain"]), "text/xml", "google!example.test!1700000000!1700086399.xml"),
        "gzip": (gzip.compress(aggregate(*GOOD_ROWS["gzip"])), "application/gzip", "yahoo!example.test.xml.gz"),
        "zip": (zipped("outlook!example.test.xml", aggregate(*GOOD_ROWS["zip"])), "application/zip", "outlook.zip"),
        "tlsrpt": (gzip.compress(json.dumps(TLSRPT).encode()), "application/tlsrpt+gzip", "company-x.json.gz"),
    }
    for name, (payload, media, filename) in good.items():
        assert send(s.mx, "noreply-reports@reporter.test", MAILBOX, report_mail(name, payload, media, filename)) == {}
    for name, (payload, media, filename, _) in bad_reports().items():
        assert send(s.mx, "noreply-reports@reporter.test", MAILBOX, report_mail(name, payload, media, filename)) == {}
    wait_until(
        lambda: (lambda a: len(a["dmarc"]) == 3 and len(a["tls"]) == 1 and len(a["malformed"]) == 4)(
            s.api("GET", "/api/reports")[1]),
        timeout=30, what=lambda: f"the reports in the API: {s.api('GET', '/api/reports')[1]}",
    )
    return s


def test_the_reports_sent_here_follow_rfc7489_appendix_c():
    schema = xmlschema.XMLSchema(SCHEMA)
    for rows in GOOD_ROWS.values():
        schema.validate(aggregate(*rows).decode())


def test_good_reports_are_stored_with_correct_figures(reports_server):
    s = reports_server
    code, api = s.api("GET", "/api/reports")
    assert code == 200
    by_org = {r["org_name"]: r for r in api["dmarc"]}
    assert set(by_org) == {"mail.google.example", "yahoo.example", "outlook.example"}
    g = by_org["mail.google.example"]
    assert (g["report_id"], g["begin"], g["end"]) == ("g-1", 1700000000, 1700086399)
    assert g["policy"] == {"domain": "example.test", "adkim": "r", "aspf": "r", "p": "quarantine", "sp": "none", "fo": "1"}
    assert (g["messages"], g["pass"], g["fail"]) == (43, 40, 3)
    assert (by_org["yahoo.example"]["messages"], by_org["yahoo.example"]["pass"]) == (32, 25)
    assert (by_org["outlook.example"]["pass"], by_org["outlook.example"]["fail"]) == (9, 0)
    rows = sources(api)
    r = rows["yahoo.example 198.51.100.9"]
    assert (r["count"], r["disposition"], r["dkim"], r["spf"], r["dmarc"], r["header_from"]) == (
        7, "reject", "fail", "fail", "fail", "example.test")
    (t,) = api["tls"]
    assert (t["org_name"], t["successful"], t["failed"]) == ("Company-X", 5326, 303)
    assert (t["begin"], t["end"]) == (1459468800, 1459555199)
    (p,) = t["policies"]
    assert (p["policy_type"], p["policy_domain"]) == ("sts", "example.test")
    assert [(f["result_type"], f["failed_sessions"]) for f in p["failures"]] == [
        ("certificate-expired", 100), ("starttls-not-supported", 200), ("validation-failure", 3)]
    assert s.metric("portcullis_reports_received_total", kind="dmarc", result="stored") == 3
    assert s.metric("portcullis_reports_received_total", kind="tls", result="stored") == 1
    # Nothing of it went to a Maildir or stayed in the queue.
    assert not (s.data / "mail" / "example.test").exists()
    wait_until(lambda: s.queue_size() == 0, what="an empty queue")


def test_bad_reports_are_set_aside_with_reasons_and_the_server_keeps_serving(reports_server):
    s = reports_server
    _, api = s.api("GET", "/api/reports")
    codes = {m["code"]: m for m in api["malformed"]}
    assert set(codes) == {"ratio", "truncated", "too_large", "bad_dmarc"}
    assert "100-fold" in codes["ratio"]["reason"]
    assert "truncated gzip" in codes["truncated"]["reason"]
    assert str(MAX_BYTES) in codes["too_large"]["reason"]
    assert codes["ratio"]["sender"] == "noreply-reports@reporter.test"
    malformed = s.data / "reports" / "malformed"
    for m in api["malformed"]:
        assert (malformed / f"{m['id']}.eml").stat().st_mode & 0o777 == 0o600
        assert f"code: {m['code']}" in (malformed / f"{m['id']}.reason").read_text()
    assert s.metric("portcullis_reports_received_total", result="malformed") == 4
    # No bounce went back to the reporter, nothing waits for a retry, and
    # the server still takes mail.
    wait_until(lambda: s.queue_size() == 0, what="an empty queue")
    assert s.proc.poll() is None
    assert send(s.mx, "a@remote.test", "postmaster@example.test", b"Subject: still here\r\n\r\nhi\r\n") == {}
    s.wait_message("postmaster", b"still here", domain="example.test")


def test_reports_survive_a_restart_and_parsedmarc_reads_our_copies_the_same(reports_server):
    s = reports_server
    _, before = s.api("GET", "/api/reports")
    s.stop()
    s.start()
    _, after = s.api("GET", "/api/reports")
    assert after == before
    stored = s.data / "reports"
    for r in before["dmarc"]:
        theirs = parsedmarc.parse_report_file(str(stored / f"{r['id']}.eml"), offline=True, always_use_local_files=True)
        assert theirs["report_type"] == "aggregate"
        agg = theirs["report"]
        assert agg["report_metadata"]["report_id"] == r["report_id"]
        assert agg["policy_published"]["p"] == r["policy"]["p"]
        assert [(x["source"]["ip_address"], x["count"], x["policy_evaluated"]["disposition"],
                 x["alignment"]["dmarc"]) for x in agg["records"]] == [
            (row["source_ip"], row["count"], row["disposition"], row["dmarc"] == "pass") for row in r["rows"]]
    (t,) = before["tls"]
    theirs = parsedmarc.parse_report_file(str(stored / f"{t['id']}.eml"), offline=True, always_use_local_files=True)
    assert theirs["report_type"] == "smtp_tls"
    (pol,) = theirs["report"]["policies"]
    assert (pol["successful_session_count"], pol["failed_session_count"]) == (5326, 303)


def test_the_dashboard_shows_the_report_table_in_chromium(reports_server):
    if not Path("/usr/bin/chromium").exists():
        pytest.fail("Debian's chromium is not installed (.ci/run installs it)")
    if not (HERE / "browser/node_modules/playwright-core").exists():
        pytest.fail("run `npm ci` in tests/e2e/browser (.ci/run does)")
    s = reports_server
    ARTIFACTS.mkdir(exist_ok=True)
    out = subprocess.run(
        ["node", str(HERE / "browser/reports.mjs"), f"http://127.0.0.1:{s.http}", s.token,
         str(ARTIFACTS / "dashboard-reports.png"), "4"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    tables = json.loads(out.stdout)
    by_source = {row[1]: row for row in tables["dmarc-sources"]}
    # 192.0.2.10 was seen by two reporters: 40 + 25 messages, all DMARC
    # pass (DKIM or SPF), policy applied "none".
    assert by_source["192.0.2.10"][:6] == ["example.test", "192.0.2.10", "65", "65", "0", "none 65"]
    assert by_source["198.51.100.9"][2:6] == ["7", "0", "7", "reject 7"]
    assert by_source["203.0.113.7"][5] == "quarantine 3"
    assert len(by_source) == 4
    (tls,) = tables["tls-received"]
    assert tls[:5] == ["Company-X", "example.test", "sts", "5326", "303"]
    assert "certificate-expired: 100" in tls[5]
    reasons = " ".join(row[2] for row in tables["reports-malformed"])
    assert "100-fold" in reasons and "truncated gzip" in reasons
