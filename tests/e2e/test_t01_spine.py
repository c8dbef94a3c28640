"""The server spine end to end: real clients deliver into a Maildir over
the mx listener, plain and with STARTTLS and BDAT; nothing accepted is
lost. Framing attacks, limits and timeouts that need no real client are
in-process: crates/server/tests/inprocess.rs."""

import re
import smtplib

from conftest import insecure_tls, send, swaks
from smtpraw import Raw

MESSAGE = b"From: a@remote.test\r\nTo: u@local.test\r\nSubject: hello\r\n\r\nbody line\r\n"


def queue_id(text: str) -> str:
    m = re.search(r"queued as ([0-9A-F]+)", text)
    assert m, text
    return m.group(1)


def test_swaks_delivers_into_maildir(server):
    r = swaks("--server", f"127.0.0.1:{server.mx}", "--from", "a@remote.test", "--to", "alice@local.test")
    assert r.returncode == 0, r.stdout + r.stderr
    qid = queue_id(r.stdout)
    [msg] = server.wait_messages("alice", 1)
    assert msg.startswith(b"Return-Path: <a@remote.test>\r\n")
    assert f"id {qid}".encode() in msg
    assert b"by mx.portcullis.test (portcullis) with ESMTP" in msg


def test_swaks_delivers_with_starttls(server):
    r = swaks("--server", f"127.0.0.1:{server.mx}", "--from", "a@remote.test", "--to", "bob@local.test", "-tls")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "TLS started" in r.stdout
    [msg] = server.wait_messages("bob", 1)
    assert b"with ESMTPS" in msg
    assert b"(using TLSv1.3 with cipher" in msg


def test_smtplib_delivers_plain_and_starttls(server):
    with smtplib.SMTP("127.0.0.1", server.mx) as s:
        s.sendmail("a@remote.test", ["carol@local.test"], MESSAGE)
    with smtplib.SMTP("127.0.0.1", server.mx) as s:
        s.starttls(context=insecure_tls())
        s.sendmail("a@remote.test", ["carol@local.test"], MESSAGE)
    msgs = server.wait_messages("carol", 2)
    assert len(msgs) == 2
    assert sum(b"with ESMTPS" in m for m in msgs) == 1


def test_smtplib_delivers_with_bdat(server):
    with smtplib.SMTP("127.0.0.1", server.mx) as s:
        s.ehlo()
        assert s.has_extn("chunking")
        assert s.mail("a@remote.test")[0] == 250
        assert s.rcpt("dave@local.test")[0] == 250
        first, second = MESSAGE[:20], MESSAGE[20:]
        s.putcmd("BDAT", str(len(first)))
        s.send(first)
        assert s.getreply()[0] == 250
        s.putcmd("BDAT", f"{len(second)} LAST")
        s.send(second)
        code, text = s.getreply()
        assert code == 250, text
    [msg] = server.wait_messages("dave", 1)
    assert msg.endswith(MESSAGE)


def test_dsn_parameters_are_accepted_and_kept(server):
    with smtplib.SMTP("127.0.0.1", server.mx) as s:
        s.ehlo()
        assert s.has_extn("dsn")
        s.sendmail(
            "a@remote.test",
            ["erin@local.test"],
            MESSAGE,
            mail_options=["RET=HDRS", "ENVID=abc123"],
            rcpt_options=["NOTIFY=FAILURE,DELAY", "ORCPT=rfc822;erin@local.test"],
        )
    assert server.wait_messages("erin", 1)


def test_commands_pipelined_after_starttls_are_not_executed(server):
    c = Raw(server.mx)
    c.cmd("EHLO client.test")
    c.send(b"STARTTLS\r\nMAIL FROM:<injected@remote.test>\r\n")
    code, _ = c.reply()
    assert code == 220
    c.starttls()
    # Had the injected MAIL run, RCPT would be accepted now.
    code, text = c.cmd("RCPT TO:<u@local.test>")
    assert code == 503, text
    code, text = c.cmd("EHLO client.test")
    assert code == 250 and "STARTTLS" not in text


def test_more_than_100_recipients_get_452(server):
    c = Raw(server.mx)
    c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<a@remote.test>")
    for i in range(100):
        assert c.cmd(f"RCPT TO:<r{i}@local.test>")[0] == 250
    code, text = c.cmd("RCPT TO:<r100@local.test>")
    assert code == 452 and "4.5.3" in text


def test_garbage_bytes_do_not_stop_the_server(server):
    import random

    rng = random.Random(7)
    c = Raw(server.mx)
    c.send(bytes(rng.randrange(256) for _ in range(4096)))
    # Whatever it answered, it must still serve a good client.
    c.close()
    send(server.mx, "a@remote.test", "frank@local.test", MESSAGE)
    assert server.wait_messages("frank", 1)


def test_submission_without_auth_is_refused_even_locally(server):
    with smtplib.SMTP("127.0.0.1", server.sub) as s:
        s.starttls(context=insecure_tls())
        s.ehlo()
        code, text = s.mail("alice@local.test")
        assert code == 530 and b"5.7.0" in text


def test_implicit_tls_on_submissions(server):
    with smtplib.SMTP_SSL("127.0.0.1", server.subs, context=insecure_tls()) as s:
        code, _ = s.ehlo()
        assert code == 250
        assert not s.has_extn("starttls")


def test_other_sessions_keep_working_while_one_is_stuck(server):
    idle = [Raw(server.mx) for _ in range(20)]
    send(server.mx, "a@remote.test", "gina@local.test", MESSAGE)
    assert server.wait_messages("gina", 1)
    for c in idle:
        c.close()
