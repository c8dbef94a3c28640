"""Milters (issue 31): portcullis as the MTA side of the milter protocol,
against real milters. A pymilter test milter (`milters/pymilter_peer.py`,
run by Debian's /usr/bin/python3) does what each message's Subject or
envelope asks, so every reply and modification is checked against the
mailbox it produces; a listening socket that never answers shows the
timeout; clamav-milter, OpenDKIM and rspamd's proxy are the milters
operators run."""

import json
import os
import smtplib
import socket
import subprocess
import time
from pathlib import Path

import dkim
import pytest

from conftest import PASSWORD, add_user, free_port, login, send, submit, try_send, wait_port, wait_until
from dnsserver import DnsServer

HERE = Path(__file__).resolve().parent
PYTHON = "/usr/bin/python3"  # Debian's python3-milter lives there


class PyMilter:
    """The pymilter test milter on a loopback port, its records in a file."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.record = workdir / "milter-record.jsonl"
        self.log = open(os.environ.get("MILTER_LOG", workdir / "milter.log"), "ab")
        self.proc = subprocess.Popen(
            [PYTHON, str(HERE / "milters" / "pymilter_peer.py"), f"inet:{self.port}@127.0.0.1", str(self.record)],
            stdout=self.log, stderr=self.log)
        wait_port(self.port, proc=self.proc)

    def records(self) -> list[dict]:
        if not self.record.exists():
            return []
        return [json.loads(l) for l in self.record.read_text().splitlines() if l.strip()]

    def last(self, outcome: str) -> dict:
        return wait_until(lambda: next((r for r in reversed(self.records()) if r["outcome"] == outcome), None),
                          10, f"the milter's record of {outcome!r}")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def pymilter(workdir):
    m = PyMilter(workdir)
    yield m
    m.stop()


def milter_config(socket: str, *, name="test", timeout_ms=5000, extra=""):
    return f"""
[[milter]]
name = "{name}"
socket = "{socket}"
timeout_ms = {timeout_ms}
{extra}
"""


@pytest.fixture
def mx(make_server, pymilter, workdir):
    keys = []
    s = make_server(milter_config(f"inet:127.0.0.1:{pymilter.port}"), start=False)
    r = s.cli("dkim", "keygen", "--domain", "local.test", "--selector", "ed", "--algorithm", "ed25519")
    assert r.returncode == 0, r.stderr
    keys.append(r.stdout.strip())
    dns_server = DnsServer(workdir, {"local.test": "\n".join(keys)}).start()
    s.start()
    add_user(s, "alice@local.test")
    s.dns_server = dns_server
    yield s
    dns_server.stop()


def message(subject: str, extra: str = "", sender: str = "someone@sender.test", to: str = "kept@local.test") -> str:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nX-Change: original\r\nX-Delete: to be deleted\r\n"
            f"{extra}\r\nThe body as sent.\r\n")


def test_every_modification_is_applied_to_the_delivered_message(mx, pymilter):
    refused = send(mx.mx, "someone@sender.test", ["kept@local.test", "removed@local.test"], message("modify"))
    assert refused == {}
    [added] = mx.wait_messages("added", 1)
    [kept] = mx.wait_messages("kept", 1)
    assert added == kept.replace(b"Delivered-To: kept@", b"Delivered-To: added@")
    head, body = kept.split(b"\r\n\r\n", 1)
    assert body == b"The body the milter wrote.\r\nSecond line.\r\n"
    assert b"Return-Path: <changed-sender@elsewhere.test>" in head
    assert b"\r\nX-Added: added by the test milter" in head
    assert b"\r\nX-Change: changed" in head and b"original" not in head
    assert b"X-Delete" not in head
    # Inserted at index 0 of what the milter saw, so above From: and
    # below our own trace and authentication fields.
    assert head.index(b"X-Inserted: at the top") < head.index(b"From: someone@sender.test")
    assert head.index(b"Authentication-Results:") < head.index(b"X-Inserted")
    assert mx.messages("removed") == []


def test_the_milter_sees_our_macros_on_port_25(mx, pymilter):
    send(mx.mx, "someone@sender.test", "kept@local.test", message("macros"))
    r = pymilter.last("macros")
    assert r["connect"]["j"] == "mx.portcullis.test"
    assert r["connect"]["{daemon_name}"] == "mx"
    assert r["connect"]["{client_addr}"] == "127.0.0.1"
    assert r["connect_addr"] == "127.0.0.1"
    assert r["envfrom"]["{mail_addr}"] == "someone@sender.test"
    assert r["envrcpt"]["{rcpt_addr}"] == "kept@local.test"
    [queued] = mx.wait_event("queued")
    assert r["eom"]["i"] == queued["id"]
    assert ["Subject", "macros"] in r["headers"]
    assert r["body"] == "The body as sent.\r\n"


def test_the_milter_sees_the_login_and_tls_on_submission(mx, pymilter):
    submit(mx, "kept@local.test", message("macros", sender="alice@local.test"))
    r = pymilter.last("macros")
    assert r["connect"]["{daemon_name}"] == "submission"
    assert r["envfrom"]["{auth_authen}"] == "alice@local.test"
    assert r["envfrom"]["{auth_type}"] == "PLAIN"
    assert r["envfrom"]["{tls_version}"].startswith("TLS")
    assert r["envfrom"]["{cipher}"]


def test_modifications_on_submission_come_before_our_dkim_signature(mx, pymilter):
    submit(mx, ["kept@local.test", "removed@local.test"], message("modify", sender="alice@local.test"))
    [msg] = mx.wait_messages("added", 1)
    assert b"The body the milter wrote." in msg and b"X-Added:" in msg
    d = dkim.DKIM(msg)
    assert d.verify(dnsfunc=lambda name, timeout=5: mx.dns_server.txt(name))


@pytest.mark.parametrize("sender,rcpt,subject,code,text", [
    ("rejectsender@sender.test", "kept@local.test", "x", 550, "5.7.1"),
    ("replycode@sender.test", "kept@local.test", "x", 553, "5.7.9 Sender refused by the test milter"),
    ("s@sender.test", "rejectme@local.test", "x", 550, "5.7.1"),
    ("s@sender.test", "tempme@local.test", "x", 451, "4.7.1"),
    ("s@sender.test", "kept@local.test", "reject", 550, "5.7.1"),
    ("s@sender.test", "kept@local.test", "tempfail", 451, "4.7.1"),
    ("s@sender.test", "kept@local.test", "replycode", 554, "5.7.0 Content refused: test pattern"),
])
def test_each_refusal_reaches_the_client(mx, pymilter, sender, rcpt, subject, code, text):
    got, said = try_send(mx.mx, sender, rcpt, message(subject, to=rcpt))
    assert got == code and text in said, (got, said)
    assert mx.messages("kept") == []


def test_a_refused_recipient_leaves_the_others(mx, pymilter):
    refused = send(mx.mx, "s@sender.test", ["rejectme@local.test", "kept@local.test"], message("ok"))
    assert list(refused) == ["rejectme@local.test"]
    mx.wait_messages("kept", 1)


def test_discard_is_accepted_and_dropped(mx, pymilter):
    assert try_send(mx.mx, "s@sender.test", "kept@local.test", message("discard")) == (250, "")
    mx.wait_event("discarded", by="milter")
    assert mx.metric("portcullis_milter_messages_total", outcome="discarded") == 1
    assert mx.messages("kept") == []
    assert mx.queue_size() == 0


def test_quarantine_holds_the_message_with_the_reason_until_released(mx, pymilter):
    assert try_send(mx.mx, "s@sender.test", "kept@local.test", message("quarantine")) == (250, "")
    [queued] = mx.wait_event("queued", held="test: held by the test milter")
    qid = queued["id"]
    status, shown = mx.api("GET", f"/api/queue/{qid}")
    assert status == 200 and shown["held"] and shown["hold_reason"] == "test: held by the test milter"
    assert mx.metric("portcullis_milter_messages_total", outcome="quarantined") == 1
    assert mx.messages("kept") == []
    assert mx.cli("queue", "release", qid).returncode == 0
    mx.wait_messages("kept", 1)


def test_accept_at_end_of_headers_delivers_unchanged(mx, pymilter):
    send(mx.mx, "s@sender.test", "kept@local.test", message("accept-at-eoh"))
    [msg] = mx.wait_messages("kept", 1)
    assert b"X-Change: original" in msg and b"The body as sent." in msg


def test_one_connection_serves_every_message_of_a_session(mx, pymilter):
    with smtplib.SMTP("127.0.0.1", mx.mx) as c:
        for i in range(3):
            c.sendmail("s@sender.test", ["kept@local.test"], message("ok"))
        c.mail("s@sender.test")  # a transaction that never ends
        c.rset()
        c.sendmail("s@sender.test", ["kept@local.test"], message("ok"))
    mx.wait_messages("kept", 4)
    # One negotiation per SMTP session; four messages answered.
    assert mx.metric("portcullis_milter_requests_total", milter="test", step="optneg") == 1
    assert mx.metric("portcullis_milter_requests_total", milter="test", step="eom") == 4


def test_metrics_count_requests_answers_and_latency(mx, pymilter):
    send(mx.mx, "s@sender.test", "kept@local.test", message("ok"))
    mx.wait_messages("kept", 1)
    assert mx.metric("portcullis_milter_answers_total", milter="test", kind="accept") >= 1
    assert mx.metric("portcullis_milter_answers_total", milter="test", kind="continue") >= 1
    assert mx.metric("portcullis_milter_latency_seconds_count", milter="test") >= 3
    # The dashboard's figures.
    status, stats = mx.api("GET", "/api/stats")
    assert status == 200 and stats["milters"]["test"]["requests"] >= 3
    assert stats["milters"]["test"]["answers"]["accept"] >= 1


def test_check_config_reports_what_the_milter_negotiated(mx, pymilter):
    out = subprocess.run(mx.cli_args("check-config"), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if l.startswith("milter test"))
    assert f"(inet:127.0.0.1:{pymilter.port}): version 6" in line
    assert "add-headers" in line and "replace-body" in line and "quarantine" in line


def test_progress_keeps_a_slow_milter_within_its_timeout(make_server, pymilter):
    s = make_server(milter_config(f"inet:127.0.0.1:{pymilter.port}", timeout_ms=500))
    # Five pauses of 0.3 s: 1.5 s in all, three times the timeout.
    assert try_send(s.mx, "s@sender.test", "kept@local.test", message("progress 5")) == (250, "")
    s.wait_messages("kept", 1)
    assert s.metric("portcullis_milter_answers_total", kind="progress") == 5


# --- milters that fail -----------------------------------------------------------


@pytest.fixture
def silent_milter():
    """A milter that takes the connection (the kernel's backlog does) and
    never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield sock.getsockname()[1]
    sock.close()


def test_a_milter_that_never_answers_costs_one_tempfail_within_its_timeout(make_server, silent_milter):
    s = make_server(milter_config(f"inet:127.0.0.1:{silent_milter}", timeout_ms=500, extra='roles = ["mx"]'))
    add_user(s, "alice@local.test")
    for _ in range(2):
        t0 = time.monotonic()
        code, text = try_send(s.mx, "s@sender.test", "kept@local.test", message("x"))
        took = time.monotonic() - t0
        assert (code, text[:5]) == (451, "4.7.1"), (code, text)
        assert took < 2.0, took
    # The server keeps serving: submission has no milter and delivers.
    submit(s, "kept@local.test", message("x", sender="alice@local.test"))
    s.wait_messages("kept", 1)
    assert s.metric("portcullis_milter_failures_total", milter="test", reason="timeout") == 2


def test_a_milter_that_is_down_costs_one_quick_tempfail(make_server):
    closed = free_port()
    s = make_server(milter_config(f"inet:127.0.0.1:{closed}", timeout_ms=10000))
    t0 = time.monotonic()
    code, text = try_send(s.mx, "s@sender.test", "kept@local.test", message("x"))
    assert (code, text[:5]) == (451, "4.7.1") and time.monotonic() - t0 < 2.0
    assert s.metric("portcullis_milter_failures_total", reason="connect") == 1


def test_on_failure_accept_goes_on_without_the_milter(make_server, silent_milter):
    s = make_server(milter_config(f"inet:127.0.0.1:{silent_milter}", timeout_ms=300, extra='on_failure = "accept"'))
    assert try_send(s.mx, "s@sender.test", "kept@local.test", message("x")) == (250, "")
    s.wait_messages("kept", 1)


def test_on_failure_reject_refuses(make_server):
    s = make_server(milter_config(f"inet:127.0.0.1:{free_port()}", extra='on_failure = "reject"'))
    code, text = try_send(s.mx, "s@sender.test", "kept@local.test", message("x"))
    assert (code, text[:5]) == (550, "5.7.1")


# --- clamav-milter with clamd --------------------------------------------------------

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


@pytest.fixture(scope="module")
def clamav(tmp_path_factory):
    """clamd with a database of one signature (the EICAR file's MD5, built
    here: no network) and clamav-milter in front of it."""
    import hashlib

    d = tmp_path_factory.mktemp("clamav")
    (d / "db").mkdir()
    (d / "db" / "eicar.hdb").write_text(f"{hashlib.md5(EICAR).hexdigest()}:{len(EICAR)}:Portcullis-Test-EICAR\n")
    sock = d / "clamd.sock"
    (d / "clamd.conf").write_text(
        f"LocalSocket {sock}\nDatabaseDirectory {d / 'db'}\nForeground yes\nLogFile {d / 'clamd.log'}\n"
        f"PidFile {d / 'clamd.pid'}\nUser root\nTemporaryDirectory {d}\n"
    )
    clamd = subprocess.Popen(["clamd", "-c", str(d / "clamd.conf")], stdout=open(d / "clamd.out", "wb"),
                             stderr=subprocess.STDOUT)
    wait_until(lambda: sock.exists() or clamd.poll() is not None, 120, "clamd's socket")
    assert clamd.poll() is None, (d / "clamd.out").read_text()
    port = free_port()
    (d / "clamav-milter.conf").write_text(
        f"MilterSocket inet:{port}@127.0.0.1\nClamdSocket unix:{sock}\nForeground yes\nUser root\n"
        f"PidFile {d / 'milter.pid'}\nLogFile {d / 'milter.log'}\nOnInfected Reject\nOnFail Defer\n"
        'RejectMsg "Virus found: %v"\nAddHeader Replace\nTemporaryDirectory ' + str(d) + "\n"
    )
    milter = subprocess.Popen(["clamav-milter", "-c", str(d / "clamav-milter.conf")],
                              stdout=open(d / "milter.out", "wb"), stderr=subprocess.STDOUT)
    wait_port(port, timeout=60, proc=milter)
    yield port
    for p in (milter, clamd):
        p.terminate()
        p.wait(timeout=20)


def with_attachment(sender: str, payload: bytes) -> str:
    import base64

    return (f"From: {sender}\r\nTo: kept@local.test\r\nSubject: attachment\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n'
            '--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="x.com"\r\n'
            f"Content-Transfer-Encoding: base64\r\n\r\n{base64.b64encode(payload).decode()}\r\n--b--\r\n")


@pytest.fixture
def scanned(make_server, clamav):
    s = make_server(milter_config(f"inet:127.0.0.1:{clamav}", name="clamav", timeout_ms=30000))
    add_user(s, "alice@local.test")
    return s


def test_clamav_refuses_eicar_on_25_with_the_virus_name(scanned):
    code, text = try_send(scanned.mx, "s@sender.test", "kept@local.test", with_attachment("s@sender.test", EICAR))
    assert code == 550 and "Portcullis-Test-EICAR" in text, (code, text)


def test_clamav_refuses_eicar_on_587_with_the_virus_name(scanned):
    with login(scanned.sub) as c:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            c.sendmail("alice@local.test", ["kept@local.test"], with_attachment("alice@local.test", EICAR))
    assert refused.value.smtp_code == 550 and b"Portcullis-Test-EICAR" in refused.value.smtp_error


def test_clamav_passes_a_clean_message_and_says_so(scanned):
    assert try_send(scanned.mx, "s@sender.test", "kept@local.test",
                    with_attachment("s@sender.test", b"nothing to see here\r\n")) == (250, "")
    [msg] = scanned.wait_messages("kept", 1)
    assert b"X-Virus-Scanned: clamav-milter" in msg and b"X-Virus-Status: Clean" in msg


# --- OpenDKIM: signing on submission, verifying on 25 ---------------------------------


@pytest.fixture(scope="module")
def opendkim(tmp_path_factory):
    """OpenDKIM signing for local.test when {daemon_name} is `submission`
    (its `MTA` list) and verifying everything else; loopback is not an
    internal host here, and the public keys come from a file (its
    `TestPublicKeys`), not DNS."""
    d = tmp_path_factory.mktemp("opendkim")
    keys = {}
    for domain, selector in [("local.test", "od"), ("sender.test", "ext")]:
        subprocess.run(["opendkim-genkey", "-D", str(d), "-d", domain, "-s", selector, "-b", "2048"], check=True)
        (d / f"{selector}.private").rename(d / f"{domain}.private")
        txt = (d / f"{selector}.txt").read_text()
        record = "".join(part for part in txt.split('"')[1::2])
        keys[f"{selector}._domainkey.{domain}"] = record
    (d / "keys").write_text("".join(f"{name} {record}\n" for name, record in keys.items()))
    port = free_port()
    (d / "opendkim.conf").write_text(
        f"Socket inet:{port}@127.0.0.1\nMode sv\nDomain local.test\nSelector od\nKeyFile {d}/local.test.private\n"
        f"MTA submission\nInternalHosts 192.0.2.1\nAuthservID opendkim.portcullis.test\n"
        f"TestPublicKeys {d}/keys\nCanonicalization relaxed/relaxed\nBackground no\nSyslog no\n"
        f"PidFile {d}/opendkim.pid\nUserID root\nRequireSafeKeys no\n"
    )
    proc = subprocess.Popen(["opendkim", "-f", "-x", str(d / "opendkim.conf")],
                            stdout=open(d / "opendkim.out", "wb"), stderr=subprocess.STDOUT)
    wait_port(port, timeout=30, proc=proc)
    yield port, keys, d
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def dkim_server(make_server, opendkim):
    s = make_server(milter_config(f"inet:127.0.0.1:{opendkim[0]}", name="opendkim"))
    add_user(s, "alice@local.test")
    return s


def test_opendkim_signs_submitted_mail_and_dkimpy_verifies_it(dkim_server, opendkim):
    _, keys, _ = opendkim
    submit(dkim_server, "kept@local.test", message("signed by opendkim", sender="alice@local.test"))
    [msg] = dkim_server.wait_messages("kept", 1)
    assert b"DKIM-Signature:" in msg and b"s=od" in msg
    lookup = lambda name, timeout=5: keys.get(name.decode().rstrip("."), "").encode() or None
    assert dkim.verify(msg, dnsfunc=lookup)


def test_opendkim_verifies_on_25_and_its_results_are_kept(dkim_server, opendkim):
    _, _, d = opendkim
    body = message("signed elsewhere", sender="someone@sender.test").encode()
    sig = dkim.sign(body, b"ext", b"sender.test", (d / "sender.test.private").read_bytes(),
                    include_headers=[b"From", b"To", b"Subject"])
    send(dkim_server.mx, "someone@sender.test", "kept@local.test", sig + body)
    [msg] = dkim_server.wait_messages("kept", 1)
    results = [l for l in msg.split(b"\r\n") if l.startswith(b"Authentication-Results: opendkim.portcullis.test")]
    assert results, msg.decode(errors="replace")
    assert b"dkim=pass" in msg.split(b"Authentication-Results: opendkim.portcullis.test", 1)[1][:300]


# --- rspamd in milter mode ------------------------------------------------------------------

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


@pytest.fixture(scope="module")
def rspamd_milter(tmp_path_factory):
    """rspamd's proxy worker speaking the milter protocol, scanning itself
    (self_scan), with its headers added for every message."""
    import shutil

    if not shutil.which("rspamd"):
        pytest.fail("rspamd is not installed (.ci/run installs it)")
    d = tmp_path_factory.mktemp("rspamd-milter")
    for sub in ("local.d", "override.d", "run", "db", "log"):
        (d / sub).mkdir()
    proxy, controller = free_port(), free_port()
    (d / "override.d/worker-proxy.inc").write_text(
        f'bind_socket = "127.0.0.1:{proxy}";\nmilter = yes;\ntimeout = 120s;\n'
        'upstream "local" {\n  default = yes;\n  self_scan = yes;\n}\ncount = 1;\n')
    (d / "override.d/worker-normal.inc").write_text("enabled = false;\n")
    (d / "override.d/worker-controller.inc").write_text(f'bind_socket = "127.0.0.1:{controller}";\n')
    (d / "override.d/worker-fuzzy.inc").write_text("enabled = false;\n")
    (d / "override.d/logging.inc").write_text('type = "console";\nlevel = "error";\n')
    (d / "local.d/milter_headers.conf").write_text(
        'use = ["x-spamd-result", "x-rspamd-queue-id"];\nskip_local = false;\nskip_authenticated = false;\n')
    (d / "tld.dat").write_text("test\ncom\nnet\norg\n")
    dns = DnsServer(d, {"test": ""}).start()
    (d / "local.d/options.inc").write_text(
        f'dns {{\n nameserver = ["127.0.0.1:{dns.port}"];\n timeout = 1s;\n retransmits = 1;\n}}\n'
        f'url_tld = "{d}/tld.dat";\n')
    proc = subprocess.Popen(
        ["rspamd", "-f", "-i", "-u", "root", "-g", "root", "--var", f"LOCAL_CONFDIR={d}", "--var", f"RUNDIR={d}/run",
         "--var", f"DBDIR={d}/db", "--var", f"LOGDIR={d}/log"],
        stdout=open(d / "rspamd.out", "wb"), stderr=subprocess.STDOUT)
    wait_port(proxy, timeout=60, proc=proc)
    yield proxy
    proc.terminate()
    proc.wait(timeout=10)
    dns.stop()


@pytest.fixture
def rspamd_server(make_server, rspamd_milter):
    return make_server(milter_config(f"inet:127.0.0.1:{rspamd_milter}", name="rspamd", timeout_ms=30000))


def test_rspamd_milter_refuses_gtube(rspamd_server):
    code, text = try_send(rspamd_server.mx, "s@sender.test", "kept@local.test", message("spam", extra=f"\r\n{GTUBE}\r\n"))
    assert code == 554 and "5.7.1" in text, (code, text)


def test_rspamd_milter_headers_appear(rspamd_server):
    assert try_send(rspamd_server.mx, "s@sender.test", "kept@local.test", message("ham")) == (250, "")
    [msg] = rspamd_server.wait_messages("kept", 1)
    assert b"X-Spamd-Result:" in msg, msg.decode(errors="replace")
