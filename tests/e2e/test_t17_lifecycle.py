"""The server's life (issue 7): SIGHUP reloads the configuration without
dropping a session, a broken file is refused and the running one kept;
SIGTERM lets a message being sent finish, tells the rest 421 and loses
nothing; started as root, the server drops to its user after binding."""

import os
import signal
import smtplib
import subprocess
import threading
import time

import pytest

from smtpraw import Raw


def wait_log(s, needle: str, timeout: float = 5.0) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = s.log.read_text()
        if needle in text:
            return text
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} not in the log:\n{s.log.read_text()[-2000:]}")


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
    wait_log(s, '"reloaded"')
    assert size_advertised(s.mx) == 2000000, "new sessions get the new limit"
    # The session from before the reload carries on, and can send.
    assert held.cmd("NOOP")[0] == 250
    assert held.cmd("MAIL FROM:<a@sender.test>")[0] == 250
    assert held.cmd("RCPT TO:<u@local.test>")[0] == 250
    assert held.cmd("DATA")[0] == 354
    held.send(b"Subject: across a reload\r\n\r\nhello\r\n.\r\n")
    assert held.reply()[0] == 250
    assert s.wait_messages("u", 1)


def test_a_broken_config_on_sighup_keeps_the_running_one(make_server):
    s = make_server("[limits]\nmax_message_size = 1000000\n")
    good = s.config.read_text()
    s.config.write_text(good.replace("max_message_size = 1000000", 'max_message_size = "big"'))
    s.proc.send_signal(signal.SIGHUP)
    log = wait_log(s, "reload_failed")
    assert "portcullis.toml:" in log and "limits.max_message_size" in log
    assert size_advertised(s.mx) == 1000000
    assert s.proc.poll() is None


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
    s.proc.send_signal(signal.SIGTERM)
    code, text = idle.reply()
    assert code == 421 and "4.3.2" in text, "an idle session is told at once"
    time.sleep(0.3)
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
    while len(accepted) < 100:
        time.sleep(0.01)
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(timeout=35) == 0
    stop.set()
    for t in threads:
        t.join()
    s.start()
    deadline = time.time() + 20
    while time.time() < deadline:
        got = {m.split(b"Subject: ")[1].split(b"\r\n")[0].decode() for m in s.messages("u")}
        if set(accepted) <= got:
            break
        time.sleep(0.2)
    assert set(accepted) <= got, sorted(set(accepted) - got)[:10]


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_started_as_root_it_becomes_its_user_after_binding(make_server):
    s = make_server(start=False)
    s.config.write_text('user = "nobody"\n' + s.config.read_text())  # a top-level key
    for d in (s.workdir, s.workdir.parent):
        os.chmod(d, 0o755)  # nobody must reach its data directory
    s.start()
    wait_log(s, "privileges_dropped")
    owner = subprocess.run(["ps", "-o", "user=", "-p", str(s.proc.pid)], capture_output=True, text=True).stdout
    assert owner.strip() == "nobody"
    with smtplib.SMTP("127.0.0.1", s.mx) as c:
        c.sendmail("a@sender.test", ["u@local.test"], "Subject: x\r\n\r\nhello\r\n")
    assert s.wait_messages("u", 1), s.log.read_text()[-1500:]
    assert all(p.stat().st_uid != 0 for p in s.maildir("u").iterdir())
