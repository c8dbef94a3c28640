"""Greylisting for the default pool (issue 21), on the mx listener: an
unknown sender's first message waits, its retry after the delay passes
(from any address of its range), an SPF-authenticated sender never
waits, and the memory of a triplet survives a restart and is shared by
two nodes on one Redis."""

import json

import pytest

from conftest import try_send, wait_until
from dnsserver import DnsServer
from test_t15_class_of_service import Redis

ZONES = {"test": "", "good.test": '@ IN TXT "v=spf1 ip4:127.0.0.2 -all"\n'}

def greylist(delay: int) -> str:
    return f"""
[greylist]
enabled = true
delay_secs = {delay}
expiry_secs = 600
"""


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    d = DnsServer(tmp_path_factory.mktemp("grey-dns"), ZONES).start()
    yield d
    d.stop()


def grey(make_server, dns, extra: str = "", delay: int = 1):
    return make_server(greylist(delay) + extra, dns=f"127.0.0.1:{dns.port}")


def passes_after_the_delay(s, source: str, sender: str = "a@stranger.test"):
    """Retry, as an MTA would, until the triplet passes."""
    wait_until(lambda: try_send(s.mx, sender, source=source)[0] == 250, 15, "the retry passes")


def test_a_strangers_first_try_waits_and_its_retry_passes(make_server, dns):
    s = grey(make_server, dns)
    code, text = try_send(s.mx, "a@stranger.test", source="127.0.0.5")
    assert code == 451 and "4.7.1" in text and "Greylisted" in text, (code, text)
    passes_after_the_delay(s, "127.0.0.5")
    assert s.metric("portcullis_greylisted_total") >= 1
    assert len(s.wait_messages("u", 1)) == 1


def test_a_retry_from_another_address_of_the_range_passes(make_server, dns):
    s = grey(make_server, dns)
    assert try_send(s.mx, "a@stranger.test", source="127.0.0.5")[0] == 451
    # A pool of outbound servers retries from another address of its /24.
    passes_after_the_delay(s, "127.0.0.6")


def test_an_spf_authenticated_sender_is_never_delayed(make_server, dns):
    s = grey(make_server, dns)
    for _ in range(3):
        assert try_send(s.mx, "news@good.test", source="127.0.0.2") == (250, "")
    assert s.metric("portcullis_greylisted_total") == 0


def test_a_triplet_is_remembered_across_a_restart(make_server, dns):
    s = grey(make_server, dns)
    assert try_send(s.mx, "a@stranger.test", source="127.0.0.5")[0] == 451
    s.stop()
    snapshot = json.loads((s.data / "state" / "embedded.json").read_text())
    assert "127.0.0.0/24|stranger.test|u@local.test" in snapshot["greylist"], snapshot.get("greylist")
    s.start()
    passes_after_the_delay(s, "127.0.0.5")


@pytest.fixture
def redis(tmp_path):
    r = Redis(tmp_path).start()
    yield r
    r.stop()


def test_a_triplet_seen_on_one_node_passes_on_the_other(make_server, dns, redis):
    # With no delay a first try still waits, and any retry passes: so
    # node B's very first try passes only if it knows A's triplet.
    shared = f'\n[state]\nbackend = "redis"\nredis_url = "{redis.url}"\n'
    a = grey(make_server, dns, shared, delay=0)
    b = grey(make_server, dns, shared, delay=0)
    assert try_send(a.mx, "a@stranger.test", source="127.0.0.5")[0] == 451
    assert try_send(b.mx, "a@stranger.test", source="127.0.0.5") == (250, "")
    assert b.metric("portcullis_greylisted_total") == 0, "node B never deferred it"
