"""Durability: a 250 after DATA means the message survives SIGKILL; the
queue can be inspected and managed from the command line."""

import os
import random
import re
import smtplib
import threading

from conftest import port_open, send, wait_until

MESSAGES = int(os.environ.get("PORTCULLIS_KILL_MESSAGES", "1000"))


def sender(server, accepted, next_n, lock, stop):
    while not stop.is_set():
        with lock:
            n = next_n[0]
            if n >= MESSAGES:
                return
            next_n[0] += 1
        body = f"Subject: msg-{n:05d}\r\nMessage-ID: <m{n}@remote.test>\r\n\r\nnumber {n}\r\n"
        while not stop.is_set():
            try:
                send(server.mx, "a@remote.test", "kill@local.test", body, timeout=5)
                with lock:
                    accepted.add(n)
                break
            except (OSError, smtplib.SMTPException):
                # The server died under us: this message was not answered
                # 250, so it is ours to send again once it listens again.
                wait_until(lambda: stop.is_set() or port_open(server.mx), 60, "the server to listen again")


def delivered_numbers(server):
    found = set()
    for m in server.messages("kill"):
        hit = re.search(rb"Subject: msg-(\d+)", m)
        if hit:
            found.add(int(hit.group(1)))
    return found


def test_sigkill_at_random_points_loses_no_accepted_message(server):
    accepted, next_n, lock, stop = set(), [0], threading.Lock(), threading.Event()
    threads = [threading.Thread(target=sender, args=(server, accepted, next_n, lock, stop)) for _ in range(4)]
    for t in threads:
        t.start()
    rng = random.Random(42)
    kills = 0
    # Kill at random points of the stream: each time another random
    # number of messages has been answered 250 (the four senders are then
    # anywhere in their transactions), and restart at once.
    while any(t.is_alive() for t in threads):
        target = min(len(accepted) + rng.randint(20, 120), MESSAGES)
        wait_until(lambda: len(accepted) >= target or not any(t.is_alive() for t in threads), 240,
                   f"{target} messages accepted")
        if not any(t.is_alive() for t in threads):
            break
        server.kill()
        kills += 1
        server.start()
    stop.set()
    for t in threads:
        t.join()
    assert len(accepted) == MESSAGES, f"only {len(accepted)} accepted"
    print(f"{kills} kills, {len(accepted)} accepted")
    assert kills >= 3
    # The restarted server delivers what it recovered.
    wait_until(lambda: accepted <= delivered_numbers(server), 60, "every accepted message delivered")
    lost = accepted - delivered_numbers(server)
    assert not lost, f"{len(lost)} accepted messages lost after {kills} kills: {sorted(lost)[:10]}"


def test_queue_list_show_delete(make_server):
    s = make_server()
    # Make local delivery fail: the mail root is a file, not a directory,
    # so the message stays queued and is retried.
    s.stop()
    (s.data / "mail").write_text("not a directory")
    s.start()
    with smtplib.SMTP("127.0.0.1", s.mx) as c:
        c.sendmail("a@remote.test", ["held@local.test"], "Subject: held\r\n\r\nstays queued\r\n")
    s.stop()
    listing = s.cli("queue", "list")
    assert listing.returncode == 0, listing.stderr
    assert "1 message(s) queued" in listing.stdout
    qid = listing.stdout.split()[0]
    shown = s.cli("queue", "show", qid)
    assert "held@local.test" in shown.stdout and "stays queued" in shown.stdout
    assert s.cli("queue", "delete", qid).returncode == 0
    assert "0 message(s) queued" in s.cli("queue", "list").stdout
    assert s.cli("queue", "delete", qid).returncode != 0
