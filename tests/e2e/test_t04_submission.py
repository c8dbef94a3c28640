"""Submission on 587 (STARTTLS) and 465 (implicit TLS): always
authenticated, senders owned, recipients counted, every message traceable."""

import json
import re
import smtplib
import time

import pytest

from conftest import PASSWORD, add_user, insecure_tls, login, submit, swaks
from smtpraw import Raw

SUBMISSION_CONFIG = """
[limits]
max_recipients = 200

[submission]
recipients_per_hour = 100

[auth]
failure_delay_ms = 20
max_failure_delay_ms = 320
"""


@pytest.fixture
def msa(make_server):
    s = make_server(SUBMISSION_CONFIG, start=False)
    add_user(s, "alice@local.test")
    add_user(s, "bob@local.test")
    assert s.cli("user", "grant", "alice@local.test", "sales@local.test").returncode == 0
    return s.start()


def message(sender="alice@local.test", to="carol@local.test", extra=""):
    return f"From: {sender}\r\nTo: {to}\r\nSubject: hi\r\n{extra}\r\nbody\r\n"


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_swaks_authenticates_over_starttls_on_587(msa, mech):
    r = swaks(
        "--server", f"127.0.0.1:{msa.sub}", "-tls", "--auth", mech,
        "--auth-user", "alice@local.test", "--auth-password", PASSWORD,
        "--from", "alice@local.test", "--to", f"dan{mech}@local.test",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "235 2.7.0" in r.stdout
    [msg] = msa.wait_messages(f"dan{mech.lower()}", 1)
    assert b"with ESMTPSA" in msg
    assert b"(authenticated as alice@local.test)" in msg
    assert b"(using TLSv1.3 with cipher" in msg


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_swaks_authenticates_over_implicit_tls_on_465(msa, mech):
    r = swaks(
        "--server", f"127.0.0.1:{msa.subs}", "-tlsc", "--auth", mech,
        "--auth-user", "alice@local.test", "--auth-password", PASSWORD,
        "--from", "alice@local.test", "--to", f"erin{mech}@local.test",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert msa.wait_messages(f"erin{mech.lower()}", 1)


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_smtplib_authenticates_and_submits(msa, mech):
    with smtplib.SMTP("127.0.0.1", msa.sub) as s:
        s.starttls(context=insecure_tls())
        s.ehlo()
        s.user, s.password = "alice@local.test", PASSWORD
        code, _ = s.auth(mech, getattr(s, f"auth_{mech.lower()}"))
        assert code == 235
        s.sendmail("alice@local.test", ["frank@local.test"], message(to="frank@local.test"))
    with smtplib.SMTP_SSL("127.0.0.1", msa.subs, context=insecure_tls()) as s:
        s.login("alice@local.test", PASSWORD)
        s.sendmail("alice@local.test", ["frank@local.test"], message(to="frank@local.test"))
    assert len(msa.wait_messages("frank", 2)) == 2


def test_no_auth_before_starttls(msa):
    c = Raw(msa.sub)
    code, ehlo = c.cmd("EHLO client.test")
    assert "AUTH" not in ehlo
    code, text = c.cmd("AUTH PLAIN AGFsaWNlQGxvY2FsLnRlc3QAeA==")
    assert code == 538 and "5.7.11" in text
    r = swaks("--server", f"127.0.0.1:{msa.sub}", "--auth", "PLAIN", "--auth-user", "alice@local.test",
              "--auth-password", PASSWORD, "--to", "x@local.test")
    assert r.returncode != 0


def test_submission_without_auth_gets_530_even_to_local(msa):
    with smtplib.SMTP("127.0.0.1", msa.sub) as s:
        s.starttls(context=insecure_tls())
        s.ehlo()
        code, text = s.mail("alice@local.test")
        assert code == 530 and b"5.7.0" in text


def test_wrong_envelope_sender_is_refused_naming_it(msa):
    with login(msa.sub) as s:
        code, text = s.mail("bob@local.test")
        assert code == 553 and b"5.7.1" in text and b"bob@local.test" in text
        s.rset()
        assert s.mail("sales@local.test")[0] == 250


def test_wrong_from_header_is_refused(msa):
    with login(msa.sub) as s:
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail("alice@local.test", ["x@local.test"], message(sender="Bob <bob@local.test>"))
        assert e.value.smtp_code == 553 and b"bob@local.test" in e.value.smtp_error


def test_quota_counts_recipients_in_one_message(msa):
    with login(msa.sub) as s:
        s.mail("alice@local.test")
        codes = [s.rcpt(f"r{i}@remote.test")[0] for i in range(101)]
    assert codes[:100] == [250] * 100
    assert codes[100] == 451


def test_quota_counts_recipients_across_messages_and_sessions(msa):
    refused = None
    for i in range(101):
        if i % 25 == 0:
            s = login(msa.sub, "bob@local.test")
        try:
            s.sendmail("bob@local.test", [f"r{i}@local.test"], message("bob@local.test", f"r{i}@local.test"))
        except smtplib.SMTPRecipientsRefused as e:
            code, text = e.recipients[f"r{i}@local.test"]
            refused = (i, code, text)
            break
    assert refused is not None
    i, code, text = refused
    assert i == 100 and code == 451 and b"4.7.1" in text and b"resets at" in text


def test_trace_finds_a_message_by_message_id_and_missing_headers_are_added(msa):
    submit(msa, "gina@local.test", message(to="gina@local.test", extra="Message-ID: <trace-1@local.test>\r\n"))
    submit(msa, "gina@local.test", message(to="gina@local.test"))
    msgs = msa.wait_messages("gina", 2)
    r = msa.cli("trace", "trace-1@local.test")
    assert r.returncode == 0, r.stderr
    [rec] = [json.loads(l) for l in r.stdout.splitlines()]
    assert rec["account"] == "alice@local.test"
    assert rec["recipients"] == ["gina@local.test"]
    assert rec["client"] == "127.0.0.1"
    generated = [m for m in msgs if b"trace-1" not in m][0]
    assert re.search(rb"\r\nDate: ", generated)
    mid = re.search(rb"\r\nMessage-ID: <([^>]+)>", generated).group(1).decode()
    assert msa.cli("trace", mid).returncode == 0
    assert len(msa.cli("trace", "alice@local.test").stdout.splitlines()) == 2


def test_brute_force_slows_down_and_locks_but_others_still_log_in(msa):
    timings, codes = [], []
    for i in range(50):
        c = smtplib.SMTP("127.0.0.1", msa.sub, timeout=10)
        c.starttls(context=insecure_tls())
        c.ehlo()
        t0 = time.monotonic()
        c.user, c.password = "alice@local.test", f"wrong{i}"
        try:
            # One mechanism per attempt: login() would try PLAIN then LOGIN.
            c.auth("PLAIN", c.auth_plain)
            codes.append(235)
        except smtplib.SMTPAuthenticationError as e:
            codes.append(e.smtp_code)
        timings.append(time.monotonic() - t0)
        c.close()
    assert 235 not in codes
    assert codes[:10] == [535] * 10
    assert set(codes[10:]) == {454}, codes
    # Each failure waits longer than the one before, up to the cap: the
    # server holds the nth answer at least min(20 ms * 2^n, 320 ms). Only
    # these lower bounds are asserted (a busy machine can make any answer
    # slower, never faster); the schedule itself, cap included, is the
    # throttle's unit test (crates/accounts/src/throttle.rs).
    floors = [min(0.020 * 2**n, 0.320) for n in range(10)]
    assert all(t >= f for t, f in zip(timings[:10], floors)), list(zip(timings[:10], floors))
    # Locked out, the right password does not help this address...
    with pytest.raises(smtplib.SMTPAuthenticationError):
        login(msa.sub)
    # ...but the account's owner elsewhere still gets in.
    with login(msa.sub, source="127.0.0.2") as s:
        assert s.mail("alice@local.test")[0] == 250


def test_user_list_and_import(msa, workdir):
    import crypt

    hashed = crypt.crypt("imported-pw", crypt.mksalt(crypt.METHOD_SHA512))
    f = workdir / "passwd"
    f.write_text(f"henry@local.test:{{SHA512-CRYPT}}{hashed}:1000:1000::/home/henry::\nbad line\n")
    r = msa.cli("user", "import", str(f))
    assert r.returncode == 0 and "1 added" in r.stdout, r.stdout + r.stderr
    assert "henry@local.test" in msa.cli("user", "list").stdout
    with login(msa.sub, "henry@local.test", "imported-pw") as s:
        assert s.mail("henry@local.test")[0] == 250


def test_local_sender_on_port_25_is_sent_to_587(msa):
    r = swaks("--server", f"127.0.0.1:{msa.mx}", "--from", "alice@local.test", "--to", "ivan@local.test")
    assert r.returncode != 0
    assert "553 5.7.1" in r.stdout and "587" in r.stdout


def test_listed_legacy_network_may_use_port_25_to_local_recipients_only(make_server):
    s = make_server('[submission]\nport25_networks = ["127.0.0.0/8"]\n')
    r = swaks("--server", f"127.0.0.1:{s.mx}", "--from", "printer@local.test", "--to", "ivan@local.test")
    assert r.returncode == 0, r.stdout
    assert s.wait_messages("ivan", 1)
    r = swaks("--server", f"127.0.0.1:{s.mx}", "--from", "printer@local.test", "--to", "x@remote.test")
    assert r.returncode != 0 and "554 5.7.1" in r.stdout


def test_quota_and_auth_failures_show_in_metrics(msa):
    with login(msa.sub) as s:
        s.mail("alice@local.test")
        for i in range(101):
            s.rcpt(f"m{i}@remote.test")
    c = smtplib.SMTP("127.0.0.1", msa.sub)
    c.starttls(context=insecure_tls())
    c.ehlo()
    c.user, c.password = "alice@local.test", "wrong"
    with pytest.raises(smtplib.SMTPAuthenticationError):
        c.auth("PLAIN", c.auth_plain)
    c.close()
    samples = msa.metrics()
    assert samples[("portcullis_quota_deferrals_total", (("kind", "recipients"),))] == 1
    assert samples[("portcullis_auth_attempts_total", (("result", "failed"),))] == 1
    assert samples[("portcullis_auth_attempts_total", (("result", "ok"),))] >= 1
    assert samples[("portcullis_messages_rejected_total", (("code", "4.7.1"), ("listener", "submission")))] == 1
    assert samples[("portcullis_connections_total", (("listener", "submission"), ("outcome", "admitted")))] >= 2
