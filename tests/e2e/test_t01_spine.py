"""The server spine end to end: real clients deliver into a Maildir over
the mx listener, plain and with STARTTLS and BDAT; framing attacks and
limits get the right replies; nothing accepted is lost."""

import re
import smtplib

import pytest

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


SMUGGLING = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r\n",
    b"\r\n.\r",
]


@pytest.mark.parametrize("terminator", SMUGGLING, ids=[repr(t) for t in SMUGGLING])
@pytest.mark.parametrize("pipelined", [False, True])
def test_smuggling_terminators_are_refused(server, terminator, pipelined):
    c = Raw(server.mx)
    c.cmd("EHLO attacker.test")
    c.cmd("MAIL FROM:<a@remote.test>")
    c.cmd("RCPT TO:<victim@local.test>")
    assert c.cmd("DATA")[0] == 354
    smuggled = b"MAIL FROM:<admin@local.test>\r\nRCPT TO:<victim@local.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n"
    payload = b"Subject: first\r\n\r\nhello" + terminator + (smuggled if pipelined else b"")
    c.send(payload + b"\r\n.\r\n")
    code, text = c.reply()
    assert code == 554 and "5.6.0" in text, text
    session = server.session_of(c.sock)
    assert c.closed()
    # The session has ended (it logs so after its last command): had the
    # smuggled transaction run, its message would have been queued by now.
    server.wait_event("disconnect", session=session)
    assert server.events("queued") == []
    assert server.metric("portcullis_messages_accepted_total") == 0
    assert server.messages("victim") == []


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


def test_overlong_command_line_is_refused(server):
    c = Raw(server.mx)
    c.cmd("EHLO client.test")
    code, text = c.cmd("NOOP " + "x" * 600)
    assert code == 500 and "5.5.2" in text
    assert c.cmd("NOOP")[0] == 250


def test_more_than_100_recipients_get_452(server):
    c = Raw(server.mx)
    c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<a@remote.test>")
    for i in range(100):
        assert c.cmd(f"RCPT TO:<r{i}@local.test>")[0] == 250
    code, text = c.cmd("RCPT TO:<r100@local.test>")
    assert code == 452 and "4.5.3" in text


def test_oversize_message_is_refused_at_mail_and_in_data(make_server):
    s = make_server("[limits]\nmax_message_size = 2000\n")
    c = Raw(s.mx)
    _, ehlo = c.cmd("EHLO client.test")
    assert "SIZE 2000" in ehlo
    code, text = c.cmd("MAIL FROM:<a@remote.test> SIZE=5000")
    assert code == 552 and "5.3.4" in text
    c.cmd("MAIL FROM:<a@remote.test>")
    c.cmd("RCPT TO:<big@local.test>")
    c.cmd("DATA")
    c.send(b"x" * 900 + b"\r\n" + b"y" * 900 + b"\r\n" + b"z" * 900 + b"\r\n.\r\n")
    code, text = c.reply()
    assert code == 552 and "5.3.4" in text
    assert c.cmd("NOOP")[0] == 250
    assert s.messages("big") == []


def test_garbage_bytes_do_not_stop_the_server(server):
    import random

    rng = random.Random(7)
    c = Raw(server.mx)
    c.send(bytes(rng.randrange(256) for _ in range(4096)))
    # Whatever it answered, it must still serve a good client.
    c.close()
    send(server.mx, "a@remote.test", "frank@local.test", MESSAGE)
    assert server.wait_messages("frank", 1)


def test_silent_client_times_out_with_421(make_server):
    s = make_server("[limits]\ncommand_timeout_secs = 1\n")
    c = Raw(s.mx)
    code, text = c.reply()
    assert code == 421 and "4.4.2" in text
    assert c.closed()


def test_early_talker_is_refused(make_server):
    s = make_server(listener_extra="pregreet_wait_ms = 500")
    c = Raw(s.mx, greet=False)
    c.send(b"EHLO hasty.test\r\n")
    code, text = c.reply()
    assert code == 554 and "before the greeting" in text
    assert c.closed()
    polite = Raw(s.mx)
    assert polite.greeting[0] == 220


def test_relay_is_denied_on_mx(server):
    c = Raw(server.mx)
    c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<a@remote.test>")
    code, text = c.cmd("RCPT TO:<someone@elsewhere.test>")
    assert code == 554 and "5.7.1" in text


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
