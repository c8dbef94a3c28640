"""Class of service (seeds/002) end to end: unknown senders share one
default pool however many addresses they rotate through, an identified
sender (SPF, known-sender range, domain range) has a budget of its own,
the temporal blocklist refuses before the greeting, rspamd verdicts move
reputation, and two nodes sharing a real Redis see one another's blocks
and budgets."""

import re
import shutil
import smtplib
import subprocess
import threading

import pytest

from conftest import add_user, free_port, insecure_tls, login, timestamp, try_send, wait_port, wait_until
from dnsserver import DnsServer
from smtpraw import Raw

ZONES = {
    "test": "",
    "good.test": '@ IN TXT "v=spf1 ip4:127.0.0.2 ip4:127.0.0.3 -all"\n',
    "nospf.test": "@ IN A 127.0.0.1\n",
}

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


@pytest.fixture(scope="module")
def dns_server(tmp_path_factory):
    d = DnsServer(tmp_path_factory.mktemp("cos-dns"), ZONES).start()
    yield d
    d.stop()


class Redis:
    def __init__(self, workdir):
        self.port = free_port()
        self.workdir = workdir
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, proc=self.proc)
        return self

    def stop(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/"


@pytest.fixture
def redis_server(tmp_path):
    r = Redis(tmp_path).start()
    yield r
    r.stop()


def cos_config(default_mpm: int = 30, extra: str = "") -> str:
    return f"""
[class.default]
max_connections = 4
messages_per_minute = {default_mpm}

[class.new]
max_connections = 10
messages_per_minute = 60000
recipients_per_minute = 60000
connections_per_minute = 60000

[admission]
per_range_max_connections = 2
per_range_connections_per_minute = 100000
remediation_url = "https://mx.portcullis.test/cos"
{extra}
"""


def server(make_server, dns_server, text: str):
    return make_server(text, dns=f"127.0.0.1:{dns_server.port}")


def test_rotating_strangers_share_one_pool_while_an_spf_sender_keeps_sending(make_server, dns_server):
    s = server(make_server, dns_server, cos_config())
    # The good sender has delivered authenticated mail before the flood.
    assert try_send(s.mx, "news@good.test", source="127.0.0.2")[0] == 250
    done = threading.Event()
    flood = {"accepted": 0, "deferred": 0, "texts": []}
    lock = threading.Lock()

    def attacker(n: int):
        i = 0
        while not done.is_set():
            i += 1
            source = f"127.1.{n}.{i % 250 + 1}"  # a fresh address for nearly every connection
            code, text = try_send(s.mx, f"spam{i}@nospf.test", source=source, timeout=10)
            with lock:
                if code == 250:
                    flood["accepted"] += 1
                else:
                    flood["deferred"] += 1
                    flood["texts"].append(text)

    threads = [threading.Thread(target=attacker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    # The flood lasts while the good sender sends 100 messages, a new
    # connection each: its range is good.test's, so it skips the default
    # pool at connect (the paper's domain ranges).
    good_accepted, good_refused = 0, []
    for _ in range(100):
        code, text = try_send(s.mx, "news@good.test", source="127.0.0.2", timeout=10)
        if code == 250:
            good_accepted += 1
        else:
            good_refused.append(text)
    done.set()
    for t in threads:
        t.join()
    # The flood got at most the default pool: a burst of 30 and one
    # message every 2 s after that, however many addresses it used. How
    # long it lasted is read from the server's clock (its connect events
    # from the flood's addresses), not from ours.
    flood_connects = [timestamp(e) for e in s.events("connect") if e["peer"].startswith("127.1.")]
    lasted = max(flood_connects) - min(flood_connects)
    assert flood["accepted"] <= 30 + int(lasted // 2) + 1, (flood["accepted"], flood["deferred"], good_accepted, lasted)
    assert flood["deferred"] > 0
    assert any("class default" in t and "https://mx.portcullis.test/cos" in t for t in flood["texts"])
    # The SPF-authenticated sender was never deferred and sent far more.
    assert good_refused == []
    assert good_accepted > 2 * flood["accepted"], (good_accepted, flood["accepted"])
    assert s.metric("portcullis_class_deferrals_total", **{"class": "default"}) > 0


def test_concurrency_of_the_default_pool_is_shared(make_server, dns_server):
    s = server(make_server, dns_server, cos_config())
    held = [Raw(s.mx, host="127.0.0.1") for _ in range(2)]
    held += [Raw(s.mx, host="127.0.0.1") for _ in range(0)]
    # Two more from other addresses fill the pool of 4 ...
    others = []
    for src in ("127.0.0.21", "127.0.0.22"):
        c = smtplib.SMTP(timeout=5, source_address=(src, 0))
        c.connect("127.0.0.1", s.mx)
        others.append(c)
    # ... and a fifth stranger, from yet another address, is deferred.
    code, text = try_send(s.mx, "x@nospf.test", source="127.0.0.23")
    assert code == 421 and "4.7.0" in text and "class default" in text and "concurrent" in text
    assert s.metric("portcullis_connections_total", outcome="refused_class") == 1
    for c in others:
        c.close()
    for r in held:
        r.close()


def test_per_range_concurrency_applies_to_everyone(make_server, dns_server):
    s = server(make_server, dns_server, cos_config())
    held = [Raw(s.mx) for _ in range(2)]
    code, text = Raw(s.mx, greet=False).reply()
    assert code == 421 and "address range" in text
    assert s.metric("portcullis_connections_total", outcome="refused_range") == 1
    for r in held:
        r.close()


def test_blocklist_refuses_before_the_greeting_and_exports_to_nftables(make_server, dns_server):
    s = server(make_server, dns_server, cos_config())
    out = s.cli("blocklist", "add", "127.0.0.5", "--secs", "600", "--reason", "flooding")
    assert out.returncode == 0, out.stderr
    code, text = try_send(s.mx, "x@nospf.test", source="127.0.0.5")
    assert code == 421 and "flooding" in text and "127.0.0.5/32" in text
    assert s.metric("portcullis_connections_total", outcome="refused_blocklist") == 1
    assert try_send(s.mx, "x@nospf.test", source="127.0.0.6")[0] == 250
    listed = s.cli("blocklist", "list").stdout
    assert "127.0.0.5/32" in listed and "flooding" in listed
    export = s.cli("blocklist", "export").stdout
    assert "127.0.0.5/32 timeout" in export
    if shutil.which("nft"):
        check = subprocess.run(["nft", "-c", "-f", "-"], input=export, capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
    assert s.cli("blocklist", "del", "127.0.0.5").returncode == 0
    assert try_send(s.mx, "x@nospf.test", source="127.0.0.5")[0] == 250
    assert s.cli("blocklist", "del", "127.0.0.5").returncode != 0, "not listed any more"


def test_a_known_sender_range_leaves_the_default_pool(make_server, dns_server):
    s = server(make_server, dns_server, cos_config(2))
    assert s.cli("known-senders", "add", "127.0.0.7/32", "partner").returncode == 0
    assert "partner" in s.cli("known-senders", "list").stdout
    results = [try_send(s.mx, "x@nospf.test", source="127.0.0.8")[0] for _ in range(3)]
    assert results == [250, 250, 451]
    assert [try_send(s.mx, "x@nospf.test", source="127.0.0.7")[0] for _ in range(5)] == [250] * 5


ESCALATING = """
[class.default]
connections_per_minute = 1

[admission]
per_range_max_connections = 0
per_range_connections_per_minute = 0
escalate_after = 3
"""


def test_escalation_blocks_a_24_and_shows_why_it_left_another_alone(make_server, dns_server):
    s = server(make_server, dns_server, ESCALATING)
    assert s.cli("known-senders", "add", "127.0.11.200/32", "partner").returncode == 0
    # start() took the pool's one connection this minute: three addresses
    # of each /24 then find it spent.
    for net in (10, 11):
        for host in (1, 2, 3):
            code, text = try_send(s.mx, "x@nospf.test", source=f"127.0.{net}.{host}")
            assert code == 421 and "class default" in text, text
    code, text = try_send(s.mx, "x@nospf.test", source="127.0.10.9")
    assert code == 421 and "127.0.10.0/24 is blocked" in text and "escalated: 3 ranges" in text, text
    code, text = try_send(s.mx, "x@nospf.test", source="127.0.11.9")
    assert code == 421 and "is blocked" not in text, "a known sender lives in 127.0.11.0/24"
    s.wait_event("escalated", prefix="127.0.10.0/24")
    [exempt] = s.wait_event("escalation_exempt", prefix="127.0.11.0/24")
    assert exempt["reason"] == "known", exempt
    assert s.metric("portcullis_escalations_total", result="blocked", prefix="24") == 1
    assert s.metric("portcullis_escalations_total", result="exempt_known", prefix="24") == 1
    status, stats = s.api("GET", "/api/stats")
    assert status == 200
    assert stats["escalations"]["counts"] == {"blocked": 1, "exempt_known": 1}, stats["escalations"]
    assert [d["prefix"] for d in stats["escalations"]["recent"]] == ["127.0.11.0/24", "127.0.10.0/24"]


def test_a_domain_range_must_then_authenticate_where_the_domain_policy_refuses(make_server, dns_server):
    refusing = cos_config() + '\n[[domain]]\nname = "local.test"\nrecipients = "any"\npolicy = "dmarc"\n'
    s = make_server(refusing, dns=f"127.0.0.1:{dns_server.port}", local_test=False)
    assert try_send(s.mx, "a@good.test", source="127.0.0.3")[0] == 250
    # The range is now good.test's: unauthenticated mail from it is refused.
    code, text = try_send(s.mx, "someone@nospf.test", source="127.0.0.3")
    assert code == 550 and "5.7.1" in text and "good.test" in text
    assert try_send(s.mx, "b@good.test", source="127.0.0.3")[0] == 250
    assert s.metric("portcullis_class_admissions_total", **{"class": "new"}) >= 2


def test_a_domain_range_in_label_mode_labels_unauthenticated_mail(make_server, dns_server):
    s = server(make_server, dns_server, cos_config())
    assert try_send(s.mx, "a@good.test", source="127.0.0.3")[0] == 250
    # label (the default policy): the message is accepted, labelled, and
    # drawn from the default pool instead of good.test's class.
    body = "Subject: unauthenticated\r\n\r\nhello\r\n"
    assert try_send(s.mx, "someone@nospf.test", body=body, source="127.0.0.3")[0] == 250
    msg = s.wait_message("u", b"Subject: unauthenticated")
    assert b"X-Portcullis-Class: default; 127.0.0.3/32 sends for good.test only with SPF or DKIM" in msg
    assert s.metric("portcullis_class_deferrals_total", limit="domain_range") == 1


def test_domain_range_enforcement_can_be_switched_off(make_server, dns_server):
    s = server(make_server, dns_server, cos_config(extra="enforce_domain_ranges = false"))
    assert try_send(s.mx, "a@good.test", source="127.0.0.3")[0] == 250
    assert try_send(s.mx, "someone@nospf.test", source="127.0.0.3")[0] == 250


def test_operator_reports_promote_with_the_configured_rules(make_server, dns_server):
    s = server(make_server, dns_server, cos_config() + "\n[reputation]\npromote_after = 3\n")
    for _ in range(3):
        out = s.cli("reputation", "report", "good.test", "ham")
        assert out.returncode == 0, out.stderr
    shown = s.cli("reputation", "show", "good.test").stdout
    assert re.search(r"class\s+trusted", shown), shown
    assert s.cli("reputation", "report", "good.test", "meh").returncode != 0


def test_state_survives_a_restart(make_server, dns_server):
    s = server(make_server, dns_server, cos_config())
    assert s.cli("blocklist", "add", "127.0.0.9", "--reason", "kept").returncode == 0
    assert try_send(s.mx, "a@good.test", source="127.0.0.2")[0] == 250
    # The running server has counted the message for good.test.
    wait_until(lambda: s.api("GET", "/api/reputation/good.test")[0] == 200, 10, "good.test's reputation")
    s.stop()
    assert "kept" in s.cli("blocklist", "list").stdout, "readable while stopped"
    s.start()
    assert try_send(s.mx, "x@nospf.test", source="127.0.0.9")[0] == 421
    assert "messages" in s.cli("reputation", "show", "good.test").stdout


# --- two nodes, one Redis ---------------------------------------------------


def redis_node(make_server, dns_server, redis, default_mpm: int = 30):
    state = f'\n[state]\nbackend = "redis"\nredis_url = "{redis.url}"\n'
    return server(make_server, dns_server, cos_config(default_mpm) + state)


def test_a_block_on_one_node_is_refused_on_the_other_within_a_second(make_server, dns_server, redis_server):
    a = redis_node(make_server, dns_server, redis_server)
    b = redis_node(make_server, dns_server, redis_server)
    assert try_send(b.mx, "x@nospf.test", source="127.0.0.31")[0] == 250
    assert a.cli("blocklist", "add", "127.0.0.31", "--reason", "seen on A").returncode == 0
    # B's mirror of the lists polls their version four times a second.
    code, text = wait_until(
        lambda: (lambda r: r[0] == 421 and r)(try_send(b.mx, "x@nospf.test", source="127.0.0.31")), 1.0,
        "the block to hold on B")
    assert "seen on A" in text
    assert "127.0.0.31/32" in b.cli("blocklist", "list").stdout


def test_a_budget_spent_on_one_node_counts_on_the_other(make_server, dns_server, redis_server):
    a = redis_node(make_server, dns_server, redis_server, 4)
    b = redis_node(make_server, dns_server, redis_server, 4)
    got = [try_send(n.mx, "x@nospf.test", source=f"127.0.0.{40 + i}") for i, n in enumerate([a, a, b, b])]
    assert [g[0] for g in got] == [250] * 4
    code, text = try_send(b.mx, "x@nospf.test", source="127.0.0.50")
    assert code == 451 and "class default" in text
    code, _ = try_send(a.mx, "x@nospf.test", source="127.0.0.51")
    assert code == 451


def alice_on_two_nodes(make_server, dns_server, config: str) -> list:
    """Two nodes with one config (a Redis state among it), each with the
    account alice@local.test."""
    nodes = []
    for _ in range(2):
        n = make_server(config, dns=f"127.0.0.1:{dns_server.port}", start=False)
        add_user(n, "alice@local.test")
        nodes.append(n.start())
    return nodes


def alice_rcpts(nodes, order) -> list:
    """One RCPT per session of alice's, on nodes[i] for each i of `order`:
    the (code, text) answers."""
    codes = []
    for i in order:
        with login(nodes[i].sub) as s:
            s.mail("alice@local.test")
            codes.append(s.rcpt(f"r{len(codes)}@remote.test"))
    return codes


def test_a_submission_quota_spent_on_one_node_counts_on_the_other(make_server, dns_server, redis_server):
    """A stolen password used on every node of a cluster still gets one
    account's quota: the recipient counters live in Redis."""
    config = (
        f'[submission]\nrecipients_per_hour = 3\n\n[state]\nbackend = "redis"\nredis_url = "{redis_server.url}"\n'
    )
    nodes = alice_on_two_nodes(make_server, dns_server, config)
    codes = alice_rcpts(nodes, [0, 0, 1, 1])
    assert [c for c, _ in codes[:3]] == [250, 250, 250]
    code, text = codes[3]
    assert code == 451 and b"4.7.1" in text and b"per hour" in text


def test_failed_logins_on_one_node_count_on_the_other(make_server, dns_server, redis_server):
    """A password guesser spreading its attempts over the nodes of a
    cluster meets one throttle: failures are counted in Redis."""
    config = (
        "[auth]\nfailure_delay_ms = 10\nmax_failure_delay_ms = 20\naddress_lock_after = 3\n\n"
        f'[state]\nbackend = "redis"\nredis_url = "{redis_server.url}"\n'
    )
    nodes = alice_on_two_nodes(make_server, dns_server, config)

    def attempt(node, password="wrong"):
        with smtplib.SMTP("127.0.0.1", node.sub, source_address=("127.0.0.61", 0), timeout=10) as s:
            s.starttls(context=insecure_tls())
            s.ehlo()
            # One mechanism, one attempt (login() would try PLAIN, then LOGIN).
            s.user, s.password = "alice@local.test", password
            try:
                return s.auth("PLAIN", s.auth_plain)
            except smtplib.SMTPAuthenticationError as e:
                return e.smtp_code, e.smtp_error

    got = [attempt(n) for n in [nodes[0], nodes[0], nodes[1]]]
    assert [c for c, _ in got] == [535, 535, 535], got
    code, text = attempt(nodes[0])
    assert code == 454 and b"Too many failed logins" in text


def test_concurrency_limits_count_connections_on_every_node(make_server, dns_server, redis_server):
    a = redis_node(make_server, dns_server, redis_server)
    b = redis_node(make_server, dns_server, redis_server)
    # The default pool holds 4: two strangers on A, two on B ...
    held = []
    for node, src in ((a, "127.0.0.81"), (a, "127.0.0.82"), (b, "127.0.0.83"), (b, "127.0.0.84")):
        c = smtplib.SMTP(timeout=5, source_address=(src, 0))
        assert c.connect("127.0.0.1", node.mx)[0] == 220
        held.append(c)
    # ... so a fifth, on either node, is deferred.
    code, text = try_send(a.mx, "x@nospf.test", source="127.0.0.85")
    assert code == 421 and "class default" in text and "concurrent" in text
    # A connection that ends gives its slot back to the cluster.
    held.pop().close()
    wait_until(lambda: try_send(a.mx, "x@nospf.test", source="127.0.0.86")[0] == 250, 5, "the slot to be given back")
    for c in held:
        c.close()


def test_an_accounts_session_limit_holds_across_nodes(make_server, dns_server, redis_server):
    config = (
        f'[submission]\nmax_sessions_per_account = 1\n\n[state]\nbackend = "redis"\nredis_url = "{redis_server.url}"\n'
    )
    nodes = alice_on_two_nodes(make_server, dns_server, config)
    first = login(nodes[0].sub)
    with pytest.raises(smtplib.SMTPAuthenticationError) as e:
        login(nodes[1].sub)
    assert e.value.smtp_code == 454 and b"Too many concurrent sessions" in e.value.smtp_error
    first.quit()

    def logs_in():
        try:
            login(nodes[1].sub).quit()
            return True
        except smtplib.SMTPAuthenticationError:
            return False

    wait_until(logs_in, 5, "the slot to be given back")


def test_without_redis_a_node_keeps_serving_on_local_state(make_server, dns_server, redis_server):
    s = redis_node(make_server, dns_server, redis_server)
    assert s.metric("portcullis_redis_up") == 1
    redis_server.stop()
    assert try_send(s.mx, "a@good.test", source="127.0.0.2")[0] == 250
    assert s.metric("portcullis_redis_up") == 0
    assert s.metric("portcullis_redis_failures") >= 1
    redis_server.start()

    def back_up():
        # Redis is found again by using it.
        try_send(s.mx, "a@good.test", source="127.0.0.2")
        return s.metric("portcullis_redis_up") == 1

    wait_until(back_up, 10, "portcullis_redis_up to be 1 again")
    assert s.events("redis_down")


# --- rspamd verdicts ----------------------------------------------------------


@pytest.fixture(scope="module")
def rspamd(tmp_path_factory, dns_server):
    if not shutil.which("rspamd"):
        pytest.fail("rspamd is not installed (.ci/run installs it)")
    d = tmp_path_factory.mktemp("rspamd")
    for sub in ("local.d", "override.d", "run", "db", "log"):
        (d / sub).mkdir()
    normal, controller = free_port(), free_port()
    (d / "override.d/worker-normal.inc").write_text(f'bind_socket = "127.0.0.1:{normal}";\ncount = 1;\n')
    (d / "override.d/worker-controller.inc").write_text(f'bind_socket = "127.0.0.1:{controller}";\n')
    (d / "override.d/worker-proxy.inc").write_text("enabled = false;\n")
    (d / "override.d/worker-fuzzy.inc").write_text("enabled = false;\n")
    (d / "override.d/logging.inc").write_text('type = "console";\nlevel = "error";\n')
    # A short public-suffix list: compiling Debian's full one takes rspamd
    # some 12 s at start, and these tests extract no URLs.
    (d / "tld.dat").write_text("test\ncom\nnet\norg\n")
    (d / "local.d/options.inc").write_text(
        f'dns {{\n nameserver = ["127.0.0.1:{dns_server.port}"];\n timeout = 1s;\n retransmits = 1;\n}}\n'
        f'url_tld = "{d}/tld.dat";\n'
    )
    proc = subprocess.Popen(
        ["rspamd", "-f", "-i", "-u", "root", "-g", "root", "--var", f"LOCAL_CONFDIR={d}", "--var", f"RUNDIR={d}/run",
         "--var", f"DBDIR={d}/db", "--var", f"LOGDIR={d}/log"],
        stdout=open(d / "rspamd.out", "wb"),
        stderr=subprocess.STDOUT,
    )
    wait_port(normal, timeout=60, proc=proc)
    yield normal
    proc.terminate()
    proc.wait(timeout=10)


def rspamd_config(port: int, extra: str = "") -> str:
    return cos_config(extra=extra) + f'\n[rspamd]\naddress = "127.0.0.1:{port}"\n'


def test_rspamd_verdicts_move_reputation(make_server, dns_server, rspamd):
    s = server(make_server, dns_server, rspamd_config(rspamd) + "\n[reputation]\npromote_after = 2\n")
    for n in range(2):
        body = f"From: news@good.test\r\nTo: u@local.test\r\nSubject: lunch {n}\r\nMessage-ID: <{n}@good.test>\r\n\r\nLunch on Friday?\r\n"
        assert try_send(s.mx, "news@good.test", body=body, source="127.0.0.2")[0] == 250
    [msg, _] = s.wait_messages("u", 2)
    assert b"X-Spam: No" in msg
    shown = s.cli("reputation", "show", "good.test").stdout
    assert re.search(r"class\s+trusted", shown) and "2 ham" in shown, shown
    code, text = try_send(s.mx, "news@good.test", body=f"Subject: buy\r\n\r\n{GTUBE}\r\n", source="127.0.0.2")
    assert code == 550 and "5.7.1" in text and "spam" in text
    assert "1 spam" in s.cli("reputation", "show", "good.test").stdout
    assert s.metric("portcullis_verdicts_total", verdict="spam") == 1


def test_unidentified_ranges_that_keep_spamming_are_blocked(make_server, dns_server, rspamd):
    s = server(make_server, dns_server, rspamd_config(rspamd, "spam_strikes = 2\nblock_secs = 600\n"))
    for _ in range(2):
        assert try_send(s.mx, "x@nospf.test", body=f"Subject: buy\r\n\r\n{GTUBE}\r\n", source="127.0.0.60")[0] == 550
    code, text = try_send(s.mx, "x@nospf.test", source="127.0.0.60")
    assert code == 421 and "spam" in text
    assert "127.0.0.60/32" in s.cli("blocklist", "list").stdout


def test_redis_killed_and_restarted_under_load_loses_no_message(make_server, dns_server, redis_server):
    s = redis_node(make_server, dns_server, redis_server, 100000)
    codes, stop = [], threading.Event()

    def load():
        while not stop.is_set():
            codes.append(try_send(s.mx, "news@good.test", source="127.0.0.2")[0])

    t = threading.Thread(target=load)
    t.start()
    try:
        # Messages go through before, while and after Redis is away: each
        # phase lasts until the load has sent more (ten; two while Redis
        # is away, where each message waits for the server's attempts to
        # reach it) and the server has seen Redis go and come back.
        wait_until(lambda: len(codes) >= 10, 20, "messages with Redis up")
        redis_server.stop()
        seen = len(codes)
        wait_until(lambda: s.metric("portcullis_redis_up") == 0 and len(codes) >= seen + 2, 20,
                   "messages with Redis down")
        redis_server.start()
        seen = len(codes)
        wait_until(lambda: s.metric("portcullis_redis_up") == 1 and len(codes) >= seen + 10, 20,
                   "messages with Redis back")
    finally:
        stop.set()
        t.join()
    assert len(codes) > 20 and set(codes) == {250}, codes
    assert len(s.wait_messages("u", len(codes), timeout=20)) == len(codes)
    assert s.metric("portcullis_redis_failures") >= 1
