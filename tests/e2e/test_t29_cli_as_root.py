"""The CLI run as root beside a server that dropped to its `user` (issue
22): what the CLI writes into the data directory gets the directory's
owner, and the running server is asked to load it, so `user add`,
`dkim keygen` and `alias add` work at once or fail saying why."""

import os
import pwd
import subprocess

import pytest

from conftest import PASSWORD, add_user, login, send

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to nobody")


@pytest.fixture
def as_nobody(make_server):
    s = make_server(start=False)
    # The server drops to nobody after binding; nobody must reach the
    # data directory through the test's private work directory.
    for d in (s.workdir.parent, s.workdir):
        os.chmod(d, 0o755)
    s.config.write_text(s.config.read_text().replace('hostname = ', 'user = "nobody"\nhostname = ', 1))
    return s.start()


def test_a_root_user_add_gives_an_account_the_server_can_use(as_nobody):
    s = as_nobody
    add_user(s, "carol@local.test")
    nobody = pwd.getpwnam("nobody").pw_uid
    assert (s.data / "accounts.json").stat().st_uid == nobody
    with login(s.sub, "carol@local.test", PASSWORD) as c:
        c.mail("carol@local.test")
        assert c.rcpt("u@local.test")[0] == 250


def test_a_root_dkim_keygen_gives_keys_the_server_signs_with(as_nobody):
    s = as_nobody
    r = s.cli("dkim", "keygen", "--domain", "local.test", "--selector", "s9")
    assert r.returncode == 0, r.stderr
    assert "v=DKIM1" in r.stdout
    nobody = pwd.getpwnam("nobody").pw_uid
    assert all(p.stat().st_uid == nobody for p in (s.data / "dkim").rglob("*"))
    add_user(s, "dave@local.test")
    with login(s.sub, "dave@local.test", PASSWORD) as c:
        c.sendmail("dave@local.test", ["u@local.test"], "From: dave@local.test\r\nSubject: signed\r\n\r\nhi\r\n")
    assert b"s=s9" in s.wait_message("u", b"Subject: signed")


def test_a_root_alias_add_is_loaded_by_the_server(as_nobody):
    s = as_nobody
    r = s.cli("alias", "add", "team@local.test", "u@local.test")
    assert r.returncode == 0 and "team@local.test" in r.stdout, r.stderr
    send(s.mx, "a@remote.test", "team@local.test", "Subject: via alias\r\n\r\nhi\r\n")
    s.wait_message("u", b"Subject: via alias")


def test_a_change_the_server_cannot_load_fails_saying_why(as_nobody):
    s = as_nobody
    # A data directory handed back to root: what root writes there stays
    # root's, 0600, which the server (nobody) cannot read.
    os.chown(s.data, 0, 0)
    os.chmod(s.data, 0o755)
    r = subprocess.run(s.cli_args("user", "add", "frank@local.test", "--password-stdin"), input=PASSWORD + "\n",
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "the running server cannot load the accounts" in r.stderr and "ermission denied" in r.stderr, r.stderr
