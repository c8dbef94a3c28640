"""The open-relay battery: port 25 refuses every classic trick to reach a
domain that is not ours, and nothing is ever queued for one."""

import pytest

from smtpraw import Raw

CONFIG = '[[domain]]\nname = "label.test"\nrecipients = "any"\n'

TRICKS = [
    "<user@remote.test>",
    "<user@REMOTE.TEST>",
    "<USER@Remote.Test>",
    "<user%remote.test@label.test>",
    "<user%remote.test%label.test@label.test>",
    "<remote.test!user@label.test>",
    "<remote.test!user>",
    "<@label.test:user@remote.test>",
    "<@label.test,@mx.portcullis.test:user@remote.test>",
    '<"user@remote.test"@label.test>',
    '<"user%remote.test"@label.test>',
    '<"user@remote.test">',
    '<"user"@remote.test>',
    "<user@remote.test.>",
    "<user@label.test.>",
    "<user@[127.0.0.1]>",
    "<user@[192.0.2.1]>",
    "<user@[IPv6:::1]>",
    "<user@[mx.portcullis.test]>",
    "<user@remote.test@label.test>",
    "<user@label.test@remote.test>",
    "<user\\@remote.test@label.test>",
    "<user@remote.test%label.test>",
    "<user@label.test%remote.test>",
    "<user@sub.label.test>",
    "<user@label.test.remote.test>",
    "<user@localhost>",
    "<postmaster@remote.test>",
    "<user@xn--rmote-fsa.test>",
    "<user@rémote.test>",
    "<user@remote.test >",
    "<user@remote.test> ORCPT=rfc822;user@label.test",
    " <user@remote.test>",
    "<user@remote.test",
    "user@remote.test",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from conftest import Server

    s = Server(tmp_path_factory.mktemp("relay"), CONFIG).start()
    yield s
    s.stop()


def test_battery_is_large_enough():
    assert len(TRICKS) >= 30


@pytest.mark.parametrize("trick", TRICKS)
def test_relay_trick_is_refused(server, trick):
    c = Raw(server.mx)
    c.cmd("EHLO relay-tester.test")
    assert c.cmd("MAIL FROM:<spammer@remote.test>")[0] == 250
    code, text = c.cmd(f"RCPT TO:{trick}")
    assert code >= 500, f"{trick}: {text}"
    code, _ = c.cmd("DATA")
    assert code >= 500
    c.close()


def test_nothing_was_queued_for_a_remote_domain(server):
    out = server.cli("queue", "list").stdout
    assert "0 message(s) queued" in out
    assert not (server.data / "mail" / "remote.test").exists()
