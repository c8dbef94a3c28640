"""Outbound with manners (issue 30), against real receivers on loopback:
Postfix instances (`bench/postfix_instance.sh`) as the providers, one
rate-limited by its anvil (`smtpd_client_message_rate_limit`, which
answers `421 4.7.0 ... Error: too much mail from`), and a scripted
receiver answering the large providers' own texts (`providers.py`).

Every receiver listens on the same port on its own loopback address
(127.0.0.2, 127.0.0.3, ...), since `[delivery] port` is one port; NSD
serves the MX records."""

import re
import time

import pytest

from conftest import add_user, answer, free_port, submit, wait_until
from dnsserver import DnsServer
from postfix_receiver import Postfix
from providers import Provider

RL_DOMAINS = ["a.test", "b.test", "c.test"]


@pytest.fixture
def world(make_server, workdir):
    """Our portcullis; receivers are started by each test on PORT."""
    port = free_port()
    zones = {
        "test": "",
        "local.test": '@ IN TXT "v=spf1 ip4:127.0.0.1 -all"\n',
        "rl.test": "mx IN A 127.0.0.2\n",
        "other.test": "@ IN MX 10 mx.other.test.\nmx IN A 127.0.0.3\n",
        "prov.test": "@ IN MX 10 mx.prov.test.\nmx IN A 127.0.0.4\n",
        "dual.test": "@ IN MX 10 mx.dual.test.\nmx IN A 127.0.0.5\nmx IN AAAA ::1\n",
    }
    for d in RL_DOMAINS:
        zones[d] = "@ IN MX 10 mx.rl.test.\n"
    dns = DnsServer(workdir / "manners-dns", zones).start()
    ours = make_server(
        f"[delivery]\nport = {port}\nretry_base_secs = 1\nretry_max_secs = 2\naddress_preference = \"ipv6\"\n",
        start=False,
    )
    ours.use_dns(dns.port)
    add_user(ours, "alice@local.test")
    ours.start()
    yield ours, port
    dns.stop()


def send(ours, to: str, subject: str = "hi"):
    body = f"From: alice@local.test\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nHello.\r\n"
    submit(ours, [to], body)


def sites(ours) -> dict:
    code, body = ours.api("GET", "/api/sites")
    assert code == 200, body
    return {s["name"]: s for s in body}


def test_three_domains_at_one_rate_limited_receiver_share_a_site_and_all_arrive(world):
    ours, port = world
    # Twenty messages a minute from one client, then 421 4.7.0.
    rl = Postfix("127.0.0.2", port, RL_DOMAINS, "smtpd_client_message_rate_limit = 20\nanvil_rate_time_unit = 60s\n")
    try:
        n = 30
        for i in range(n):
            send(ours, f"user{i}@{RL_DOMAINS[i % 3]}", f"rl-{i}")
        started = time.monotonic()
        wait_until(lambda: rl.delivered() == n, timeout=240, what=lambda: f"{rl.delivered()}/{n} delivered")
        took = time.monotonic() - started
        s = sites(ours)
        # One site for the three domains, named by their MX host.
        assert list(s) == ["mx.rl.test"], s
        # The receiver's refusals, as our log has them.
        provoked = len([e for e in ours.events("remote_attempt_failed") if "too much mail" in e["reason"]])
        assert provoked >= 1, "the receiver's limit was reached"
        # The rate answer paused the site once, not once per message.
        paused = ours.events("site_paused")
        assert 1 <= len(paused) <= 3, paused
        print(f"{n} messages in {took:.0f} s, {provoked} x 421 provoked, site {s['mx.rl.test']}")
    finally:
        rl.stop()


def test_a_paused_site_does_not_delay_another(world):
    ours, port = world
    rl = Postfix("127.0.0.2", port, RL_DOMAINS, "smtpd_client_message_rate_limit = 2\nanvil_rate_time_unit = 60s\n")
    other = Postfix("127.0.0.3", port, ["other.test"])
    try:
        for i in range(4):
            send(ours, f"user{i}@a.test", f"rl-{i}")
        wait_until(lambda: sites(ours).get("mx.rl.test", {}).get("paused_until"), timeout=30,
                   what="the rate-limited site paused")
        paused_until = sites(ours)["mx.rl.test"]["paused_until"] / 1000
        for i in range(5):
            send(ours, f"ok{i}@other.test", f"other-{i}")
        wait_until(lambda: other.delivered() == 5, timeout=20, what=lambda: f"{other.delivered()}/5 at the other site")
        assert time.time() < paused_until, "the other site's mail arrived while the first was paused"
        assert rl.delivered() == 2
        # The waiting messages say why: the one refused by the receiver's
        # answer, the others by their site's pause.
        waiting = [m for m in ours.api("GET", "/api/queue")[1] if m["recipients"][0].endswith("@a.test")]
        reasons = [ours.api("GET", f"/api/queue/{m['id']}")[1]["waiting_because"] or "" for m in waiting]
        held = [r for r in reasons if r.startswith("site mx.rl.test paused until ")]
        # "site mx.rl.test paused until 12:04 after 450 4.7.1"
        assert held and all(re.search(r" until \d\d:\d\d after 4\d\d 4\.7\.\d+$", r) for r in held), reasons
        metrics = ours.metric("portcullis_site_paused_seconds", site="mx.rl.test")
        assert metrics > 0
    finally:
        rl.stop()
        other.stop()


def test_a_remote_unknown_user_is_suppressed_until_the_operator_lifts_it(world):
    ours, port = world
    other = Postfix("127.0.0.3", port, ["other.test"], maps="inline:{ok@other.test=u/}")
    try:
        send(ours, "gone@other.test", "first")
        wait_until(lambda: ours.events("suppressed"), timeout=20, what="the address suppressed")
        listed = ours.cli("suppression", "list").stdout
        assert "gone@other.test" in listed and "550 5.1.1" in listed, listed
        # The next submission is refused at RCPT, saying when and why.
        code, text = answer(lambda: send(ours, "gone@other.test", "second"))
        assert code == 550 and text.startswith("5.1.1 <gone@other.test> is suppressed: it bounced on"), text
        code, api = ours.api("GET", "/api/suppression/gone@other.test")
        assert code == 200 and api["class"] == "mailbox_unknown", api
        # The bounce told alice, with the class.
        dsn = ours.wait_message("alice", b"X-Reply-Class: mailbox_unknown")
        assert b"Status: 5.1.1" in dsn
        assert ours.cli("suppression", "del", "gone@other.test").returncode == 0
        send(ours, "gone@other.test", "third")  # accepted at RCPT again
        send(ours, "ok@other.test", "known")
        wait_until(lambda: other.delivered() == 1, timeout=20)
    finally:
        other.stop()


def test_the_large_providers_replies_are_classified(world):
    ours, port = world
    prov = Provider([("127.0.0.4", port)]).start()
    expect = {
        "gmail-unknown": "mailbox_unknown",
        "gmail-full": "mailbox_full",
        "gmail-spam": "spam_refused",
        "gmail-auth": "auth_required",
        "ms-auth": "auth_required",
        "ms-blocked": "reputation_block",
        "ms-unknown": "mailbox_unknown",
    }
    try:
        for local in expect:
            send(ours, f"{local}@prov.test", local)
        for local, cls in expect.items():
            wait_until(lambda: ours.metric("portcullis_delivery_replies_total", **{"class": cls}) > 0, timeout=20,
                       what=f"{local} counted as {cls}")
        wait_until(lambda: ours.metric("portcullis_delivery_replies_total", **{"class": "mailbox_unknown"}) >= 2,
                   timeout=20, what="both unknown mailboxes counted")
        # Both unknown mailboxes are suppressed (5.1.1 and 5.1.10).
        wait_until(lambda: len(ours.events("suppressed")) == 2, timeout=20)
        # Yahoo's TSS04 pauses the whole site.
        send(ours, "yahoo-tss04@prov.test", "tss04")
        wait_until(lambda: sites(ours).get("mx.prov.test", {}).get("paused_until"), timeout=20,
                   what="the site paused after TSS04")
        assert ours.metric("portcullis_site_last_replies", site="mx.prov.test", **{"class": "rate_limited"}) >= 1
    finally:
        prov.stop()


def test_ipv6_refused_for_want_of_a_ptr_goes_over_ipv4_in_the_same_attempt(world):
    ours, port = world
    prov = Provider([("::1", port), ("127.0.0.5", port)], refuse_ipv6=True).start()
    try:
        send(ours, "bob@dual.test", "dual")
        wait_until(lambda: prov.accepted, timeout=20, what="delivered")
        assert prov.accepted == [("bob@dual.test", "127.0.0.1")]
        assert prov.refused_v6 == 1, "IPv6 was tried first and refused"
        [event] = ours.events("ipv6_refused")
        assert event["next"] == "ipv4"
        # One attempt: never deferred.
        assert not ours.events("deferred")
    finally:
        prov.stop()


def test_delivery_check_names_what_to_fix_about_a_source_address(world):
    ours, _ = world
    text = ours.config.read_text().replace("[delivery]\n", '[delivery]\nsource_ipv4 = "127.0.0.1"\n', 1)
    ours.config.write_text(text)
    # 127.0.0.1's reverse name is localhost, not the name we give in EHLO.
    r = ours.cli("delivery", "check")
    assert r.returncode != 0, r.stdout
    assert "its reverse name is localhost but we say EHLO mx.portcullis.test" in r.stdout, r.stdout
    ours.config.write_text(text.replace('source_ipv4 = "127.0.0.1"\n', 'source_ipv4 = "127.0.0.1"\nhelo_name = "localhost"\n'))
    r = ours.cli("delivery", "check")
    assert r.returncode == 0 and "127.0.0.1: ok" in r.stdout, r.stdout + r.stderr
    # An address this host does not have is a config error.
    ours.config.write_text(text.replace('source_ipv4 = "127.0.0.1"', 'source_ipv4 = "192.0.2.7"'))
    r = ours.cli("check-config")
    assert r.returncode != 0 and "source_ipv4" in r.stderr, r.stderr
