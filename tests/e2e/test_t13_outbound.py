"""Outbound delivery: mail submitted on 587 for another domain is routed by
its MX records (served by NSD) to that domain's server — a second
portcullis — DKIM-signed and verified there; refused recipients bounce
with one RFC 3464 report each; null MX bounces at once; a next hop that is
down is retried until it answers."""

import email
import email.policy
import smtplib
import subprocess
import time
import urllib.request

import pytest

from dnsserver import DnsServer
from test_t04_submission import PASSWORD, insecure_tls


def user(server, address):
    subprocess.run(server.cli_args("user", "add", address, "--password-stdin"), input=PASSWORD + "\n", text=True, check=True, capture_output=True)


def build_pair(make_server, workdir, retry_secs):
    remote = make_server('[[domain]]\nname = "remote.test"\n', start=False, local_test=False)
    ours = make_server(
        f"[delivery]\nport = {remote.mx}\nretry_base_secs = {retry_secs}\nretry_max_secs = {retry_secs * 2}\n",
        start=False,
    )
    user(ours, "alice@local.test")
    user(remote, "bob@remote.test")
    user(remote, "carol@remote.test")
    dkim = ours.cli("dkim", "keygen", "--domain", "local.test", "--selector", "s1", "--algorithm", "ed25519").stdout.strip()
    zones = {
        "test": "",
        "remote.test": "@ IN MX 10 mx.remote.test.\nmx IN A 127.0.0.1\n",
        "nullmx.test": "@ IN MX 0 .\n",
        "local.test": '@ IN TXT "v=spf1 ip4:127.0.0.1 -all"\n' + dkim + "\n",
    }
    dns = DnsServer(workdir / "pair-dns", zones).start()
    for s in (ours, remote):
        s.config.write_text(s.config.read_text().replace(f'nameservers = ["127.0.0.1:', f'nameservers = ["127.0.0.1:{dns.port}"] # was ["127.0.0.1:', 1))
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


def submit(server, rcpts, subject="hello"):
    body = f"From: alice@local.test\r\nTo: {', '.join(rcpts)}\r\nSubject: {subject}\r\n\r\nHi there.\r\n"
    with smtplib.SMTP("127.0.0.1", server.sub) as c:
        c.starttls(context=insecure_tls())
        c.login("alice@local.test", PASSWORD)
        return c.sendmail("alice@local.test", rcpts, body)


def wait_for(path_fn, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = path_fn()
        if got:
            return got
        time.sleep(0.1)
    return path_fn()


def maildir(server, domain, local):
    d = server.data / "mail" / domain / local / "new"
    return [p.read_bytes() for p in sorted(d.iterdir())] if d.is_dir() else []


def test_submitted_mail_reaches_the_remote_domain_signed(pair):
    ours, remote = pair
    remote.start()
    ours.start()
    submit(ours, ["bob@remote.test"])
    [msg] = wait_for(lambda: maildir(remote, "remote.test", "bob"))
    assert b"with ESMTPS" in msg, "opportunistic STARTTLS between the servers"
    assert b"dkim=pass header.d=local.test" in msg
    assert b"spf=pass" in msg


def test_one_refused_recipient_gets_one_dsn(pair):
    ours, remote = pair
    remote.start()
    ours.start()
    submit(ours, ["bob@remote.test", "nobody@remote.test", "carol@remote.test"])
    assert wait_for(lambda: maildir(remote, "remote.test", "bob"))
    assert wait_for(lambda: maildir(remote, "remote.test", "carol"))
    [dsn] = wait_for(lambda: maildir(ours, "local.test", "alice"))
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
    time.sleep(1)
    assert len(maildir(ours, "local.test", "alice")) == 1


def test_null_mx_bounces_at_once(pair):
    ours, remote = pair
    ours.start()
    t0 = time.time()
    submit(ours, ["someone@nullmx.test"])
    [dsn] = wait_for(lambda: maildir(ours, "local.test", "alice"), timeout=10)
    assert time.time() - t0 < 5
    assert b"Status: 5.1.10" in dsn


def test_a_next_hop_that_is_down_is_retried(pair):
    ours, remote = pair
    ours.start()
    submit(ours, ["bob@remote.test"])
    time.sleep(2)
    assert "deferred" in ours.log.read_text()
    remote.start()
    [msg] = wait_for(lambda: maildir(remote, "remote.test", "bob"), timeout=30)
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
    n = 40
    for i in range(n):
        submit(ours, ["bob@remote.test"], subject=f"msg-{i:03d}")
    rng = random.Random(5)
    kills = 0
    for _ in range(3):
        time.sleep(rng.uniform(0.05, 0.3))
        ours.kill()
        kills += 1
        ours.start()

    def subjects():
        out = []
        for m in maildir(remote, "remote.test", "bob"):
            for line in m.split(b"\r\n"):
                if line.startswith(b"Subject: msg-"):
                    out.append(line)
        return out

    deadline = time.time() + 60
    while time.time() < deadline and len(set(subjects())) < n:
        time.sleep(0.2)
    got = subjects()
    assert len(set(got)) == n, f"lost {n - len(set(got))}"
    duplicates = len(got) - len(set(got))
    # In-flight deliveries at the moment of a kill are the only ones that
    # may repeat.
    assert duplicates <= kills * 4, duplicates


def queued_ids(server):
    return [l.split()[0] for l in server.cli("queue", "list").stdout.splitlines() if "message(s) queued" not in l]


def test_queue_flush_retries_a_deferred_message_now(slow_pair):
    ours, remote = slow_pair
    ours.start()
    submit(ours, ["bob@remote.test"])
    time.sleep(1.5)
    [qid] = queued_ids(ours)
    shown = ours.cli("queue", "show", qid).stdout
    assert "attempts: 1" in shown and "waiting  <bob@remote.test>  last reply: connect to" in shown, shown
    remote.start()
    time.sleep(1.5)
    assert maildir(remote, "remote.test", "bob") == []
    assert ours.cli("queue", "flush").returncode == 0
    assert wait_for(lambda: maildir(remote, "remote.test", "bob"), timeout=10)


def test_a_held_message_waits_until_released(slow_pair):
    ours, remote = slow_pair
    ours.start()
    submit(ours, ["bob@remote.test"])
    time.sleep(1.5)
    [qid] = queued_ids(ours)
    assert ours.cli("queue", "hold", qid).returncode == 0
    assert "(held)" in ours.cli("queue", "list").stdout
    remote.start()
    ours.cli("queue", "flush")
    time.sleep(2.5)
    assert maildir(remote, "remote.test", "bob") == []
    assert ours.cli("queue", "release", qid).returncode == 0
    assert wait_for(lambda: maildir(remote, "remote.test", "bob"), timeout=10)


def cert_pin(server) -> str:
    cert = server.data / "tls" / "cert.pem"
    out = subprocess.run(f"openssl x509 -in {cert} -outform DER | sha256sum", shell=True, capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


def smarthost_pair(make_server, workdir, tls_keys: str):
    """A remote portcullis as our smarthost (its self-signed certificate
    generated on its start), and ours logging in to it."""
    remote = make_server('[[domain]]\nname = "remote.test"\n', start=False, local_test=False)
    user(remote, "relay@remote.test")
    user(remote, "bob@remote.test")
    assert remote.cli("user", "grant", "relay@remote.test", "@local.test").returncode == 0
    remote.start()
    secret = workdir / "smarthost.pw"
    secret.write_text(PASSWORD + "\n")
    ours = make_server(
        f'[delivery]\nsmarthost = "127.0.0.1:{remote.sub}"\nsmarthost_user = "relay@remote.test"\n'
        f'smarthost_password_file = "{secret}"\nretry_base_secs = 1\n{tls_keys.format(pin=cert_pin(remote))}',
        start=False,
    )
    user(ours, "alice@local.test")
    return ours.start(), remote


def test_smarthost_with_auth_and_required_tls(make_server, workdir):
    ours, remote = smarthost_pair(make_server, workdir, 'smarthost_pin_sha256 = "{pin}"\n')
    # No MX records anywhere: the smarthost is the only way out.
    submit(ours, ["bob@remote.test"])
    [msg] = wait_for(lambda: maildir(remote, "remote.test", "bob"))
    assert b"with ESMTPSA" in msg
    assert b"(authenticated as relay@remote.test)" in msg


@pytest.mark.parametrize("keys", ["", 'smarthost_pin_sha256 = "' + "ab" * 32 + '"\n'], ids=["unverifiable", "wrong-pin"])
def test_smarthost_password_never_goes_to_an_unproven_server(make_server, workdir, keys):
    # A self-signed certificate no CA vouches for, or not the pinned one:
    # the login is never attempted, the message waits in the queue.
    ours, remote = smarthost_pair(make_server, workdir, keys)
    submit(ours, ["bob@remote.test"])
    time.sleep(3)
    assert maildir(remote, "remote.test", "bob") == []
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{remote.http}/metrics", timeout=5).read().decode()
    attempts = [l for l in metrics.splitlines() if l.startswith("portcullis_auth_attempts_total")]
    assert all(l.endswith(" 0") for l in attempts), attempts
    listing = ours.cli("queue", "list").stdout
    assert "bob@remote.test" in listing, listing


def submit_with(server, rcpt, rcpt_options):
    with smtplib.SMTP("127.0.0.1", server.sub) as c:
        c.starttls(context=insecure_tls())
        c.login("alice@local.test", PASSWORD)
        c.sendmail("alice@local.test", [rcpt], "From: alice@local.test\r\nSubject: late\r\n\r\nx\r\n", rcpt_options=rcpt_options)


@pytest.mark.parametrize("notify,expect_report", [(None, True), ("NOTIFY=DELAY", True), ("NOTIFY=NEVER", False)])
def test_a_late_message_gets_one_delay_notice_if_wanted(make_server, workdir, notify, expect_report):
    ours, remote, dns = build_pair(make_server, workdir, 1)
    ours.config.write_text(ours.config.read_text().replace("[delivery]\n", "[delivery]\ndelay_notice_secs = 1\n"))
    try:
        ours.start()  # the remote domain's server stays down
        submit_with(ours, "bob@remote.test", [notify] if notify else [])
        time.sleep(5)
        reports = maildir(ours, "local.test", "alice")
        if expect_report:
            assert len(reports) == 1, "one delay notice, not one per retry"
            assert b"Action: delayed" in reports[0] and b"Delayed Mail" in reports[0]
        else:
            assert reports == []
    finally:
        dns.stop()


def test_notify_without_failure_gets_no_bounce(pair):
    ours, remote = pair
    remote.start()
    ours.start()
    submit_with(ours, "nobody@remote.test", ["NOTIFY=SUCCESS"])
    assert wait_for(lambda: "bounced=1" in ours.log.read_text(), timeout=20)
    time.sleep(1)
    assert maildir(ours, "local.test", "alice") == []


def test_a_next_hop_answering_451_is_retried_and_later_succeeds(pair):
    ours, remote = pair
    # Postfix's smtp-sink on the remote domain's port, answering RCPT with
    # a 4xx; then the real server comes up in its place.
    sink = subprocess.Popen(["smtp-sink", "-u", "postfix", "-r", "RCPT", f"127.0.0.1:{remote.mx}", "10"])
    try:
        ours.start()
        submit(ours, ["bob@remote.test"], subject="after-451")
        assert wait_for(lambda: 'result="deferred" status=4.' in ours.log.read_text(), timeout=20)
    finally:
        sink.terminate()
        sink.wait()
    remote.start()
    [msg] = wait_for(lambda: maildir(remote, "remote.test", "bob"), timeout=30)
    assert b"Subject: after-451" in msg


def test_required_tls_is_not_downgraded(make_server, workdir):
    ours, remote, dns = build_pair(make_server, workdir, 300)
    ours.config.write_text(ours.config.read_text().replace("[delivery]\n", '[delivery]\nrequire_tls_for = ["remote.test"]\n'))
    # smtp-sink offers no STARTTLS: the message must wait, not go in clear.
    sink = subprocess.Popen(["smtp-sink", "-u", "postfix", "-c", f"127.0.0.1:{remote.mx}", "10"], stdout=subprocess.PIPE, text=True)
    try:
        ours.start()
        submit(ours, ["bob@remote.test"])
        assert wait_for(lambda: "TLS required" in ours.log.read_text(), timeout=20)
        ours.stop()
        assert len(queued_ids(ours)) == 1
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
            submit(ours, ["bob@remote.test"], subject=f"paced-{i}")
        t0 = time.time()
        assert len(wait_for(lambda: maildir(remote, "remote.test", "bob") if len(maildir(remote, "remote.test", "bob")) == 3 else [], timeout=20)) == 3
        # 60 a minute: one a second, so the third starts 2 s after the first.
        assert time.time() - t0 >= 1.5
    finally:
        dns.stop()
