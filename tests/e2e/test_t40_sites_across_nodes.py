"""Outbound sites shared by several nodes through Redis (issue 30: "with
Redis the limits hold across all nodes"): two portcullis nodes on one
real Redis send to one site, a Postfix instance on loopback
(`bench/postfix_instance.sh`, as in t40). Together they keep the site's
`messages_per_minute`, and a rate answer one node is given pauses the
site on the other."""

import email
import email.utils
import os
import time

import pytest

from conftest import add_user, free_port, submit, wait_until
from dnsserver import DnsServer
from test_t15_class_of_service import Redis
from test_t40_outbound_manners import RL_DOMAINS, Postfix

PER_MINUTE = 20
# A start is reserved in the ledger 3 s after the last one, whichever node
# made it; the receiver dates a message to the second: one more may fall
# inside the minute at its edges.
BURST = 1


@pytest.fixture
def two_nodes(make_server, workdir):
    """Two nodes on one Redis, each with alice@local.test, sending to the
    site `rl` (mx.rl.test, 127.0.0.2) on PORT."""
    port = free_port()
    zones = {"test": "", "local.test": "", "rl.test": "mx IN A 127.0.0.2\n"}
    for d in RL_DOMAINS:
        zones[d] = "@ IN MX 10 mx.rl.test.\n"
    dns = DnsServer(workdir / "sites-dns", zones).start()
    redis_dir = workdir / "redis"
    redis_dir.mkdir()
    redis = Redis(redis_dir).start()
    config = f"""
[state]
backend = "redis"
redis_url = "redis://127.0.0.1:{redis.port}"

[delivery]
port = {port}
retry_base_secs = 1
retry_max_secs = 2

[[delivery.site]]
name = "rl"
mx = ["mx.rl.test"]
max_connections = 4
messages_per_minute = {PER_MINUTE}
"""
    nodes = []
    for _ in range(2):
        n = make_server(config, start=False)
        n.use_dns(dns.port)
        add_user(n, "alice@local.test")
        nodes.append(n.start())
    yield nodes, port
    for n in nodes:
        n.stop()
    redis.stop()
    dns.stop()


def send(node, to: str, subject: str):
    body = f"From: alice@local.test\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nHello.\r\n"
    submit(node, [to], body)


def arrivals(rl: Postfix) -> list[tuple[float, str]]:
    """(when the receiver took it, subject) of every message delivered,
    in order; the time is that of Postfix's own Received field."""
    out = []
    for top, _, files in os.walk(rl.dir / "mail"):
        for f in files:
            with open(os.path.join(top, f), "rb") as fh:
                m = email.message_from_binary_file(fh)
            received = m.get_all("Received")[0]
            when = email.utils.parsedate_to_datetime(received.rsplit(";", 1)[1].strip()).timestamp()
            out.append((when, m["Subject"]))
    return sorted(out)


def test_two_nodes_on_one_redis_keep_a_sites_rate_together(two_nodes):
    (a, b), port = two_nodes
    rl = Postfix("127.0.0.2", port, RL_DOMAINS)
    try:
        # Each node alone has a minute's worth for the site: without the
        # shared ledger the two would send it twice the rate.
        for i in range(PER_MINUTE):
            send(a, f"a{i}@{RL_DOMAINS[i % 3]}", f"node-a-{i}")
            send(b, f"b{i}@{RL_DOMAINS[i % 3]}", f"node-b-{i}")
        # Two more than a minute's worth: the minute after the first is over.
        wait_until(lambda: rl.delivered() >= PER_MINUTE + 2, timeout=150,
                   what=lambda: f"{rl.delivered()} delivered")
        got = arrivals(rl)
        first = got[0][0]
        in_first_minute = [s for t, s in got if t < first + 60]
        print(f"first minute: {len(in_first_minute)} messages, "
              f"{sum(s.startswith('node-a') for s in in_first_minute)} from node A")
        assert len(in_first_minute) <= PER_MINUTE + BURST, in_first_minute
        # Both nodes sent: the rate was shared, not taken by one of them.
        assert any(s.startswith("node-a") for s in in_first_minute), in_first_minute
        assert any(s.startswith("node-b") for s in in_first_minute), in_first_minute
        # Redis answered every question.
        for n in (a, b):
            assert n.metric("portcullis_site_ledger_fallbacks_total") == 0
    finally:
        rl.stop()


def test_a_rate_answer_one_node_is_given_pauses_the_site_on_the_other(two_nodes):
    (a, b), port = two_nodes
    # Two messages a minute from one client, then 450 4.7.1 "too much mail".
    rl = Postfix("127.0.0.2", port, RL_DOMAINS, "smtpd_client_message_rate_limit = 2\nanvil_rate_time_unit = 60s\n")
    try:
        for i in range(3):
            send(a, f"a{i}@a.test", f"node-a-{i}")
        a.wait_event("site_paused", timeout=30)
        paused_until = a.api("GET", "/api/sites")[1][0]["paused_until"]
        assert paused_until, "node A paused the site"
        # Node B was given no answer, yet holds its mail for the pause.
        send(b, "b0@b.test", "node-b-0")
        wait_until(lambda: [s for s in b.api("GET", "/api/sites")[1] if s.get("paused_until")], timeout=20,
                   what="node B sees the site paused")
        [site] = b.api("GET", "/api/sites")[1]
        assert site["name"] == "rl" and site["paused_until"] == paused_until, site
        waiting = b.api("GET", "/api/queue")[1]
        reason = b.api("GET", f"/api/queue/{waiting[0]['id']}")[1]["waiting_because"] or ""
        assert reason.startswith("site rl paused until ") and "after 4" in reason, reason
        assert time.time() * 1000 < paused_until
        assert not b.events("remote_attempt_failed"), "node B knocked on no door"
        assert rl.delivered() == 2
    finally:
        rl.stop()
