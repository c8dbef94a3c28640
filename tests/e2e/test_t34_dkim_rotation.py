"""DKIM key rotation (issue 20): `dkim rotate` makes a new selector and
prints its record; signing switches to it only once DNS serves the record
(`dkim activate` checks, through the config's resolver); the old
selector stays listed by dns-records until `dkim retire`. With
`dkim_rotate_days` the server starts the rotation itself."""

import os
import re
import time

import dkim

from conftest import add_user, free_port, submit, wait_until
from dnsserver import DnsServer


def signed_with(s, subject: str) -> bytes:
    submit(s, "u@local.test", f"From: alice@local.test\r\nTo: u@local.test\r\nSubject: {subject}\r\n\r\nhi\r\n")
    msg = s.wait_message("u", f"Subject: {subject}".encode())
    return msg


def test_a_rotated_key_signs_once_dns_serves_it_and_the_old_one_retires(make_server, tmp_path):
    port = free_port()
    dns = DnsServer(tmp_path / "before", {"test": "", "local.test": ""}, port=port).start()
    s = make_server(dns=f"127.0.0.1:{port}", start=False)
    add_user(s, "alice@local.test")
    assert s.cli("dkim", "keygen", "--domain", "local.test", "--selector", "s1").returncode == 0
    s.start()
    try:
        r = s.cli("dkim", "rotate", "--domain", "local.test", "--selector", "s2", "--algorithm", "ed25519")
        assert r.returncode == 0, r.stderr
        record = r.stdout.splitlines()[0]
        assert record.startswith("s2._domainkey.local.test. IN TXT")
        assert "; pending" in s.cli("dns-records", "local.test").stdout
        msg = signed_with(s, "before the switch")
        assert b"s=s1" in msg and b"s=s2" not in msg

        # DNS does not serve the new record yet: signing stays with s1.
        r = s.cli("dkim", "activate", "--domain", "local.test", "--selector", "s2")
        assert r.returncode != 0 and "does not serve the new key" in r.stderr, r.stderr
        dns.stop()
        dns = DnsServer(tmp_path / "after", {"test": "", "local.test": record + "\n"}, port=port).start()
        r = s.cli("dkim", "activate", "--domain", "local.test", "--selector", "s2")
        assert r.returncode == 0 and "retired: s1" in r.stdout, r.stdout + r.stderr
        msg = signed_with(s, "after the switch")
        assert b"s=s2" in msg and b"s=s1" not in msg
        txt = "".join(re.findall(r'"([^"]*)"', record)).encode()
        assert dkim.verify(msg, dnsfunc=lambda name, timeout=5: txt), "dkimpy verifies s2's signature"

        listed = s.cli("dns-records", "local.test").stdout
        assert "s1._domainkey.local.test." in listed and "; retired" in listed
        r = s.cli("dkim", "retire", "--domain", "local.test", "--grace-days", "0")
        assert r.returncode == 0 and "removed s1" in r.stdout, r.stdout + r.stderr
        assert "s1._domainkey" not in s.cli("dns-records", "local.test").stdout
    finally:
        dns.stop()


def test_the_server_switches_to_a_pending_key_once_dns_serves_it(make_server, tmp_path):
    port = free_port()
    dns = DnsServer(tmp_path / "before", {"test": "", "local.test": ""}, port=port).start()
    s = make_server("[submission]\ndkim_activate_check_secs = 1\n", dns=f"127.0.0.1:{port}", start=False)
    add_user(s, "alice@local.test")
    assert s.cli("dkim", "keygen", "--domain", "local.test", "--selector", "s1").returncode == 0
    s.start()
    try:
        record = s.cli("dkim", "rotate", "--domain", "local.test", "--selector", "s2").stdout.splitlines()[0]
        assert b"s=s1" in signed_with(s, "still s1")
        dns.stop()
        dns = DnsServer(tmp_path / "after", {"test": "", "local.test": record + "\n"}, port=port).start()
        # No `dkim activate`: the server's own check switches.
        wait_until(lambda: "; retired" in s.cli("dns-records", "local.test").stdout, 15, "the server to switch")
        msg = signed_with(s, "switched by the server")
        assert b"s=s2" in msg and b"s=s1" not in msg
    finally:
        dns.stop()


def test_automatic_rotation_makes_a_dated_key_that_signs_once_published(make_server, tmp_path):
    port = free_port()
    dns = DnsServer(tmp_path / "before", {"test": "", "local.test": ""}, port=port).start()
    s = make_server("[submission]\ndkim_activate_check_secs = 1\ndkim_rotate_days = 30\n",
                    dns=f"127.0.0.1:{port}", start=False)
    add_user(s, "alice@local.test")
    assert s.cli("dkim", "keygen", "--domain", "local.test", "--selector", "s1").returncode == 0
    # The signing key is 40 days old.
    aged = time.time() - 40 * 86400
    for key in (s.data / "dkim" / "local.test").glob("s1.*"):
        os.utime(key, (aged, aged))
    s.start()
    try:
        [event] = wait_until(lambda: s.events("dkim_rotation_started"), 15, "the server to start a rotation")
        selector = "p" + time.strftime("%Y%m%d", time.gmtime())
        assert event["publish"].startswith(f"{selector}._domainkey.local.test.")
        pending = [l for l in s.cli("dns-records", "local.test").stdout.splitlines() if "; pending" in l]
        assert len(pending) == 1 and pending[0].startswith(selector)
        assert b"s=s1" in signed_with(s, "still s1")
        record = event["publish"]
        dns.stop()
        dns = DnsServer(tmp_path / "after", {"test": "", "local.test": record + "\n"}, port=port).start()
        wait_until(lambda: "; retired" in s.cli("dns-records", "local.test").stdout, 15, "the server to switch")
        msg = signed_with(s, "signed by the dated key")
        assert f"s={selector}".encode() in msg
        txt = "".join(re.findall(r'"([^"]*)"', record)).encode()
        assert dkim.verify(msg, dnsfunc=lambda name, timeout=5: txt), "dkimpy verifies the new selector"
    finally:
        dns.stop()
