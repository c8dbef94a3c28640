"""Local domains delivered over LMTP (RFC 2033) into a real Dovecot
started by the test, instead of portcullis' own Maildirs."""

import os
import shutil
import subprocess

import pytest

from conftest import free_port, send, wait_port, wait_until

DOVECOT_CONF = """
protocols = lmtp
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
ssl = no
mail_location = maildir:{d}/mail/%d/%n/Maildir
default_internal_user = root
default_login_user = root
default_internal_group = root
first_valid_uid = 8
passdb {{
  driver = static
  args = nopassword=y
}}
userdb {{
  driver = static
  args = uid=8 gid=8 home={d}/mail/%d/%n
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
  user = root
}}
service anvil {{
  chroot =
}}
service stats {{
  chroot =
}}
"""


@pytest.fixture
def dovecot(workdir):
    if shutil.which("dovecot") is None:
        pytest.skip("dovecot is not installed (Debian dovecot-lmtpd)")
    d = workdir / "dovecot"
    for sub in ("run", "state", "mail"):
        (d / sub).mkdir(parents=True)
    os.chown(d / "mail", 8, 8)  # the mail user Debian creates
    os.chmod(workdir, 0o755)  # Dovecot delivers as that user: it must get in
    port = free_port()
    (d / "dovecot.conf").write_text(DOVECOT_CONF.format(d=d, port=port))
    subprocess.run(["dovecot", "-c", str(d / "dovecot.conf")], check=True)
    wait_port(port, timeout=5)
    yield d, port
    subprocess.run(["dovecot", "-c", str(d / "dovecot.conf"), "stop"], capture_output=True)


def test_mail_for_an_lmtp_domain_lands_in_dovecot(make_server, dovecot):
    d, port = dovecot
    s = make_server(f'[[domain]]\nname = "dv.test"\nrecipients = "any"\nlmtp = "127.0.0.1:{port}"\n')
    send(s.mx, "a@remote.test", ["user1@dv.test", "user2@dv.test"], "Subject: via LMTP\r\n\r\nhello\r\n")
    for user in ("user1", "user2"):
        new = d / "mail" / "dv.test" / user / "Maildir" / "new"
        [msg] = wait_until(lambda: new.is_dir() and [p.read_bytes() for p in new.iterdir()], 10, f"{user}'s Dovecot mailbox")
        assert b"Subject: via LMTP" in msg
        assert b"by mx.portcullis.test (portcullis)" in msg
    # Nothing went to portcullis' own Maildirs.
    assert not (s.data / "mail" / "dv.test").exists()
