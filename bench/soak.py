"""A soak test scaled down to a configurable duration (issue 8): mixed
traffic at a steady rate against one portcullis —

* inbound on port 25 (local delivery to Maildirs),
* submission on 587 with STARTTLS and AUTH (delivered locally),
* inbound to an alias that forwards to another domain (SRS, ARC, remote
  delivery to Postfix's smtp-sink behind MX records on a loopback NSD),

reporting throughput, p50/p99 of the time to the 250 after DATA, and the
server's RSS and open file descriptors sampled over time (they must not
grow). Prints a Markdown section for BENCHMARKS.md.

    python3 bench/soak.py --seconds 300 --rate 30
"""

import argparse
import os
import shutil
import smtplib
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    import socket

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


def proc_stats(pid: int) -> tuple[int, int]:
    rss = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=120)
    ap.add_argument("--rate", type=float, default=30, help="messages per second, all kinds together")
    a = ap.parse_args()
    target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache/portcullis-target"))
    binary = os.environ.get("PORTCULLIS_BIN", f"{target}/release/portcullis")
    work = Path(tempfile.mkdtemp(prefix="portcullis-soak-"))
    os.chmod(work, 0o755)
    mx, sub, http, dns_port, sink = (free_port() for _ in range(5))
    procs = []
    try:
        subprocess.run(["bash", str(ROOT / "bench/nsd_instance.sh"), "start", str(work / "dns"), str(dns_port),
                        "remote IN MX 10 mx.remote\nmx.remote IN A 127.0.0.1\nbench IN TXT \"v=spf1 ip4:127.0.0.1 -all\""],
                       check=True)
        procs.append(subprocess.Popen(["smtp-sink", "-u", "postfix", f"127.0.0.1:{sink}", "1000"]))
        (work / "p.toml").write_text(f"""
hostname = "mx.bench.test"
data_dir = "{work}/data"
[dns]
nameservers = ["127.0.0.1:{dns_port}"]
[[listener]]
role = "mx"
bind = ["127.0.0.1:{mx}"]
[[listener]]
role = "submission"
bind = ["127.0.0.1:{sub}"]
[http]
bind = "127.0.0.1:{http}"
[[domain]]
name = "bench.test"
recipients = "any"
[delivery]
port = {sink}
[submission]
recipients_per_hour = 1000000
recipients_per_day = 1000000

# Raw speed: one account sends far beyond its own history.
[containment]
enabled = false
messages_per_hour = 1000000
[class.default]
messages_per_minute = 0
connections_per_minute = 0
max_connections = 0
recipients_per_minute = 0
bytes_per_minute = 0
[admission]
per_range_connections_per_minute = 0
per_range_max_connections = 0
enforce_domain_ranges = false
""")
        cli = lambda *args, **kw: subprocess.run([binary, *args, "--config", str(work / "p.toml")], check=True, capture_output=True, **kw)
        cli("user", "add", "app@bench.test", "--password-stdin", input=b"soak password\n")
        cli("alias", "add", "fwd@bench.test", "someone@remote.test")
        cli("dkim", "keygen", "--domain", "bench.test", "--selector", "arc", "--algorithm", "rsa")
        server = subprocess.Popen([binary, "serve", "--config", str(work / "p.toml")],
                                  stdout=subprocess.DEVNULL, stderr=open(work / "server.log", "wb"))
        procs.append(server)
        wait_port(mx)
        run(a, server, mx, sub)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(["bash", str(ROOT / "bench/nsd_instance.sh"), "stop", str(work / "dns")])
        shutil.rmtree(work, ignore_errors=True)


def run(a, server, mx: int, sub: int) -> None:
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    lat: dict[str, list[float]] = {"inbound": [], "submission": [], "forwarded": []}
    failures: dict[str, int] = {k: 0 for k in lat}
    samples: list[tuple[float, int, int]] = []
    stop = time.monotonic() + a.seconds
    body = "Subject: soak\r\n\r\n" + "x" * 70 + "\r\n"

    def worker(kind: str, per_second: float):
        interval = 1.0 / per_second
        next_at = time.monotonic()
        conn = None
        while time.monotonic() < stop:
            next_at += interval
            try:
                if conn is None:
                    if kind == "submission":
                        conn = smtplib.SMTP("127.0.0.1", sub, timeout=30)
                        conn.starttls(context=tls)
                        conn.login("app@bench.test", "soak password")
                    else:
                        conn = smtplib.SMTP("127.0.0.1", mx, timeout=30)
                sender, rcpt = {
                    "inbound": ("a@elsewhere.test", "u@bench.test"),
                    "submission": ("app@bench.test", "u@bench.test"),
                    "forwarded": ("b@elsewhere.test", "fwd@bench.test"),
                }[kind]
                t0 = time.monotonic()
                conn.sendmail(sender, [rcpt], f"From: {sender}\r\n" + body)
                lat[kind].append(time.monotonic() - t0)
            except (smtplib.SMTPException, OSError):
                failures[kind] += 1
                conn = None
            time.sleep(max(0.0, next_at - time.monotonic()))

    def sampler():
        t0 = time.monotonic()
        while time.monotonic() < stop:
            rss, fds = proc_stats(server.pid)
            samples.append((time.monotonic() - t0, rss, fds))
            time.sleep(max(1.0, a.seconds / 20))

    share = {"inbound": 0.6, "submission": 0.2, "forwarded": 0.2}
    threads = [threading.Thread(target=worker, args=(k, a.rate * v / 2)) for k, v in share.items() for _ in range(2)]
    threads.append(threading.Thread(target=sampler))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report(a, lat, failures, samples)


def pct(v: list[float], p: float) -> float:
    if not v:
        return float("nan")
    v = sorted(v)
    return v[min(len(v) - 1, int(p / 100 * len(v)))] * 1000


def report(a, lat, failures, samples) -> None:
    print(f"`python3 bench/soak.py --seconds {a.seconds} --rate {a.rate:g}`\n")
    print("| traffic | messages | failures | msg/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|")
    for k, v in lat.items():
        print(f"| {k} | {len(v)} | {failures[k]} | {len(v) / a.seconds:.1f} | {pct(v, 50):.1f} | {pct(v, 99):.1f} |")
    print("\n| t (s) | RSS (KiB) | open fds |")
    print("|---|---|---|")
    for t, rss, fds in samples:
        print(f"| {t:.0f} | {rss} | {fds} |")
    if samples:
        first, last = samples[len(samples) // 4], samples[-1]
        print(f"\nFrom the first quarter to the end: RSS {first[1]} → {last[1]} KiB, fds {first[2]} → {last[2]}.")


if __name__ == "__main__":
    sys.exit(main())
