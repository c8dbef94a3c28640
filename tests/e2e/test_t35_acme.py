"""t35: certificates from an ACME CA (RFC 8555), against Debian's pebble
started on loopback with its own test CA: the first certificate is
obtained with TLS-ALPN-01 (RFC 8737, answered on the MTA-STS HTTPS host)
and served on 465, on 587 and 25 after STARTTLS and on the HTTPS host;
with pebble's short validity it is renewed and swapped in while an open
session keeps going; with pebble stopped a renewal fails, the old
certificate stays, the metrics say so, and the next attempt (pebble
back) succeeds.

Every check of what is served goes through `openssl s_client` verifying
against pebble's issuing root."""

import json
import os
import smtplib
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import PASSWORD, add_user, free_port, make_ca, make_leaf, wait_port, wait_until
from dnsserver import DnsServer

HOST = "mx.portcullis.test"
ZONES = {
    "portcullis.test": "mx IN A 127.0.0.1\n",
    "local.test": "mta-sts IN A 127.0.0.1\n",
}


class Pebble:
    """Pebble on loopback: its HTTPS with a certificate from our test CA,
    validating through the test DNS server on `tls_port` (where our HTTPS
    host listens)."""

    def __init__(self, workdir: Path, dns_port: int, tls_port: int, validity: int | None = None):
        self.dir = workdir / "pebble"
        self.dir.mkdir(exist_ok=True)
        make_ca(self.dir, "ca")
        make_leaf(self.dir, "pebble", ["localhost"])
        self.port, self.mgmt = free_port(), free_port()
        config = {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.mgmt}",
            "certificate": str(self.dir / "pebble.pem"),
            "privateKey": str(self.dir / "pebble.key"),
            "httpPort": free_port(),
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
        if validity:
            config["certificateValidityPeriod"] = validity
        (self.dir / "config.json").write_text(json.dumps({"pebble": config}))
        self.dns_port = dns_port
        self.proc = None
        self.starts = 0

    @property
    def directory(self) -> str:
        return f"https://localhost:{self.port}/dir"

    def start(self) -> "Pebble":
        self.starts += 1
        log = open(self.dir / f"pebble-{self.starts}.log", "wb")
        self.proc = subprocess.Popen(
            ["pebble", "-config", str(self.dir / "config.json"), "-dnsserver", f"127.0.0.1:{self.dns_port}"],
            stdout=log, stderr=log,
            # No random sleeps before validating; every nonce accepted
            # (pebble rejects 5% by default to test client retries).
            env={**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"},
        )
        wait_port(self.port, proc=self.proc)
        wait_port(self.mgmt, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def root(self) -> Path:
        """Pebble's issuing root (a new one at every start), as a file."""
        ctx = ssl.create_default_context(cafile=str(self.dir / "ca.pem"))
        pem = urllib.request.urlopen(f"https://localhost:{self.mgmt}/roots/0", context=ctx, timeout=5).read()
        path = self.dir / f"root-{self.starts}.pem"
        path.write_bytes(pem)
        return path


def served(port: int, root: Path, starttls: bool = False) -> str | None:
    """The serial of the certificate served on `port`, if it verifies
    against `root` for our hostname; None otherwise."""
    args = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", HOST,
            "-verify_hostname", HOST, "-CAfile", str(root), "-verify_return_error"]
    if starttls:
        args += ["-starttls", "smtp"]
    hello = subprocess.run(args, input=b"", capture_output=True, timeout=15)
    if hello.returncode != 0 or b"Verify return code: 0 (ok)" not in hello.stdout:
        return None
    x509 = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=hello.stdout, capture_output=True)
    return x509.stdout.decode().strip() or None


@pytest.fixture
def dns(tmp_path_factory):
    d = DnsServer(tmp_path_factory.mktemp("acme-dns"), ZONES).start()
    yield d
    d.stop()


@pytest.fixture
def acme(make_server, dns, workdir):
    """Start pebble (validity in seconds, or its default) and a server
    ordering from it; yields (server, pebble)."""
    made = []

    def start(validity: int | None = None, retry: str = ""):
        https = free_port()
        pebble = Pebble(workdir, dns.port, https, validity).start()
        made.append(pebble)
        s = make_server(f"""
[acme]
directory = "{pebble.directory}"
directory_ca = "{pebble.dir / 'ca.pem'}"
contact = ["mailto:postmaster@local.test"]
{retry}
""", start=False)
        text = s.config.read_text()
        text = text.replace("[http]\n", f'[http]\nmta_sts_bind = "127.0.0.1:{https}"\n', 1)
        # The default names: the hostname and the MTA-STS host's name.
        text = text.replace('recipients = "any"\n', 'recipients = "any"\nmta_sts = "testing"\n', 1)
        s.config.write_text(text)
        s.https = https
        return s, pebble

    yield start
    for p in made:
        p.stop()


def issued(s) -> float:
    return s.metric("portcullis_acme_orders_total", result="issued")


def test_the_first_certificate_is_obtained_and_served_on_465_and_587(acme):
    began = time.monotonic()
    s, pebble = acme()
    s.start()
    root = pebble.root()
    serial = wait_until(lambda: served(s.subs, root), 60, lambda: "an ACME certificate on 465: " + s.log_tail())
    took = time.monotonic() - began
    print(f"first certificate served {took:.1f} s after start")
    assert served(s.sub, root, starttls=True) == serial
    assert served(s.mx, root, starttls=True) == serial
    assert served(s.https, root) == serial  # the MTA-STS host
    # acme-tls/1 is for a validating CA, on the HTTPS host, while an order
    # is pending (RFC 8737 §3): at no other time does it get a certificate.
    for port in (s.subs, s.https):
        offered = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", HOST,
                                  "-alpn", "acme-tls/1"], input=b"", capture_output=True, timeout=15)
        assert b"BEGIN CERTIFICATE" not in offered.stdout, port
    (event,) = s.events("acme_issued")
    assert event["names"] == "mx.portcullis.test,mta-sts.local.test"
    # Kept in DATA/acme, readable by the server alone.
    for f in ("account.key", "cert.pem", "key.pem"):
        assert (s.data / "acme" / f).stat().st_mode & 0o777 == 0o600, f
    assert s.metric("portcullis_acme_failures_in_a_row") == 0
    assert s.metric("portcullis_acme_certificate_expiry_seconds") > 86400
    # A restart serves the stored certificate without a new order.
    s.stop()
    s.start()
    assert served(s.subs, root) == serial
    assert issued(s) == 0
    # Other names in the config: ordered at start, not at renewal time.
    s.stop()
    s.config.write_text(s.config.read_text().replace("[acme]\n", '[acme]\ndomains = ["mx.portcullis.test"]\n', 1))
    s.start()
    wait_until(lambda: issued(s) == 1, 30, lambda: "an order for the new names: " + s.log_tail())
    assert served(s.subs, root) not in (None, serial)


def test_a_renewal_is_served_to_new_connections_while_an_open_session_keeps_going(acme):
    # 30 s of life: renewed when 10 s are left, 20 s after issue.
    s, pebble = acme(validity=30)
    s.start()
    add_user(s, "alice@local.test")
    root = pebble.root()
    first = wait_until(lambda: served(s.subs, root), 60, lambda: "a first certificate: " + s.log_tail())
    # Verified against pebble's root (the name was checked by s_client
    # above; smtplib would check it against 127.0.0.1).
    verified = ssl.create_default_context(cafile=str(root))
    verified.check_hostname = False
    session = smtplib.SMTP_SSL("127.0.0.1", s.subs, context=verified, timeout=10)
    session.ehlo("client.test")
    before = session.sock.getpeercert(binary_form=True)
    second = wait_until(lambda: (served(s.subs, root) or first) != first and served(s.subs, root), 40,
                        lambda: "a renewal: " + s.log_tail())
    assert second != first
    assert served(s.sub, root, starttls=True) == second
    assert served(s.https, root) == second
    renewals = len(s.events("acme_issued"))
    print(f"certificates issued: {renewals}")
    assert renewals >= 2
    # The session opened before still talks, over the certificate it began with.
    assert session.noop()[0] == 250
    assert session.sock.getpeercert(binary_form=True) == before
    session.login("alice@local.test", PASSWORD)
    session.sendmail("alice@local.test", ["bob@local.test"],
                     "From: alice@local.test\r\nSubject: across a renewal\r\n\r\nhi\r\n")
    session.quit()
    s.wait_message("bob", b"across a renewal")


def test_a_failed_renewal_keeps_the_certificate_and_the_next_attempt_succeeds(acme):
    s, pebble = acme(retry="retry_secs = 1\nretry_max_secs = 2\n")
    s.start()
    root = pebble.root()
    first = wait_until(lambda: served(s.subs, root), 60, lambda: "a first certificate: " + s.log_tail())
    pebble.stop()
    renew = s.cli("acme", "renew")
    assert renew.returncode != 0 and "the one in use stays" in renew.stderr, renew.stderr
    assert s.metric("portcullis_acme_orders_total", result="failed") >= 1
    assert s.metric("portcullis_acme_failures_in_a_row") >= 1
    why = s.events("acme_failed")[0]["error"]
    print(f"failed renewal logged as: {why}")
    assert why
    assert served(s.subs, root) == first
    assert served(s.sub, root, starttls=True) == first
    # Pebble back (a new CA: new root, no memory of our account): the
    # next retry gets a certificate from it.
    pebble.start()
    new_root = pebble.root()
    second = wait_until(lambda: served(s.subs, new_root), 30, lambda: "a certificate after the failure: " + s.log_tail())
    assert second != first
    wait_until(lambda: s.metric("portcullis_acme_failures_in_a_row") == 0, 10, "the failures to be reset")
    assert s.cli("acme", "renew").returncode == 0
