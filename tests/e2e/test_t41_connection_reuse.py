"""Outbound connections carried from one message to the next (issue 30,
`[delivery] connection_cache_secs`, `messages_per_connection`), against
a real Postfix smtpd on loopback (`postfix_receiver.py`). What the
receiver saw is read from its own log: one `connect from` line per
connection, and per ended session the commands it took (`mail=5 rset=4
quit=1`)."""

import pytest

from conftest import add_user, free_port, make_ca, make_leaf, submit, wait_until
from dnsserver import DnsServer
from postfix_receiver import Postfix

N = 20


@pytest.fixture
def world(make_server, workdir):
    """NSD with `reuse.test` whose MX is 127.0.0.2, and a factory for our
    portcullis with extra `[delivery]` lines; at most two connections at
    once to the site, so that messages wait for each other."""
    port = free_port()
    dns = DnsServer(workdir / "reuse-dns", {
        "test": "",
        "local.test": '@ IN TXT "v=spf1 ip4:127.0.0.1 -all"\n',
        "reuse.test": "@ IN MX 10 mx.reuse.test.\nmx IN A 127.0.0.2\n",
    }).start()

    def start(delivery: str = ""):
        ours = make_server(
            f"[delivery]\nport = {port}\nretry_base_secs = 1\nretry_max_secs = 2\nmax_per_domain = 2\n{delivery}",
            start=False,
        )
        ours.use_dns(dns.port)
        add_user(ours, "alice@local.test")
        return ours.start()

    yield start, port
    dns.stop()


def send(ours, i: int):
    to = f"user{i}@reuse.test"
    submit(ours, [to], f"From: alice@local.test\r\nTo: {to}\r\nSubject: m{i}\r\n\r\nHello {i}.\r\n")


def deliver_twenty(ours, rx: Postfix) -> list[dict[str, int]]:
    """Send N messages to reuse.test; once all arrived and every connection
    was closed, the sessions as the receiver logged them."""
    for i in range(N):
        send(ours, i)
    wait_until(lambda: rx.delivered() == N, timeout=60, what=lambda: f"{rx.delivered()}/{N} delivered")
    # Idle connections are closed after connection_cache_secs.
    wait_until(lambda: len(rx.sessions()) == rx.connections(), timeout=30,
               what=lambda: f"{len(rx.sessions())} of {rx.connections()} connections closed")
    sessions = rx.sessions()
    assert sum(s.get("mail", 0) for s in sessions) == N, sessions
    # Every connection was ended politely, none dropped.
    assert all(s.get("quit") == 1 for s in sessions), sessions
    return sessions


@pytest.mark.parametrize("per_connection", [0, 5])
def test_twenty_messages_to_one_destination_arrive_over_fewer_connections(world, per_connection):
    start, port = world
    ours = start(f"messages_per_connection = {per_connection}\n")
    rx = Postfix("127.0.0.2", port, ["reuse.test"])
    try:
        sessions = deliver_twenty(ours, rx)
        assert len(sessions) < N, sessions
        # At most messages_per_connection each (0: no limit).
        assert all(s["mail"] <= (per_connection or N) for s in sessions), sessions
        reused = ours.metric("portcullis_delivery_connections_reused_total")
        opened = ours.metric("portcullis_delivery_connections_opened_total")
        assert (opened, reused) == (len(sessions), N - len(sessions))
        # RSET before each message on a kept connection (RFC 5321 §4.1.1.5).
        assert all(s.get("rset", 0) == s["mail"] - 1 for s in sessions), sessions
        print(f"{N} messages over {len(sessions)} connections: {[s['mail'] for s in sessions]}")
    finally:
        rx.stop()


def starttls(workdir) -> str:
    """main.cf lines offering STARTTLS with a certificate for mx.reuse.test."""
    make_ca(workdir)
    make_leaf(workdir, "mx", ["mx.reuse.test"])
    return f"""smtpd_tls_security_level = may
smtpd_tls_cert_file = {workdir}/mx.pem
smtpd_tls_key_file = {workdir}/mx.key
"""


def test_a_connection_with_starttls_is_reused_encrypted(world, workdir):
    start, port = world
    ours = start()
    rx = Postfix("127.0.0.2", port, ["reuse.test"], starttls(workdir))
    try:
        sessions = deliver_twenty(ours, rx)
        assert len(sessions) < N, sessions
        # TLS once per connection, every message inside it.
        assert all(s.get("starttls") == 1 and s.get("ehlo") == 2 for s in sessions), sessions
    finally:
        rx.stop()


def test_one_message_per_connection_opens_a_connection_for_each_message(world):
    start, port = world
    ours = start("messages_per_connection = 1\n")
    rx = Postfix("127.0.0.2", port, ["reuse.test"])
    try:
        sessions = deliver_twenty(ours, rx)
        assert len(sessions) == N and all(s["mail"] == 1 for s in sessions), sessions
        assert ours.metric("portcullis_delivery_connections_reused_total") == 0
    finally:
        rx.stop()


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "starttls"])
def test_a_kept_connection_the_receiver_closed_is_replaced_and_the_next_message_delivered(world, workdir, tls):
    start, port = world
    # We would keep the connection a minute; the receiver gives up on an
    # idle client after two seconds (421 4.4.2 ... timeout exceeded).
    ours = start("connection_cache_secs = 60\n")
    rx = Postfix("127.0.0.2", port, ["reuse.test"], "smtpd_timeout = 2s\n" + (starttls(workdir) if tls else ""))
    try:
        send(ours, 0)
        wait_until(lambda: rx.delivered() == 1, timeout=20, what="the first message delivered")
        wait_until(lambda: "timeout after END-OF-MESSAGE" in rx.log(), timeout=20,
                   what="the receiver timing out the idle connection")
        send(ours, 1)
        wait_until(lambda: rx.delivered() == 2, timeout=20, what="the second message delivered")
        assert rx.connections() == 2
        assert ours.metric("portcullis_delivery_connections_stale_total") == 1
        assert ours.metric("portcullis_delivery_connections_reused_total") == 0
        # Delivered in its first attempt: the stale connection cost nothing.
        assert not ours.events("deferred")
        assert not ours.events("remote_attempt_failed")
    finally:
        rx.stop()
