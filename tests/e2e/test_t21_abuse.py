"""Abuse batteries (issue 8): a thousand clients that send one byte a
second do not keep a good client out; ten thousand connections are held
within the configured session limit and a bounded memory; a next hop
that resets the connection in the middle of DATA loses nothing."""

import resource
import smtplib
import socket
import threading

from conftest import PASSWORD, add_user, insecure_tls, send, try_send, wait_until
from dnsserver import DnsServer
from smtpraw import ScriptedPeer


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """The process's resident memory now (VmRSS), or at its peak so far
    (VmHWM, the kernel's high-water mark)."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def raise_nofile(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, n), hard), hard))


def test_a_thousand_slow_clients_do_not_block_a_good_one(server):
    raise_nofile(4096)
    slow = []
    for n in range(1000):
        s = socket.create_connection(("127.0.0.1", server.mx), timeout=10)
        s.setblocking(False)
        slow.append(s)
        if n % 100 == 99:
            # Opened no faster than the server takes them: past its listen
            # backlog the kernel drops SYNs and retries them a second later.
            wait_until(lambda: server.metric("portcullis_connections_total") >= n + 1, 30, f"{n + 1} connections taken")
    stop, dribbling = threading.Event(), threading.Event()

    def dribble():
        # One byte a second from each: "EHLO slowloris.test" takes ages.
        text = b"EHLO slowloris.test\r\n"
        i = 0
        while not stop.is_set():
            for s in slow:
                try:
                    s.send(text[i % len(text):i % len(text) + 1])
                except OSError:
                    pass
            i += 1
            dribbling.set()
            # The pace is the attack: one byte a second from each client.
            stop.wait(1)

    t = threading.Thread(target=dribble)
    t.start()
    try:
        # The server has taken all thousand (those whose first byte came
        # before the greeting are refused as early talkers; the others are
        # held, each in the middle of a command) and the dribble has begun.
        wait_until(lambda: dribbling.is_set() and server.metric("portcullis_connections_total") >= 1000, 30,
                   "the server to take a thousand slow connections")
        held = server.metric("portcullis_sessions")
        print(f"{held} slow sessions held")
        with smtplib.SMTP("127.0.0.1", server.mx, timeout=10) as c:
            for n in range(20):
                c.sendmail("a@sender.test", ["u@local.test"], f"Subject: good {n}\r\n\r\nhello\r\n")
        assert len(server.wait_messages("u", 20)) == 20
        # Served while the slow ones were all still there (each needs 21 s
        # for its EHLO line): no stopwatch, an order.
        assert server.metric("portcullis_sessions") >= held
    finally:
        stop.set()
        t.join()
        for s in slow:
            s.close()


def test_ten_thousand_connections_are_held_to_the_session_limit(make_server):
    raise_nofile(12000)
    s = make_server("[limits]\nmax_sessions = 2000\n")
    conns, greeted, refused = [], 0, 0

    def read_greetings(batch):
        nonlocal greeted, refused
        for c in batch:
            c.settimeout(10)
            try:
                line = c.recv(512)
            except OSError:
                line = b""
            if line.startswith(b"220"):
                greeted += 1
            elif line.startswith(b"421"):
                refused += 1

    # Each hundred connections' first lines are read before the next
    # hundred are opened: a client faster than the server's accept loop
    # overflows the listen backlog, and the kernel's 1 s SYN retries were
    # most of this test's time. Every connection stays open to the end.
    batch = []
    for _ in range(10000):
        try:
            c = socket.create_connection(("127.0.0.1", s.mx), timeout=10)
        except OSError:
            refused += 1
            continue
        conns.append(c)
        batch.append(c)
        if len(batch) == 100:
            read_greetings(batch)
            batch = []
    read_greetings(batch)
    assert greeted == 2000, (greeted, refused)
    assert greeted + refused == 10000
    rss = rss_kib(s.proc.pid)
    assert rss < 256 * 1024, f"{rss} KiB with 2000 sessions held"
    for c in conns:
        c.close()
    # With the crowd gone, mail flows (once the server has seen the
    # sessions end and given their places back).
    wait_until(lambda: try_send(s.mx, "a@sender.test", body="Subject: after\r\n\r\nhi\r\n", timeout=10)[0] == 250, 10,
               "a message accepted after the crowd")
    assert s.wait_messages("u", 1)


class ResettingHop(ScriptedPeer):
    """A next hop that drops the connection in the middle of DATA for its
    first `resets` transactions, then takes the message."""

    def __init__(self, resets: int):
        self.resets = resets
        self.received: list[bytes] = []
        super().__init__()

    def session(self, conn):
        f = conn.makefile("rwb")

        def say(line: bytes):
            f.write(line + b"\r\n")
            f.flush()

        say(b"220 hop.remote.test ESMTP")
        for line in f:
            cmd = line.strip().upper()
            if cmd.startswith(b"EHLO"):
                say(b"250-hop.remote.test\r\n250 PIPELINING")
            elif cmd == b"DATA":
                say(b"354 go ahead")
                data = b""
                if self.resets > 0:
                    self.resets -= 1
                    f.read(50)
                    conn.close()  # mid-DATA, no reply
                    return
                for body in f:
                    if body == b".\r\n":
                        break
                    data += body
                self.received.append(data)
                say(b"250 2.0.0 taken")
            elif cmd == b"QUIT":
                say(b"221 bye")
                conn.close()
                return
            else:
                say(b"250 ok")


def test_a_next_hop_resetting_mid_data_loses_nothing(make_server, workdir):
    hop = ResettingHop(resets=2)
    dns = DnsServer(workdir / "hop-dns", {"test": "", "remote.test": "@ IN MX 10 mx.remote.test.\nmx IN A 127.0.0.1\n"}).start()
    ours = make_server(
        f"[delivery]\nport = {hop.port}\nretry_base_secs = 1\nretry_max_secs = 1\n",
        dns=f"127.0.0.1:{dns.port}",
        start=False,
    )
    # Port 25 never relays: the message leaves through an alias.
    assert ours.cli("alias", "add", "fwd@local.test", "bob@remote.test").returncode == 0
    ours.start()
    send(ours.mx, "a@sender.test", "fwd@local.test", "Subject: reset\r\n\r\n" + "line\r\n" * 200)
    wait_until(lambda: hop.received, 30, "the next hop to take the message")
    assert len(hop.received) == 1 and b"Subject: reset" in hop.received[0]
    assert len(ours.events("deferred")) >= 2, "each reset was a deferral, not a bounce"
    assert ours.events("delivered", bounced=lambda n: n != 0) == []
    dns.stop()


def test_an_auth_storm_from_many_addresses_keeps_memory_bounded(make_server):
    s = make_server(start=False)
    add_user(s, "alice@local.test")
    s.start()
    # The owner has logged in from here before (the throttle remembers).
    with smtplib.SMTP("127.0.0.1", s.sub, timeout=30) as c:
        c.starttls(context=insecure_tls())
        c.login("alice@local.test", PASSWORD)
    results = []

    def attempt(n: int):
        try:
            with smtplib.SMTP("127.0.0.1", s.sub, timeout=60, source_address=(f"127.0.{n // 250 + 1}.{n % 250 + 1}", 0)) as c:
                c.starttls(context=insecure_tls())
                c.login("alice@local.test", "wrong password")
        except smtplib.SMTPAuthenticationError as e:
            results.append(e.smtp_code)
        except (smtplib.SMTPException, OSError) as e:
            results.append(str(e))

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # The kernel's high-water mark: the peak over the server's life so
    # far, the storm included (no sampling thread to miss it).
    peak = rss_kib(s.proc.pid, "VmHWM")
    # Refused every time: 535 while checked, 454 once the account is
    # locked for strangers (a botnet's guesses).
    assert len(results) == 100 and set(results) <= {535, 454}, results[:5]
    # argon2id holds its memory cost per check; only a few run at once.
    print(f"peak RSS during the storm: {peak} KiB")
    assert peak < 200 * 1024, f"peak RSS {peak} KiB"
    # And the owner still gets in.
    with smtplib.SMTP("127.0.0.1", s.sub, timeout=30) as c:
        c.starttls(context=insecure_tls())
        c.login("alice@local.test", PASSWORD)


def test_deeply_nested_and_oversize_mime_is_handled(server):
    # 500 nested multiparts: parsed (DKIM/DMARC look at it) without
    # taking the server down, and accepted as content.
    depth = 500
    parts = "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n' for i in range(depth))
    closing = "".join(f"\r\n--b{i}--\r\n" for i in reversed(range(depth)))
    nested = "Subject: nested\r\nMIME-Version: 1.0\r\n" + parts + "Content-Type: text/plain\r\n\r\ndeep\r\n" + closing
    with smtplib.SMTP("127.0.0.1", server.mx, timeout=60) as c:
        c.sendmail("a@sender.test", ["u@local.test"], nested)
    assert any(b"Subject: nested" in m for m in server.wait_messages("u", 1))
    # Over the size limit: 552 5.3.4, and the session goes on.
    big = "Subject: big\r\n\r\n" + ("x" * 998 + "\r\n") * 27_000
    with smtplib.SMTP("127.0.0.1", server.mx, timeout=60) as c:
        try:
            c.sendmail("a@sender.test", ["u@local.test"], big)
            raise AssertionError("an oversize message was accepted")
        except smtplib.SMTPException as e:
            assert getattr(e, "smtp_code", 0) == 552 or "552" in str(e), e
    assert server.proc.poll() is None


