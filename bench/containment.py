"""Containment's cost and effect (issue 29), in one run:

* the submission rate (587, STARTTLS, AUTH, one message per session
  round trip) with containment on (its defaults) against off, same
  build, same machine, alternating rounds. The load is what containment
  must leave alone: many accounts (`ACCOUNTS`, by default enough that
  each sends at most `PER_ACCOUNT` = 50 messages, half the volume floor
  and a quarter of the hourly quota), each writing to a few outside
  recipients from one network; a phase fails if any account is
  contained or any message refused;
* for each bot scenario, how many recipients outside our domains were
  delivered (by the smarthost, Postfix's smtp-sink) before the hold.

Prints a Markdown table. Run through bench/containment.sh. The rates
need a quiet machine (other builds skew them); the bot counts do not.
"""

import concurrent.futures
import json
import os
import shutil
import socket
import ssl
import smtplib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = os.environ["PORTCULLIS_BIN"]
ROUNDS = int(os.environ.get("ROUNDS", "2"))
MESSAGES = int(os.environ.get("MESSAGES", "2000"))
SESSIONS = int(os.environ.get("SESSIONS", "8"))
PER_ACCOUNT = int(os.environ.get("PER_ACCOUNT", "50"))
ACCOUNTS = int(os.environ.get("ACCOUNTS", str(-(-MESSAGES // PER_ACCOUNT))))
PASSWORD = "bench password, long enough"
USER = "app@bench.test"
LEGIT = [f"user{i}@bench.test" for i in range(ACCOUNTS)]
ACCOUNTS_FILE: Path  # made once by make_accounts, copied into every server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def tls() -> ssl.SSLContext:
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


class Server:
    def __init__(self, work: Path, containment: str, sink: int):
        self.dir = work
        self.sub, self.mx, self.http = free_port(), free_port(), free_port()
        work.mkdir(parents=True)
        self.config = work / "portcullis.toml"
        self.config.write_text(f"""
hostname = "mx.bench.test"
data_dir = "{work}/data"
[dns]
nameservers = ["127.0.0.1:9"]
[[listener]]
role = "mx"
bind = ["127.0.0.1:{self.mx}"]
[[listener]]
role = "submission"
bind = ["127.0.0.1:{self.sub}"]
[http]
bind = "127.0.0.1:{self.http}"
[[domain]]
name = "bench.test"
recipients = "reject-unknown"
[submission]
recipients_per_hour = 1000000
recipients_per_day = 1000000
[limits]
tarpit_step_ms = 0
[delivery]
smarthost = "127.0.0.1:{sink}"
[containment]
{containment}
""")
        (work / "data").mkdir()
        shutil.copy(ACCOUNTS_FILE, work / "data" / "accounts.json")
        self.log = open(work / "log", "wb")
        env = {**os.environ, "PORTCULLIS_LOG_FORMAT": "json"}
        self.proc = subprocess.Popen([BIN, "serve", "--config", str(self.config)], stdout=self.log, stderr=self.log,
                                     env=env)
        wait_port(self.sub)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)

    def events(self, name: str):
        out = []
        for line in (self.dir / "log").read_text(errors="replace").splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("event") == name:
                out.append(e)
        return out


def session(port: int, n: int, source: str = "127.0.0.1", rcpts=("u@bench.test",), user: str = USER) -> int:
    """`n` messages in one session as `user`; how many were accepted."""
    ok = 0
    with smtplib.SMTP("127.0.0.1", port, source_address=(source, 0), timeout=30) as c:
        c.starttls(context=tls())
        c.ehlo()
        c.login(user, PASSWORD)
        for i in range(n):
            try:
                c.sendmail(user, list(rcpts), f"From: {user}\r\nSubject: m{i}\r\n\r\nhello\r\n")
                ok += 1
            except smtplib.SMTPException:
                return ok
    return ok


def rate(s: Server) -> float:
    """The legitimate load: every account one session, its share of
    `MESSAGES` to three outside friends, `SESSIONS` at once."""
    shares = [MESSAGES // ACCOUNTS + (1 if i < MESSAGES % ACCOUNTS else 0) for i in range(ACCOUNTS)]

    def one(i: int) -> int:
        friends = [f"friend{(i + k) % 7}@far.test" for k in range(3)]
        return session(s.sub, shares[i], rcpts=friends, user=LEGIT[i])

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(SESSIONS) as pool:
        done = sum(pool.map(one, range(ACCOUNTS)))
    elapsed = time.monotonic() - t0
    if done != MESSAGES:
        raise SystemExit(f"only {done} of {MESSAGES} accepted ({s.dir / 'log'})")
    if s.events("account_contained"):
        raise SystemExit(f"containment touched the legitimate load: {s.events('account_contained')[0]}")
    return done / elapsed


def bot(s: Server, per_message: int, messages: int) -> tuple[int, int]:
    """The bot from 20 /24s: messages accepted, outside recipients delivered."""
    accepted = 0
    for n in range(messages):
        rcpts = [f"nobody{n}-{i}@bench.test" if i % 3 == 2 else f"victim{n}-{i}@far.test" for i in range(per_message)]
        try:
            accepted += session(s.sub, 1, f"127.0.{n % 20 + 1}.1", rcpts)
        except (smtplib.SMTPException, OSError):
            pass
    # Whatever left before the hold has left by now, or is held.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(s.events("queued")) > len(s.events("delivered")) + len(
            s.events("held")) + len(s.events("account_messages_held")):
        time.sleep(0.2)
    return accepted, sum(e.get("delivered", 0) for e in s.events("delivered"))


def make_accounts(work: Path) -> Path:
    """One accounts file for every server (hashing a password per
    account per server would cost more than the runs)."""
    config = work / "accounts.toml"
    config.write_text(f'data_dir = "{work}/accounts"\n[[domain]]\nname = "bench.test"\n')
    for user in [USER, "u@bench.test"] + LEGIT:
        subprocess.run([BIN, "user", "add", user, "--password-stdin", "--config", str(config)],
                       input=PASSWORD + "\n", text=True, check=True, capture_output=True)
    return work / "accounts" / "accounts.json"


def main():
    global ACCOUNTS_FILE
    work = Path(tempfile.mkdtemp(prefix="portcullis-containment-"))
    ACCOUNTS_FILE = make_accounts(work)
    sink_port = free_port()
    sink = subprocess.Popen(["smtp-sink", "-u", "postfix", f"127.0.0.1:{sink_port}", "100"])
    try:
        rates = {"on": [], "off": []}
        for r in range(ROUNDS):
            for mode, text in (("off", "enabled = false"), ("on", "enabled = true")):
                s = Server(work / f"{mode}{r}", text, sink_port)
                try:
                    rates[mode].append(rate(s))
                finally:
                    s.stop()
        bots = {}
        for name, per, msgs in (("fast (50 rcpts/msg, 1/3 unknown, 20 nets)", 50, 20),
                                ("slow (5 rcpts/msg, 1/3 unknown, 20 nets)", 5, 60)):
            s = Server(work / f"bot{len(bots)}", "", sink_port)
            try:
                bots[name] = bot(s, per, msgs)
                bots[name] += (len(s.events("account_contained")) > 0,)
            finally:
                s.stop()
    finally:
        sink.terminate()
        sink.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    med = lambda v: sorted(v)[len(v) // 2]
    print(f"Submission ({MESSAGES} messages from {ACCOUNTS} accounts, 3 outside recipients each, "
          f"{SESSIONS} sessions at once, {ROUNDS} rounds each):\n")
    print("| round | containment off msg/s | containment on msg/s |\n|---|---|---|")
    for i in range(ROUNDS):
        print(f"| {i + 1} | {rates['off'][i]:.0f} | {rates['on'][i]:.0f} |")
    print(f"\nRatio on/off (medians): **{med(rates['on']) / med(rates['off']):.2f}**\n")
    print("\nBots (a stolen password, logging in from 20 /24s):\n")
    print("| bot | messages accepted | outside recipients delivered before hold | held |\n|---|---|---|---|")
    for name, (acc, delivered, held) in bots.items():
        print(f"| {name} | {acc} | {delivered} | {'yes' if held else 'no'} |")


if __name__ == "__main__":
    sys.exit(main())
