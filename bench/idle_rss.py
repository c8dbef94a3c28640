#!/usr/bin/env python3
"""Peak RSS of a fresh portcullis holding N idle SMTP connections on the
mx listener (each has read its greeting and then says nothing).

    python3 bench/idle_rss.py [N]     # default 5000; prints a Markdown line
"""

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
PORT = 3527
ROOT = Path(__file__).resolve().parents[1]
TARGET = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache/portcullis-target"))
BIN = os.environ.get("PORTCULLIS_BIN", f"{TARGET}/release/portcullis")


def status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def main() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = Path(tempfile.mkdtemp(prefix="portcullis-rss-"))
    cfg = work / "p.toml"
    cfg.write_text(
        f'hostname = "mx.bench.test"\ndata_dir = "{work}/data"\n'
        # Idle sessions make no lookups; still, never the system resolver.
        '[dns]\nnameservers = ["127.0.0.1:9"]\n'
        f'[[listener]]\nrole = "mx"\nbind = ["127.0.0.1:{PORT}"]\n'
        # Memory per idle session, not admission: no connection limits.
        "[class.default]\nmax_connections = 0\nconnections_per_minute = 0\n"
        "[admission]\nper_range_max_connections = 0\nper_range_connections_per_minute = 0\n"
    )
    server = subprocess.Popen([BIN, "serve", "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", PORT), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        base = status(server.pid, "VmRSS")
        conns = []
        for _ in range(N):
            s = socket.create_connection(("127.0.0.1", PORT))
            conns.append(s)
        for s in conns:
            s.recv(512)
        time.sleep(2)
        rss, hwm = status(server.pid, "VmRSS"), status(server.pid, "VmHWM")
        per_conn = (rss - base) / N
        print(
            f"| {N} idle connections | baseline RSS {base / 1024:.1f} MiB | RSS {rss / 1024:.1f} MiB "
            f"| peak {hwm / 1024:.1f} MiB | {per_conn:.1f} KiB per connection |"
        )
        for s in conns:
            s.close()
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
