"""Issue 29: a stolen password sends almost nothing. Containment of
compromised accounts over the real submission port (smtplib as the
bot), Postfix's smtp-sink as the outside world (our smarthost), a
webhook receiver that checks the HMAC, real rspamd scanning submitted
mail (GTUBE), held mail across a restart, and a real Postfix that
accepts a message, fails one recipient later and mails the DSN back.

The windows are driven with the clock passed in by the crate tests
(crates/containment/src/tests.rs: the fast and slow bots, the bulk and
new accounts over a synthetic week); here the scenarios that need the
real parts.
"""

import hashlib
import hmac
import http.server
import json
import os
import smtplib
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import PASSWORD, add_user, free_port, insecure_tls, wait_port, wait_until
from test_t15_class_of_service import dns_server, rspamd  # noqa: F401  (the fixtures)

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
USER = "alice@local.test"
SECRET = "webhook secret for the test"


class Hooks:
    """A webhook receiver on loopback: keeps each POST whose signature
    is right, counts the others."""

    def __init__(self):
        self.good: list[dict] = []
        self.bad = 0
        hooks = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                want = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                if hmac.compare_digest(self.headers.get("X-Portcullis-Signature", ""), want):
                    hooks.good.append(json.loads(body))
                else:
                    hooks.bad += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.port = self.http.server_address[1]
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self):
        self.http.shutdown()


@pytest.fixture
def hooks():
    h = Hooks()
    yield h
    h.close()


@pytest.fixture
def sink():
    """Postfix's smtp-sink: the outside world, accepting everything."""
    port = free_port()
    p = subprocess.Popen(["smtp-sink", "-u", "postfix", f"127.0.0.1:{port}", "100"])
    yield port
    p.terminate()
    p.wait(timeout=10)


def config(sink_port: int, hook_port: int | None = None, extra: str = "") -> str:
    hook = f'webhook_url = "http://127.0.0.1:{hook_port}/hook"\nwebhook_secret = "{SECRET}"\n' if hook_port else ""
    return f"""
[[domain]]
name = "local.test"
recipients = "reject-unknown"

[delivery]
smarthost = "127.0.0.1:{sink_port}"
retry_base_secs = 1

[limits]
tarpit_step_ms = 0

[containment]
remediation_url = "https://help.local.test/held"
{hook}
{extra}
"""


def server_with_alice(make_server, text: str):
    s = make_server(text, local_test=False)
    add_user(s, USER)
    return s


def delivered_outside(s) -> int:
    """Recipients the smarthost (the outside world) accepted."""
    return sum(e.get("delivered", 0) for e in s.events("delivered"))


def bot_message(s, n: int, source: str) -> tuple[int, str]:
    """One bot message: 50 recipients, every third unknown here; the
    reply to the end of data, or the first refusal."""
    rcpts = [f"nobody{n}-{i}@local.test" if i % 3 == 2 else f"victim{n}-{i}@far.test" for i in range(50)]
    body = f"From: {USER}\r\nSubject: offer {n}\r\n\r\nbuy now\r\n"
    try:
        with smtplib.SMTP("127.0.0.1", s.sub, source_address=(source, 0), timeout=20) as c:
            c.starttls(context=insecure_tls())
            c.ehlo()
            c.login(USER, PASSWORD)
            c.sendmail(USER, rcpts, body)
            return 250, "queued"
    except smtplib.SMTPSenderRefused as e:
        return e.smtp_code, e.smtp_error.decode(errors="replace")
    except smtplib.SMTPRecipientsRefused as e:
        code, text = next(iter(e.recipients.values()))
        return code, text.decode(errors="replace")


def test_fast_bot_on_twenty_networks_is_held_before_twenty_outside_recipients_get_mail(make_server, sink, hooks):
    s = server_with_alice(make_server, config(sink, hooks.port))
    replies = [bot_message(s, n, f"127.0.{n % 20 + 1}.1") for n in range(10)]
    assert replies[-1][0] == 451 and "on hold" in replies[-1][1], replies
    assert "https://help.local.test/held" in replies[-1][1]
    status, contained = s.api("GET", "/api/containment")
    assert status == 200 and contained[0]["account"] == USER, contained
    c = contained[0]["contained"]
    assert c["action"] == "hold" and c["findings"][0]["signal"] == "unknown_recipients", c
    # The session's error limit closes the bot's first session (421)
    # before its DATA; whatever it did queue would wait, held.
    shown = json.loads(s.cli("account", "show", USER).stdout)
    assert shown["queued"] == shown["held"], shown
    assert delivered_outside(s) <= 20, delivered_outside(s)
    # The operator was told, signed.
    wait_until(lambda: hooks.good, what="a signed webhook")
    assert hooks.bad == 0 and hooks.good[0]["account"] == USER
    assert hooks.good[0]["contained"]["action"] == "hold"
    m = s.metrics()
    assert m[("portcullis_containment_actions_total", (("action", "hold"), ("signal", "unknown_recipients")))] == 1


def test_held_mail_survives_a_restart_and_leaves_on_release(make_server, sink):
    s = server_with_alice(make_server, config(sink))
    with smtplib.SMTP("127.0.0.1", s.sub, timeout=20) as c:
        c.starttls(context=insecure_tls())
        c.ehlo()
        c.login(USER, PASSWORD)
        r = s.cli("account", "hold", USER)
        assert r.returncode == 0, r.stderr
        # A transaction already under way is never refused: queued held.
        with pytest.raises(smtplib.SMTPSenderRefused) as e:
            c.sendmail(USER, ["friend@far.test"], f"From: {USER}\r\n\r\nhi\r\n")
        assert e.value.smtp_code == 451
    s.cli("account", "release", USER)
    # Queue one message, then hold: it stays in the queue, held.
    s.stop()
    s.config.write_text(s.config.read_text().replace(f'smarthost = "127.0.0.1:{sink}"', 'smarthost = "127.0.0.1:9"'))
    s.start()
    with smtplib.SMTP("127.0.0.1", s.sub, timeout=20) as c:
        c.starttls(context=insecure_tls())
        c.ehlo()
        c.login(USER, PASSWORD)
        c.sendmail(USER, ["friend@far.test"], f"From: {USER}\r\nSubject: kept\r\n\r\nhi\r\n")
    wait_until(lambda: s.events("deferred"), what="the first attempt deferred (no smarthost yet)")
    held = json.loads(s.cli("account", "hold", USER).stdout)["held"]
    assert len(held) == 1, held
    s.stop()
    s.config.write_text(s.config.read_text().replace('smarthost = "127.0.0.1:9"', f'smarthost = "127.0.0.1:{sink}"'))
    s.start()
    shown = json.loads(s.cli("account", "show", USER).stdout)
    assert shown["held"] == held and shown["tally"]["contained"]["action"] == "hold", shown
    status, queue = s.api("GET", "/api/queue")
    assert [m["state"] for m in queue if m["id"] == held[0]] == ["held"], queue
    assert delivered_outside(s) == 0
    released = json.loads(s.cli("account", "release", USER).stdout)["released"]
    assert released == held
    wait_until(lambda: delivered_outside(s) == 1, timeout=30, what="the released message delivered")
    assert s.api("GET", "/api/containment")[1] == []


def test_deleting_a_held_message_is_logged(make_server):
    s = server_with_alice(make_server, config(9))
    r = s.cli("account", "hold", USER)
    assert r.returncode == 0, r.stderr
    with smtplib.SMTP("127.0.0.1", s.sub, timeout=20) as c:
        c.starttls(context=insecure_tls())
        c.ehlo()
        c.login(USER, PASSWORD)
        with pytest.raises(smtplib.SMTPSenderRefused):
            c.sendmail(USER, ["friend@far.test"], "hi\r\n")
    s.cli("account", "release", USER)
    with smtplib.SMTP("127.0.0.1", s.sub, timeout=20) as c:
        c.starttls(context=insecure_tls())
        c.ehlo()
        c.login(USER, PASSWORD)
        c.sendmail(USER, ["friend@far.test"], f"From: {USER}\r\n\r\nhi\r\n")
    held = json.loads(s.cli("account", "hold", USER).stdout)["held"]
    r = s.cli("queue", "delete", held[0])
    assert r.returncode == 0, r.stderr
    wait_until(lambda: s.events("deleted", id=held[0], account=USER), what="the deletion in the log")


def test_third_outbound_gtube_strike_holds_the_account(make_server, sink, rspamd):  # noqa: F811
    s = server_with_alice(make_server, config(sink) + f'\n[rspamd]\naddress = "127.0.0.1:{rspamd}"\n')
    gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
    codes = []
    for n in range(4):
        try:
            with smtplib.SMTP("127.0.0.1", s.sub, timeout=20) as c:
                c.starttls(context=insecure_tls())
                c.ehlo()
                c.login(USER, PASSWORD)
                c.sendmail(USER, ["friend@far.test"], f"From: {USER}\r\nSubject: spam {n}\r\n\r\n{gtube}\r\n")
                codes.append(250)
        except smtplib.SMTPDataError as e:
            codes.append(e.smtp_code)
        except smtplib.SMTPSenderRefused as e:
            codes.append(e.smtp_code)
    assert codes == [550, 550, 550, 451], codes
    assert [e["user"] for e in s.events("rspamd")][:3] == [USER] * 3
    status, contained = s.api("GET", "/api/containment")
    assert contained[0]["contained"]["findings"][0]["signal"] == "spam_strikes", contained


def test_a_feedback_report_at_the_feedback_address_counts_against_the_account(make_server, sink):
    s = server_with_alice(make_server, config(sink, extra='feedback_address = "fbl@local.test"\ncomplaints_per_day = 1\n'))
    with smtplib.SMTP("127.0.0.1", s.sub, timeout=20) as c:
        c.starttls(context=insecure_tls())
        c.ehlo()
        c.login(USER, PASSWORD)
        c.sendmail(USER, ["victim@yahoo.test"], f"From: {USER}\r\nSubject: cheap watches\r\n\r\nbuy now\r\n")
    queued = wait_until(lambda: s.events("queued"), what="the message queued")
    qid = queued[0]["id"]
    report = (HERE / "../../crates/reportbox/testdata/arf-yahoo.eml").read_bytes().replace(
        b"0001765119480123456", qid.encode())
    with smtplib.SMTP("127.0.0.1", s.mx, timeout=20) as c:
        c.sendmail("feedbackloop@yahoo-inc.com", ["fbl@local.test"], report)
    complaint = wait_until(lambda: s.events("complaint"), what="the complaint matched")
    assert complaint[0]["account"] == USER and complaint[0]["id"] == qid
    contained = s.api("GET", "/api/containment")[1]
    assert contained[0]["contained"]["findings"][0]["signal"] == "complaints", contained
    # A broken one is set aside with its reason, never bounced.
    broken = report.replace(b"Feedback-Type: abuse\r\n", b"")
    with smtplib.SMTP("127.0.0.1", s.mx, timeout=20) as c:
        c.sendmail("feedbackloop@yahoo-inc.com", ["fbl@local.test"], broken)
    wait_until(lambda: s.events("report_malformed", code="bad_arf"), what="the broken report set aside")
    assert [m["code"] for m in s.api("GET", "/api/reports")[1]["malformed"]] == ["bad_arf"]


class Postfix:
    """A throw-away Postfix (bench/postfix_instance.sh) as the outside
    world: it takes anything for far.test at SMTP time, knows only
    friend@far.test, so it bounces the rest after accepting it, and
    sends its DSNs to our port 25 (its relayhost)."""

    def __init__(self, port: int, our_mx: int):
        # Postfix's daemons run as `postfix`: a directory it can enter.
        self.dir = Path(tempfile.mkdtemp(prefix="pc-postfix-", dir="/var/tmp"))
        os.chmod(self.dir, 0o755)
        (self.dir / "etc").mkdir()
        (self.dir / "etc/vmailbox").write_text("friend@far.test far.test/friend/\n")
        env = dict(os.environ, PF_EXTRA=f"""virtual_mailbox_domains = far.test
virtual_mailbox_maps = texthash:{self.dir}/etc/vmailbox
smtpd_reject_unlisted_recipient = no
relayhost = [127.0.0.1]:{our_mx}
""")
        subprocess.run(["bash", str(ROOT / "bench/postfix_instance.sh"), "start", str(self.dir), str(port)],
                       check=True, env=env, capture_output=True)
        wait_port(port)

    def stop(self):
        subprocess.run(["bash", str(ROOT / "bench/postfix_instance.sh"), "stop", str(self.dir)], capture_output=True)
        subprocess.run(["rm", "-rf", str(self.dir)])


def test_a_dsn_mailed_back_by_a_remote_postfix_counts_against_the_account(make_server):
    postfix_port = free_port()
    s = make_server(config(postfix_port), local_test=False, start=False)
    postfix = Postfix(postfix_port, s.mx)
    try:
        s.start()
        add_user(s, USER)
        with smtplib.SMTP("127.0.0.1", s.sub, timeout=20) as c:
            c.starttls(context=insecure_tls())
            c.ehlo()
            c.login(USER, PASSWORD)
            c.sendmail(USER, ["friend@far.test", "nobody@far.test"], f"From: {USER}\r\nSubject: hello\r\n\r\nhi\r\n")
        qid = wait_until(lambda: s.events("queued"), what="the message queued")[0]["id"]
        # Postfix accepted both recipients; its virtual agent then fails
        # nobody@far.test and mails the DSN from <> to our port 25.
        dsn = s.wait_message("alice", b"report-type=delivery-status", timeout=60)
        assert qid.encode() in dsn and b"Status: 5.1.1" in dsn
        returned = wait_until(lambda: s.events("dsn_returned"), what="the DSN matched to the account")
        assert returned[0]["account"] == USER and returned[0]["id"] == qid and returned[0]["failed"] == 1
        sums = json.loads(s.cli("account", "show", USER).stdout)["tally"]["sums"]
        assert sums.get("ur") == 1 and sums.get("bo") == 1, sums
        # The next hop itself took both recipients: no 5.1.x there.
        assert s.events("delivered", id=qid)[0]["delivered"] == 2
    finally:
        postfix.stop()


class DumpingSink:
    """Postfix's smtp-sink writing every message it accepts to a file of
    its own: the outside world, counted."""

    def __init__(self):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pc-sink-", dir="/var/tmp"))
        os.chmod(self.dir, 0o777)
        self.proc = subprocess.Popen(["smtp-sink", "-u", "postfix", "-d", f"{self.dir}/%H%M%S.", f"127.0.0.1:{self.port}", "100"])
        wait_port(self.port)

    def subjects(self) -> list[str]:
        out = []
        for f in self.dir.iterdir():
            for line in f.read_text(errors="replace").splitlines():
                if line.startswith("Subject: "):
                    out.append(line[len("Subject: "):])
                    break
        return out

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        subprocess.run(["rm", "-rf", str(self.dir)])


@pytest.fixture
def dumping_sink():
    d = DumpingSink()
    yield d
    d.close()


def test_nothing_is_lost_when_the_server_is_killed_after_a_hold_and_during_a_release(make_server, dumping_sink):
    """SIGKILL right after a hold, and again while a release is letting
    the messages go: every message is still queued (held) after each
    restart, and after the release each reached the outside world. A
    message can reach it twice only if the kill fell between the next
    hop's 250 and our record of it (at most the ones under way then)."""
    n = 100
    s = server_with_alice(make_server, config(9, extra="volume_floor_messages_per_hour = 1000\n"))
    with smtplib.SMTP("127.0.0.1", s.sub, timeout=20) as c:
        c.starttls(context=insecure_tls())
        c.ehlo()
        c.login(USER, PASSWORD)
        for i in range(n):
            c.sendmail(USER, ["friend@far.test"], f"From: {USER}\r\nSubject: kept {i}\r\n\r\nhi\r\n")
    held = json.loads(s.cli("account", "hold", USER).stdout)["held"]
    s.kill()
    assert len(held) == n, held
    s.config.write_text(s.config.read_text().replace('smarthost = "127.0.0.1:9"', f'smarthost = "127.0.0.1:{dumping_sink.port}"'))
    s.start()
    shown = json.loads(s.cli("account", "show", USER).stdout)
    assert sorted(shown["held"]) == sorted(held) and shown["queued"] == shown["held"], shown
    assert shown["tally"]["contained"]["action"] == "hold"
    assert dumping_sink.subjects() == []
    # The release lets each message go as it lifts its mark; kill the
    # server when about half have gone and half are still held.
    marks = s.data / "spool" / "hold"
    release = subprocess.Popen(s.cli_args("account", "release", USER), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while (left := len(list(marks.iterdir()))) > n // 2 and time.monotonic() < deadline:
        pass  # no sleep: the release takes well under a second
    s.kill()
    release.wait(timeout=30)
    assert 0 < left < n, left
    s.start()
    # Nothing lost: what has not left is still queued, and held.
    status, queue = s.api("GET", "/api/queue")
    sent = set(dumping_sink.subjects())
    queued = {m["id"] for m in queue}
    assert len(queued) + len(sent) >= n, (len(queued), len(sent))
    shown = json.loads(s.cli("account", "show", USER).stdout)
    # Cut short before the account was marked free: still on hold, as
    # the operator sees it, with the rest of its messages.
    assert shown["held"] and shown["tally"]["contained"]["action"] == "hold", shown
    # The operator releases again: the rest leave.
    r = s.cli("account", "release", USER)
    assert r.returncode == 0, r.stderr
    wait_until(lambda: len(set(dumping_sink.subjects())) == n, timeout=60, what=f"all {n} messages at the receiver")
    subjects = dumping_sink.subjects()
    assert sorted(set(subjects)) == sorted(f"kept {i}" for i in range(n))
    # Duplicates only from attempts under way at the kill.
    assert len(subjects) - n <= n - left, len(subjects)
    assert s.api("GET", "/api/containment")[1] == []
