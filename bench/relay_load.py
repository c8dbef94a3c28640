#!/usr/bin/env python3
"""Submission load for bench/relay.sh: SESSIONS parallel sessions, each
STARTTLS (+ AUTH when a user is given) once, then its share of MESSAGES
1 KiB messages over the same connection.

    relay_load.py PORT MESSAGES SESSIONS [USER PASSWORD]

RCPT_DOMAINS (comma-separated, default sink.test): the recipients'
domains, taken in turn.
"""

import smtplib
import ssl
import sys
import threading
import time
import os

port, total, sessions = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
auth = (sys.argv[4], sys.argv[5]) if len(sys.argv) > 5 else None
# 1 KiB of body in lines of 100 octets (a 1000-octet line is refused).
body = ("From: relay@bench.test\r\nSubject: relay bench\r\n\r\n" + ("x" * 98 + "\r\n") * 10).encode()
domains = os.environ.get("RCPT_DOMAINS", "sink.test").split(",")
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
errors = []


def worker(n):
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
            s.starttls(context=ctx)
            if auth:
                s.login(*auth)
            for i in range(n):
                s.sendmail("relay@bench.test", [f"u{i % 50}@{domains[i % len(domains)]}"], body)
    except Exception as e:  # reported, and the run fails
        errors.append(repr(e))


t0 = time.time()
share = [total // sessions + (1 if i < total % sessions else 0) for i in range(sessions)]
threads = [threading.Thread(target=worker, args=(n,)) for n in share]
for t in threads:
    t.start()
for t in threads:
    t.join()
if errors:
    print("errors:", errors[:3], file=sys.stderr)
    sys.exit(1)
print(f"{time.time() - t0:.3f}")
