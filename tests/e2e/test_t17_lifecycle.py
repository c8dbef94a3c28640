"""The server's life (issue 7): SIGHUP reloads the configuration without
dropping a session, a broken file is refused and the running one kept;
SIGTERM lets a message being sent finish, tells the rest 421 and loses
nothing; started as root, the server drops to its user after binding."""

import os
import signal
import smtplib
import subprocess
import threading

import pytest

from conftest import send, wait_until
from smtpraw import Raw


def size_advertised(port: int) -> int:
    c = Raw(port)
    code, text = c.cmd("EHLO client.test")
    c.close()
    [line] = [l for l in text.splitlines() if "SIZE" in l]
    return int(line.split("SIZE")[1].split()[0])


def test_sighup_reloads_a_limit_without_dropping_a_session(make_server):
    s = make_server("[limits]\nmax_message_size = 1000000\n")
    held = Raw(s.mx)
    assert held.cmd("EHLO client.test")[0] == 250
    s.config.write_text(s.config.read_text().replace("max_message_size = 1000000", "max_message_size = 2000000"))
    s.proc.send_signal(signal.SIGHUP)
    s.wait_event("reloaded")
    assert size_advertised(s.mx) == 2000000, "new sessions get the new limit"
    # The session from before the reload carries on, and can send.
    assert held.cmd("NOOP")[0] == 250
    assert held.cmd("MAIL FROM:<a@sender.test>")[0] == 250
    assert held.cmd("RCPT TO:<u@local.test>")[0] == 250
    assert held.cmd("DATA")[0] == 354
    held.send(b"Subject: across a reload\r\n\r\nhello\r\n.\r\n")
    assert held.reply()[0] == 250
    assert s.wait_messages("u", 1)


def test_sigterm_lets_the_message_being_sent_finish(make_server):
    s = make_server()
    c = Raw(s.mx)
    c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<a@sender.test>")
    c.cmd("RCPT TO:<u@local.test>")
    assert c.cmd("DATA")[0] == 354
    c.send(b"Subject: in flight\r\n\r\nfirst half\r\n")
    idle = Raw(s.mx)
    idle.cmd("EHLO idle.test")
    idle_session = s.session_of(idle.sock)
    s.proc.send_signal(signal.SIGTERM)
    code, text = idle.reply()
    assert code == 421 and "4.3.2" in text, "an idle session is told at once"
    # The rest of the message only once the server is well into stopping:
    # it has said so, and the idle session is gone.
    s.wait_event("shutdown")
    s.wait_event("disconnect", session=idle_session)
    c.send(b"second half\r\n.\r\n")
    code, text = c.reply()
    assert code == 250, text
    assert c.cmd("NOOP")[0] == 421
    assert s.proc.wait(timeout=15) == 0
    s.start()
    [msg] = s.wait_messages("u", 1)
    assert b"first half" in msg and b"second half" in msg


def test_sigterm_under_load_loses_nothing(make_server):
    s = make_server()
    accepted, stop = [], threading.Event()

    def client(n: int):
        i = 0
        while not stop.is_set():
            i += 1
            subject = f"m-{n}-{i}"
            try:
                with smtplib.SMTP("127.0.0.1", s.mx, timeout=10) as c:
                    c.sendmail("a@sender.test", ["u@local.test"], f"Subject: {subject}\r\n\r\nbody\r\n")
                accepted.append(subject)
            except (smtplib.SMTPException, OSError):
                if s.proc.poll() is not None:
                    return

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: len(accepted) >= 100, 60, "100 messages accepted")
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(timeout=35) == 0
    stop.set()
    for t in threads:
        t.join()
    s.start()

    def delivered():
        return {m.split(b"Subject: ")[1].split(b"\r\n")[0].decode() for m in s.messages("u")}

    wait_until(lambda: set(accepted) <= delivered(), 20,
               lambda: f"every accepted message delivered; missing {sorted(set(accepted) - delivered())[:10]}")


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_started_as_root_it_becomes_its_user_after_binding(make_server):
    s = make_server(start=False)
    s.config.write_text('user = "nobody"\n' + s.config.read_text())  # a top-level key
    for d in (s.workdir, s.workdir.parent):
        os.chmod(d, 0o755)  # nobody must reach its data directory
    s.start()
    [dropped] = s.wait_event("privileges_dropped")
    assert dropped["user"] == "nobody"
    owner = subprocess.run(["ps", "-o", "user=", "-p", str(s.proc.pid)], capture_output=True, text=True).stdout
    assert owner.strip() == "nobody"
    send(s.mx, "a@sender.test", "u@local.test", "Subject: x\r\n\r\nhello\r\n")
    assert s.wait_messages("u", 1)
    assert all(p.stat().st_uid != 0 for p in s.maildir("u").iterdir())
