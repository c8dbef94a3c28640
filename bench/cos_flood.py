"""The paper's scenario (seeds/002): a good, identified sender's goodput
while an unknown flood rotates source addresses across an IPv6 /48 (a
fresh /64 for nearly every connection, many concurrent sessions).

    python3 cos_flood.py --port P --seconds S --flood 200 [--no-flood]
        [--flood-mode churn|dribble] [--good-mode keep|reconnect]
        [--flood-cpu N --good-cpu M]

Flood modes: `churn` reconnects at once, with no back-off, whatever the
answer (the flood's best try at the connect stage); `dribble` holds each
connection 10 s, sending a NOOP every 3 s, then tries a message. Good
modes: `keep` sends every message on one session; `reconnect` opens a new
connection per message, as most MTAs do per batch.

Runs inside a network namespace where `ip -6 route add local
2001:db8::/32 dev lo` makes every address of 2001:db8::/32 bindable.
Prints one JSON line: the good sender's accepted messages and rate, and
what the flood got through."""

import argparse
import asyncio
import json
import os
import sys
import time
from asyncio.subprocess import PIPE

GOOD_SOURCE = "2001:db8:ffff::1"
MESSAGE = b"Subject: bench\r\nFrom: %s\r\n\r\n" + b"x" * 900 + b"\r\n.\r\n"


class Smtp:
    def __init__(self, reader, writer):
        self.r, self.w = reader, writer

    async def reply(self) -> int:
        while True:
            line = await self.r.readline()
            if not line:
                raise ConnectionError("closed")
            if line[3:4] != b"-":
                self.last = line.decode(errors="replace").strip()
                return int(line[:3])

    async def cmd(self, line: bytes) -> int:
        self.w.write(line + b"\r\n")
        await self.w.drain()
        return await self.reply()

    async def message(self, sender: str) -> int:
        """One transaction; 250 or the first refusal's code."""
        for line in (b"MAIL FROM:<%s>" % sender.encode(), b"RCPT TO:<u@bench.test>"):
            code = await self.cmd(line)
            if code >= 400:
                refusal = self.last
                await self.cmd(b"RSET")
                self.last = refusal
                return code
        code = await self.cmd(b"DATA")
        if code != 354:
            return code
        self.w.write(MESSAGE % sender.encode())
        await self.w.drain()
        return await self.reply()


async def connect(port: int, source: str):
    r, w = await asyncio.wait_for(
        asyncio.open_connection("::1", port, local_addr=(source, 0)), timeout=10
    )
    s = Smtp(r, w)
    if await s.reply() != 220 or await s.cmd(b"EHLO client.bench.test") != 250:
        w.close()
        raise ConnectionError(s.last)
    return s


def note(out: dict, text: str) -> None:
    """Keep a few distinct reasons the good sender was held up."""
    reasons = out.setdefault("good_reasons", [])
    if len(reasons) < 3 and text[:60] not in [r[:60] for r in reasons]:
        reasons.append(text[:160])


async def good_sender(port: int, stop: float, out: dict, reconnect: bool):
    s = None
    while time.monotonic() < stop:
        try:
            if s is None:
                s = await connect(port, GOOD_SOURCE)
            code = await s.message("news@good.test")
            if code == 250:
                out["good_accepted"] += 1
            else:
                out["good_deferred"] += 1
                note(out, s.last)
                await asyncio.sleep(0.05)
            if reconnect:
                s.w.write(b"QUIT\r\n")
                s.w.close()
                s = None
        except (OSError, ConnectionError, asyncio.TimeoutError) as e:
            s = None
            out["good_deferred"] += 1
            note(out, repr(e))
            await asyncio.sleep(0.05)


async def flooder(port: int, stop: float, out: dict, next_net: list, dribble: bool):
    while time.monotonic() < stop:
        next_net[0] += 1
        n = next_net[0]
        # A fresh /64 inside 2001:db8:1::/48 for nearly every connection.
        source = f"2001:db8:1:{n % 65536:x}::{n // 65536 + 1:x}"
        try:
            s = await connect(port, source)
            out["flood_connected"] += 1
            if dribble:
                # Hold the session 10 s, one line every 3 s.
                for _ in range(3):
                    await asyncio.sleep(3)
                    if await s.cmd(b"NOOP") >= 400:
                        raise ConnectionError(s.last)
                await asyncio.sleep(1)
            code = await s.message(f"offer{n}@flood.test")
            out["flood_accepted" if code == 250 else "flood_deferred"] += 1
            s.w.close()
        except (OSError, ConnectionError, asyncio.TimeoutError):
            out["flood_refused_at_connect"] += 1


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--flood", type=int, default=200)
    ap.add_argument("--no-flood", action="store_true")
    ap.add_argument("--role", choices=["good", "flood", "both"], default="both")
    ap.add_argument("--flood-mode", choices=["churn", "dribble"], default="churn")
    ap.add_argument("--good-mode", choices=["keep", "reconnect"], default="keep")
    ap.add_argument("--flood-cpu", type=int, help="pin the flood to this CPU")
    ap.add_argument("--good-cpu", type=int, help="pin the good sender to this CPU")
    a = ap.parse_args()
    # Alone (no flood), the good sender is pinned like under the flood.
    role = "good" if a.no_flood else a.role
    cpu = {"flood": a.flood_cpu, "good": a.good_cpu}.get(role)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    if a.role == "both" and not a.no_flood:
        # The flood in a process of its own: in one event loop the good
        # sender would wait behind 200 flood coroutines (a client artifact).
        return await both(a)
    out = dict.fromkeys(
        ["good_accepted", "good_deferred", "flood_accepted", "flood_deferred", "flood_refused_at_connect",
         "flood_connected"], 0
    )
    stop = time.monotonic() + a.seconds
    tasks = [good_sender(a.port, stop, out, a.good_mode == "reconnect")] if a.role != "flood" else []
    if not a.no_flood and a.role != "good":
        nets = [0]
        tasks += [flooder(a.port, stop, out, nets, a.flood_mode == "dribble") for _ in range(a.flood)]
    t0 = time.monotonic()
    try:
        # A peer that never answers (a tarpit, a server stuck on DNS) must
        # not hold the phase open: what finished in time is counted.
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=a.seconds + 15)
    except asyncio.TimeoutError:
        out["unfinished_at_deadline"] = True
    elapsed = min(time.monotonic() - t0, a.seconds + 15)
    out["seconds"] = round(elapsed, 1)
    out["good_per_s"] = round(out["good_accepted"] / elapsed, 1)
    out["flood_accepted_per_min"] = round(out["flood_accepted"] * 60 / elapsed, 1)
    out["flood_connected_per_s"] = round(out["flood_connected"] / elapsed, 1)
    print(json.dumps(out))


async def both(a) -> None:
    args = ["--port", str(a.port), "--seconds", str(a.seconds), "--flood", str(a.flood),
            "--flood-mode", a.flood_mode, "--good-mode", a.good_mode]
    for flag, cpu in (("--flood-cpu", a.flood_cpu), ("--good-cpu", a.good_cpu)):
        if cpu is not None:
            args += [flag, str(cpu)]
    procs = [
        await asyncio.create_subprocess_exec(sys.executable, __file__, *args, "--role", role, stdout=PIPE)
        for role in ("flood", "good")
    ]
    outs = [json.loads((await p.communicate())[0]) for p in procs]
    merged = outs[1]
    for k, v in outs[0].items():
        if k.startswith("flood"):
            merged[k] = v
    print(json.dumps(merged))


asyncio.run(main())
