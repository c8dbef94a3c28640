"""Outbound delivery: mail submitted on 587 for another domain is routed by
its MX records (served by NSD) to that domain's server — a second
portcullis — DKIM-signed and verified there; refused recipients bounce
with one RFC 3464 report each; null MX bounces at once; a next hop that is
down is retried until it answers."""

import email
import email.policy
import re
import subprocess

import pytest

from conftest import PASSWORD, add_user, submit, timestamp, wait_until
from dnsserver import DnsServer


# The remote domain's server refuses unknown users without a tarpit: its
# tarpit (test_t10) would hold every reply after a refused recipient for
# a second, which is no part of what these tests are about.
REMOTE = '[[domain]]\nname = "remote.test"\n\n[limits]\ntarpit_step_ms = 0\n'


def build_pair(make_server, workdir, retry_secs):
    remote = make_server(REMOTE, start=False, local_test=False)
    ours = make_server(
        f"[delivery]\nport = {remote.mx}\nretry_base_secs = {retry_secs}\nretry_max_secs = {retry_secs * 2}\n",
        start=False,
    )
    add_user(ours, "alice@local.test")
    add_user(remote, "bob@remote.test")
    add_user(remote, "carol@remote.test")
    dkim = ours.cli("dkim", "keygen", "--domain", "local.test", "--selector", "s1", "--algorithm", "ed25519").stdout.strip()
    zones = {
        "test": "",
        "remote.test": "@ IN MX 10 mx.remote.test.\nmx IN A 127.0.0.1\n",
        "nullmx.test": "@ IN MX 0 .\n",
        "local.test": '@ IN TXT "v=spf1 ip4:127.0.0.1 -all"\n' + dkim + "\n",
    }
    dns = DnsServer(workdir / "pair-dns", zones).start()
    for s in (ours, remote):
        s.use_dns(dns.port)
    return ours, remote, dns


@pytest.fixture
def pair(make_server, workdir):
    ours, remote, dns = build_pair(make_server, workdir, 1)
    yield ours, remote
    dns.stop()


@pytest.fixture
def slow_pair(make_server, workdir):
    """Retries only every five minutes: what happens sooner is the
    operator's doing."""
    ours, remote, dns = build_pair(make_server, workdir, 300)
    yield ours, remote
    dns.stop()


def from_alice(server, rcpts, subject="hello", rcpt_options=()):
    rcpts = [rcpts] if isinstance(rcpts, str) else rcpts
    body = f"From: alice@local.test\r\nTo: {', '.join(rcpts)}\r\nSubject: {subject}\r\n\r\nHi there.\r\n"
    return submit(server, rcpts, body, rcpt_options=rcpt_options)


def bobs(remote, timeout=20):
    """bob@remote.test's first message, waited for."""
    [msg] = remote.wait_messages("bob", 1, timeout=timeout, domain="remote.test")
    return msg


def test_submitted_mail_reaches_the_remote_domain_signed(pair):
    ours, remote = pair
    remote.start()
    ours.start()
    from_alice(ours, "bob@remote.test")
    msg = bobs(remote)
    assert b"with ESMTPS" in msg, "opportunistic STARTTLS between the servers"
    assert b"dkim=pass header.d=local.test" in msg
    assert b"spf=pass" in msg


def test_one_refused_recipient_gets_one_dsn(pair):
    ours, remote = pair
    remote.start()
    ours.start()
    from_alice(ours, ["bob@remote.test", "nobody@remote.test", "carol@remote.test"])
    assert bobs(remote)
    assert remote.wait_messages("carol", 1, domain="remote.test")
    [dsn] = ours.wait_messages("alice", 1)
    report = email.message_from_bytes(dsn, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    parts = list(report.iter_parts())
    status = parts[1]
    assert status.get_content_type() == "message/delivery-status"
    text = status.as_string()
    assert "Final-Recipient: rfc822; nobody@remote.test" in text
    assert "Status: 5.1.1" in text
    assert "bob@remote.test" not in text and "carol@remote.test" not in text
    # With the queue empty (the report delivered too) no other report can
    # come.
    wait_until(lambda: ours.queue_size() == 0, 10, "an empty queue")
    assert len(ours.messages("alice")) == 1


def test_null_mx_bounces_at_once(pair):
    ours, remote = pair
    ours.start()
    from_alice(ours, "someone@nullmx.test")
    [dsn] = ours.wait_messages("alice", 1)
    assert b"Status: 5.1.10" in dsn
    # At once: bounced on the first attempt, never deferred to a retry.
    assert ours.events("delivered", bounced=1)
    assert ours.events("deferred") == []


def test_a_next_hop_that_is_down_is_retried(pair):
    ours, remote = pair
    ours.start()
    from_alice(ours, "bob@remote.test")
    ours.wait_event("deferred")
    remote.start()
    msg = bobs(remote, timeout=30)
    assert b"Subject: hello" in msg


def test_sigkill_during_delivery_loses_nothing(pair):
    """Each recipient a next hop accepted is recorded before anything else
    happens, so a restart resumes with the others. SMTP itself leaves a
    window (the 250 arrives, the record is not yet on disk; RFC 1047): a
    kill there can repeat one in-flight delivery, never more."""
    import random

    ours, remote = pair
    remote.start()
    ours.start()

    def subjects():
        out = []
        for m in remote.messages("bob", "remote.test"):
            for line in m.split(b"\r\n"):
                if line.startswith(b"Subject: msg-"):
                    out.append(line)
        return out

    n = 40
    for i in range(n):
        from_alice(ours, "bob@remote.test", subject=f"msg-{i:03d}")
    rng = random.Random(5)
    kills = 0
    # Kill at random points of the deliveries: each time a random number
    # (1 to 5) more of them have reached the next hop, or all have.
    for _ in range(3):
        target = min(len(set(subjects())) + rng.randint(1, 5), n)
        wait_until(lambda: len(set(subjects())) >= target, 30, f"{target} deliveries")
        ours.kill()
        kills += 1
        ours.start()

    wait_until(lambda: len(set(subjects())) == n, 60, f"{n} distinct deliveries")
    got = subjects()
    assert len(set(got)) == n, f"lost {n - len(set(got))}"
    duplicates = len(got) - len(set(got))
    # In-flight deliveries at the moment of a kill are the only ones that
    # may repeat.
    assert duplicates <= kills * 4, duplicates


def test_queue_flush_retries_a_deferred_message_now(slow_pair):
    ours, remote = slow_pair
    ours.start()
    from_alice(ours, "bob@remote.test")
    [deferred] = ours.wait_event("deferred")
    # The server's own schedule: the next attempt is five minutes away,
    # so a delivery within the test is the flush's doing.
    assert deferred["attempts"] == 1 and deferred["delay_s"] == 300, deferred
    [qid] = [l.split()[0] for l in ours.queued()]
    shown = ours.cli("queue", "show", qid).stdout
    assert "attempts: 1" in shown and "waiting  <bob@remote.test>  last reply: connect to" in shown, shown
    # Times in RFC 3339 UTC, not epoch seconds.
    assert re.search(r"next attempt at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", shown), shown
    assert re.search(r'"received_at": "\d{4}-\d\d-\d\dT[\d:]{8}Z"', shown), shown
    remote.start()
    assert remote.messages("bob", "remote.test") == []
    assert ours.cli("queue", "flush").returncode == 0
    assert bobs(remote, timeout=10)


def test_a_held_message_waits_until_released(slow_pair):
    ours, remote = slow_pair
    ours.start()
    from_alice(ours, "bob@remote.test")
    ours.wait_event("deferred")
    [qid] = [l.split()[0] for l in ours.queued()]
    assert ours.cli("queue", "hold", qid).returncode == 0
    assert "(held)" in ours.cli("queue", "list").stdout
    remote.start()
    ours.cli("queue", "flush")
    # The flush hands the message to the delivery loop, which sees the
    # hold and keeps it back (and says so).
    ours.wait_event("held", id=qid)
    assert remote.messages("bob", "remote.test") == []
    assert ours.cli("queue", "release", qid).returncode == 0
    assert bobs(remote, timeout=10)


def cert_pin(server) -> str:
    cert = server.data / "tls" / "cert.pem"
    out = subprocess.run(f"openssl x509 -in {cert} -outform DER | sha256sum", shell=True, capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


def smarthost_pair(make_server, workdir, tls_keys: str):
    """A remote portcullis as our smarthost (its self-signed certificate
    generated on its start), and ours logging in to it."""
    remote = make_server('[[domain]]\nname = "remote.test"\n', start=False, local_test=False)
    add_user(remote, "relay@remote.test")
    add_user(remote, "bob@remote.test")
    assert remote.cli("user", "grant", "relay@remote.test", "@local.test").returncode == 0
    remote.start()
    secret = workdir / "smarthost.pw"
    secret.write_text(PASSWORD + "\n")
    ours = make_server(
        f'[delivery]\nsmarthost = "127.0.0.1:{remote.sub}"\nsmarthost_user = "relay@remote.test"\n'
        f'smarthost_password_file = "{secret}"\nretry_base_secs = 1\n{tls_keys.format(pin=cert_pin(remote))}',
        start=False,
    )
    add_user(ours, "alice@local.test")
    return ours.start(), remote


def test_smarthost_with_auth_and_required_tls(make_server, workdir):
    ours, remote = smarthost_pair(make_server, workdir, 'smarthost_pin_sha256 = "{pin}"\n')
    # No MX records anywhere: the smarthost is the only way out.
    from_alice(ours, "bob@remote.test")
    msg = bobs(remote)
    assert b"with ESMTPSA" in msg
    assert b"(authenticated as relay@remote.test)" in msg


@pytest.mark.parametrize("keys", ["", 'smarthost_pin_sha256 = "' + "ab" * 32 + '"\n'], ids=["unverifiable", "wrong-pin"])
def test_smarthost_password_never_goes_to_an_unproven_server(make_server, workdir, keys):
    # A self-signed certificate no CA vouches for, or not the pinned one:
    # the login is never attempted, the message waits in the queue.
    ours, remote = smarthost_pair(make_server, workdir, keys)
    from_alice(ours, "bob@remote.test")
    # Two attempts, the first and its retry, each over and deferred.
    ours.wait_event("deferred", count=2)
    assert remote.messages("bob", "remote.test") == []
    assert remote.metric("portcullis_auth_attempts_total") == 0
    listing = ours.cli("queue", "list").stdout
    assert "bob@remote.test" in listing, listing


@pytest.mark.parametrize("notify,expect_report", [(None, True), ("NOTIFY=DELAY", True), ("NOTIFY=NEVER", False)])
def test_a_late_message_gets_one_delay_notice_if_wanted(make_server, workdir, notify, expect_report):
    ours, remote, dns = build_pair(make_server, workdir, 1)
    ours.config.write_text(ours.config.read_text().replace("[delivery]\n", "[delivery]\ndelay_notice_secs = 1\n"))
    try:
        ours.start()  # the remote domain's server stays down
        from_alice(ours, "bob@remote.test", subject="late", rcpt_options=[notify] if notify else [])
        if expect_report:
            # The notice, then two more deferrals (that attempt's and the
            # next retry's): a retry after the notice sends none again.
            [notice] = ours.wait_event("bounce_queued", timeout=20)
            wait_until(lambda: len(deferrals_after(ours, notice)) >= 2, 20, "a retry after the delay notice")
            ours.wait_event("delivered", id=notice["id"])
            assert len(ours.events("bounce_queued")) == 1
            reports = ours.messages("alice")
            assert len(reports) == 1, "one delay notice, not one per retry"
            assert b"Action: delayed" in reports[0] and b"Delayed Mail" in reports[0]
        else:
            # By the third attempt the message is two seconds late, past
            # delay_notice_secs: a notice would have been queued before
            # that attempt's deferral.
            ours.wait_event("deferred", count=3, timeout=20)
            assert ours.events("bounce_queued") == []
            assert ours.messages("alice") == []
    finally:
        dns.stop()


def deferrals_after(server, event: dict) -> list[dict]:
    """The deferred events logged after `event`."""
    events = server.events()
    return [e for e in events[events.index(event) + 1:] if e.get("event") == "deferred"]


def test_notify_without_failure_gets_no_bounce(pair):
    ours, remote = pair
    remote.start()
    ours.start()
    from_alice(ours, "nobody@remote.test", subject="late", rcpt_options=["NOTIFY=SUCCESS"])
    ours.wait_event("delivered", bounced=1, timeout=20)
    # A failure report is queued before the outcome is logged: none was.
    assert ours.events("bounce_queued") == []
    assert ours.messages("alice") == []


def test_a_next_hop_answering_451_is_retried_and_later_succeeds(pair):
    ours, remote = pair
    # Postfix's smtp-sink on the remote domain's port, answering RCPT with
    # a 4xx; then the real server comes up in its place.
    sink = subprocess.Popen(["smtp-sink", "-u", "postfix", "-r", "RCPT", f"127.0.0.1:{remote.mx}", "10"])
    try:
        ours.start()
        from_alice(ours, "bob@remote.test", subject="after-451")
        ours.wait_event("remote_result", result="deferred", status=lambda s: s.startswith("4."), timeout=20)
    finally:
        sink.terminate()
        sink.wait()
    remote.start()
    msg = bobs(remote, timeout=30)
    assert b"Subject: after-451" in msg


def test_required_tls_is_not_downgraded(make_server, workdir):
    ours, remote, dns = build_pair(make_server, workdir, 300)
    ours.config.write_text(ours.config.read_text().replace("[delivery]\n", '[delivery]\nrequire_tls_for = ["remote.test"]\n'))
    # smtp-sink offers no STARTTLS: the message must wait, not go in clear.
    sink = subprocess.Popen(["smtp-sink", "-u", "postfix", "-c", f"127.0.0.1:{remote.mx}", "10"], stdout=subprocess.PIPE, text=True)
    try:
        ours.start()
        from_alice(ours, "bob@remote.test")
        ours.wait_event("deferred", reason=lambda r: "TLS required" in r, timeout=20)
        ours.stop()
        assert len(ours.queued()) == 1
    finally:
        sink.terminate()
        sink.wait()
        dns.stop()


def test_deliveries_to_one_domain_are_paced(make_server, workdir):
    ours, remote, dns = build_pair(make_server, workdir, 1)
    ours.config.write_text(ours.config.read_text().replace("[delivery]\n", "[delivery]\nmax_per_domain_per_minute = 60\n"))
    try:
        remote.start()
        ours.start()
        for i in range(3):
            from_alice(ours, "bob@remote.test", subject=f"paced-{i}")
        assert len(remote.wait_messages("bob", 3, timeout=20, domain="remote.test")) == 3
        # 60 a minute: one a second, so the third transaction starts 2 s
        # after the first. Measured on the next hop's clock (its MAIL
        # events: the transactions may share a kept connection), with
        # 0.5 s of slack for connection set-up.
        mails = sorted(timestamp(e) for e in remote.events("mail"))
        assert len(mails) == 3 and mails[2] - mails[0] >= 1.5, mails
    finally:
        dns.stop()
