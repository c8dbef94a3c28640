"""Issue 29: a stolen password sends almost nothing. Containment of
compromised accounts over the real submission port (smtplib as the
bot), Postfix's smtp-sink as the outside world (our smarthost), a
webhook receiver that checks the HMAC, real rspamd scanning submitted
mail (GTUBE), and held mail across a restart.

The windows are driven with the clock passed in by the crate tests
(crates/containment/src/tests.rs: the fast and slow bots, the bulk and
new accounts over a synthetic week); here the scenarios that need the
real parts.
"""

import hashlib
import hmac
import http.server
import json
import smtplib
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import PASSWORD, add_user, free_port, insecure_tls, wait_until
from test_t15_class_of_service import dns_server, rspamd  # noqa: F401  (the fixtures)

HERE = Path(__file__).parent
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
