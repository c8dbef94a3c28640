"""Many nodes behind a load balancer (issue 18): a real haproxy sends the
PROXY protocol header (v2 with send-proxy-v2, v1 with send-proxy), and
portcullis serves the client it names: Received, SPF and the class of
service see the client's address, not haproxy's. A header from anyone
outside proxy_from, or no header, is refused; two nodes on one Redis
behind haproxy hold a rotating flood to ONE default pool."""

import smtplib
import socket
import ssl
import subprocess

import pytest

from conftest import free_port, try_send, wait_port, wait_until
from dnsserver import DnsServer
from test_t15_class_of_service import Redis

ZONES = {"test": "", "near.test": '@ IN TXT "v=spf1 ip4:127.0.0.5 -all"\n'}


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    d = DnsServer(tmp_path_factory.mktemp("proxy-dns"), ZONES).start()
    yield d
    d.stop()


class Haproxy:
    """haproxy in TCP mode: one frontend per (port, servers, send-proxy mode)."""

    def __init__(self, workdir, frontends):
        self.config = workdir / "haproxy.cfg"
        text = "global\n  maxconn 4096\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n"
        for i, (port, servers, mode) in enumerate(frontends):
            text += f"frontend f{i}\n  bind 127.0.0.1:{port}\n  default_backend b{i}\n"
            text += f"backend b{i}\n  balance roundrobin\n"
            text += "".join(f"  server n{j} 127.0.0.1:{s} {mode}\n" for j, s in enumerate(servers))
        self.config.write_text(text)
        self.ports = [p for p, _, _ in frontends]
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for p in self.ports:
            wait_port(p, proc=self.proc)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def haproxy(tmp_path):
    started = []

    def start(frontends):
        h = Haproxy(tmp_path, frontends)
        started.append(h)
        return h

    yield start
    for h in started:
        h.stop()


def closed_unserved(c: socket.socket) -> bool:
    """The server closed without a word. Unread bytes make the kernel
    answer the close with a reset, which is just as much a refusal."""
    try:
        return c.recv(100) == b""
    except ConnectionResetError:
        return True
    finally:
        c.close()


def probes_refused(s) -> float:
    """The harness's readiness probe (a connect and close, no header) is
    itself refused on a PROXY listener: wait for it, and count from there."""
    return wait_until(lambda: s.metric("portcullis_connections_total", outcome="refused_proxy"), 5, "the probe refused")


def behind_haproxy(make_server, dns, extra: str = "", listener: str = "mx"):
    """A node whose mx (and submissions) listener takes PROXY headers from haproxy only."""
    proxied = 'proxy_protocol = true\nproxy_from = ["127.0.0.1/32"]'
    return make_server(extra, listener_extra=proxied, dns=f"127.0.0.1:{dns.port}")


@pytest.mark.parametrize("mode", ["send-proxy-v2", "send-proxy"])
def test_received_and_spf_see_the_client_not_haproxy(make_server, dns, haproxy, mode):
    s = behind_haproxy(make_server, dns)
    port = free_port()
    haproxy([(port, [s.mx], mode)])
    assert try_send(port, "a@near.test", source="127.0.0.5", body="Subject: via haproxy\r\n\r\nhi\r\n") == (250, "")
    msg = s.wait_message("u", b"Subject: via haproxy")
    assert b"[127.0.0.5]" in msg, msg[:600]
    assert b"spf=pass" in msg and b"smtp.mailfrom=a@near.test" in msg, msg[:800]
    connects = s.events("connect", peer=lambda p: p.startswith("127.0.0.5:"))
    assert connects, "the log names the client"


def test_the_class_of_service_sees_the_client(make_server, dns, haproxy):
    s = behind_haproxy(make_server, dns)
    port = free_port()
    haproxy([(port, [s.mx], "send-proxy-v2")])
    assert s.cli("blocklist", "add", "127.0.0.5", "--reason", "flooding").returncode == 0
    code, text = try_send(port, "x@far.test", source="127.0.0.5")
    assert code == 421 and "127.0.0.5/32 is blocked" in text, (code, text)
    assert try_send(port, "x@far.test", source="127.0.0.6") == (250, "")


def test_a_header_from_outside_proxy_from_is_refused(make_server, dns):
    s = behind_haproxy(make_server, dns)
    before = probes_refused(s)
    # A client that speaks PROXY itself, claiming to be someone else.
    c = socket.create_connection(("127.0.0.1", s.mx), source_address=("127.0.0.9", 0), timeout=5)
    c.sendall(b"PROXY TCP4 192.0.2.1 127.0.0.1 4000 25\r\n")
    assert closed_unserved(c), "closed without a greeting"
    wait_until(lambda: s.metric("portcullis_connections_total", outcome="refused_proxy") == before + 1, 5, lambda: s.log_tail(3000))
    assert s.events("refused", reason=lambda r: "proxy_from" in r)


def test_a_connection_without_a_header_is_refused(make_server, dns):
    s = behind_haproxy(make_server, dns)
    before = probes_refused(s)
    c = socket.create_connection(("127.0.0.1", s.mx), timeout=10)
    c.sendall(b"EHLO client.test\r\n" + b"x" * 20)
    assert closed_unserved(c), "never served as a client"
    wait_until(lambda: s.metric("portcullis_connections_total", outcome="refused_proxy") == before + 1, 5, lambda: s.log_tail(3000))


def test_implicit_tls_reads_the_header_before_the_handshake(make_server, dns, haproxy):
    s = make_server(
        "", dns=f"127.0.0.1:{dns.port}",
    )
    s.stop()
    # The submissions listener behind haproxy (the others as usual).
    s.config.write_text(s.config.read_text().replace(
        f'bind = ["127.0.0.1:{s.subs}"]',
        f'bind = ["127.0.0.1:{s.subs}"]\nproxy_protocol = true\nproxy_from = ["127.0.0.1/32"]'))
    s.start()
    port = free_port()
    haproxy([(port, [s.subs], "send-proxy-v2")])
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c = smtplib.SMTP_SSL("127.0.0.1", port, context=ctx, source_address=("127.0.0.7", 0), timeout=10)
    assert c.ehlo()[0] == 250
    c.quit()
    assert s.events("connect", listener="submissions", peer=lambda p: p.startswith("127.0.0.7:"))


def test_a_rotating_flood_through_haproxy_shares_one_pool_across_two_nodes(make_server, dns, haproxy, tmp_path):
    redis = Redis(tmp_path).start()
    try:
        pool = f"""
[state]
backend = "redis"
redis_url = "{redis.url}"
[class.default]
max_connections = 0
connections_per_minute = 0
messages_per_minute = 20
[admission]
per_range_max_connections = 0
per_range_connections_per_minute = 0
"""
        a = behind_haproxy(make_server, dns, pool)
        b = behind_haproxy(make_server, dns, pool)
        port = free_port()
        haproxy([(port, [a.mx, b.mx], "send-proxy-v2")])
        codes = [try_send(port, f"x{n}@far.test", source=f"127.0.1.{n}")[0] for n in range(1, 61)]
        accepted = codes.count(250)
        # The pool's burst (20) and its rate (one every 3 s) while the
        # flood lasts: one pool for both nodes, not one each.
        assert 20 <= accepted <= 25, codes
        assert a.metric("portcullis_messages_accepted_total") > 0 and b.metric("portcullis_messages_accepted_total") > 0
    finally:
        redis.stop()
