"""Fault injection (issue 8): the disk filling up while a message is
spooled, the spool turning read-only, the DNS server going away. Each
gets a correct 4xx, nothing half written is ever delivered, and the
server carries on when the fault is gone."""

import os
import smtplib
import subprocess
import time

import pytest

from dnsserver import DnsServer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def small_disk(workdir):
    mnt = workdir / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def server_on(make_server, disk, extra: str = ""):
    s = make_server(extra, start=False)
    s.config.write_text(s.config.read_text().replace(f'data_dir = "{s.data}"', f'data_dir = "{disk}/data"'))
    s.data = disk / "data"
    return s.start()


def fill(disk, leave_kib: int) -> None:
    """Take all but `leave_kib` KiB of the filesystem."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    with open(disk / "ballast", "wb") as f:
        f.write(b"\0" * max(0, free - leave_kib * 1024))
        f.flush()
        os.fsync(f.fileno())


def send(port: int, subject: str, size: int = 100) -> tuple[int, bytes]:
    line = b"x" * 76 + b"\r\n"
    body = f"Subject: {subject}\r\n\r\n".encode() + line * (size // len(line) + 1)
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
            c.sendmail("a@sender.test", ["u@local.test"], body)
        return 250, b""
    except smtplib.SMTPDataError as e:
        return e.smtp_code, e.smtp_error


def test_disk_full_while_spooling_is_452_and_nothing_half_written_is_delivered(make_server, small_disk):
    s = server_on(make_server, small_disk)
    assert send(s.mx, "before")[0] == 250
    s.wait_messages("u", 1)
    fill(small_disk, leave_kib=64)
    code, text = send(s.mx, "too big for the disk", size=2 * 1024 * 1024)
    assert code == 452 and b"4.3.1" in text, (code, text)
    time.sleep(1)
    assert not any(b"too big for the disk" in m for m in s.messages("u"))
    (small_disk / "ballast").unlink()
    assert send(s.mx, "after")[0] == 250, "the server carries on once there is room"
    got = s.wait_messages("u", 2)
    assert any(b"Subject: after" in m for m in got)
    assert not any(b"too big for the disk" in m for m in got)
    assert s.proc.poll() is None


def test_a_read_only_spool_loses_nothing_and_the_server_recovers(make_server, small_disk):
    s = server_on(make_server, small_disk)
    spool = s.data / "spool"
    # A read-only bind mount: no new file can be made in the spool
    # (segments already open stay writable, as on a real remount).
    subprocess.run(["mount", "--bind", str(spool), str(spool)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(spool)], check=True)
    codes = {}
    try:
        for i in range(5):
            code, text = send(s.mx, f"read only {i}", size=20_000)
            assert code in (250, 451, 452), (code, text)
            codes[f"read only {i}"] = code
    finally:
        subprocess.run(["umount", str(spool)], check=True)
    assert s.proc.poll() is None
    assert send(s.mx, "writable again")[0] == 250
    accepted = [subj for subj, c in codes.items() if c == 250] + ["writable again"]
    deadline = time.time() + 15
    while time.time() < deadline:
        got = b"".join(s.messages("u"))
        if all(f"Subject: {subj}\r\n".encode() in got for subj in accepted):
            break
        time.sleep(0.3)
    assert all(f"Subject: {subj}\r\n".encode() in got for subj in accepted), (codes, s.log.read_text()[-2000:])


def test_dns_going_away_gives_temperror_and_4xx_where_it_decides(make_server, workdir):
    zones = {"test": "", "sender.test": '@ IN TXT "v=spf1 ip4:127.0.0.1 -all"\n'}
    dns = DnsServer(workdir / "dying-dns", zones).start()
    s = make_server(
        '[[domain]]\nname = "strict.test"\npolicy = "reject-both-fail"\nrecipients = "any"\n',
        dns=f"127.0.0.1:{dns.port}",
    )
    dns.stop()
    # Labelled only: accepted, with SPF temperror recorded.
    # A domain not asked about before (nothing cached): the lookups time out.
    with smtplib.SMTP("127.0.0.1", s.mx, timeout=60) as c:
        c.sendmail("b@elsewhere.test", ["u@local.test"], "Subject: dns down\r\n\r\nhi\r\n")
    [msg] = [m for m in s.wait_messages("u", 1) if b"dns down" in m]
    assert b"spf=temperror" in msg
    # Where the decision depends on DNS: 451, never a silent pass.
    with pytest.raises(smtplib.SMTPDataError) as e, smtplib.SMTP("127.0.0.1", s.mx, timeout=60) as c:
        c.sendmail("c@third.test", ["u@strict.test"], "Subject: decided by dns\r\n\r\nhi\r\n")
    assert e.value.smtp_code == 451 and b"4.4.3" in e.value.smtp_error
    assert s.proc.poll() is None
