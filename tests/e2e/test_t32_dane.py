"""DANE for SMTP (RFC 7672, issue 19): zones signed with ldns-signzone,
served by NSD, validated by unbound on loopback with the test trust
anchors; a portcullis sender with `[dns] trust_ad` delivers to a second
portcullis. Matching TLSA (DANE-EE 3 1 1, DANE-TA 2 0 1) → delivered over
TLS; a mismatching record → deferred; a bogus signature → deferred; an
unsigned zone's TLSA is not believed (opportunistic as before)."""

import hashlib
import subprocess

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from conftest import add_user, free_port, from_alice, make_ca, make_leaf, openssl, wait_until
from dnsserver import DnsServer

SIGNED = ["dane.test", "mismatch.test", "bogus.test", "ta.test"]


def run(*cmd, cwd):
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A self-signed MX certificate (DANE-EE), and a CA with a leaf it
    signed for mx.ta.test (DANE-TA)."""
    d = tmp_path_factory.mktemp("dane-pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ee.key", "-out", "ee.pem", "-days", "2",
            "-subj", "/CN=mx.dane.test", cwd=d)
    make_ca(d)
    make_leaf(d, "ta-leaf", ["mx.ta.test"])
    (d / "ta-chain.pem").write_text((d / "ta-leaf.pem").read_text() + (d / "ca.pem").read_text())
    return d


def spki_sha256(pem) -> str:
    der = subprocess.run(f"openssl x509 -in {pem} -pubkey -noout | openssl pkey -pubin -outform der",
                         shell=True, capture_output=True, check=True).stdout
    return hashlib.sha256(der).hexdigest()


def cert_sha256(pem) -> str:
    der = subprocess.run(["openssl", "x509", "-in", str(pem), "-outform", "der"], capture_output=True,
                         check=True).stdout
    return hashlib.sha256(der).hexdigest()


def zone(name: str, tlsa: str) -> str:
    return (f"$ORIGIN {name}.\n$TTL 60\n@ IN SOA ns.{name}. h.{name}. 1 3600 600 86400 60\n@ IN NS ns.{name}.\n"
            f"ns IN A 127.0.0.1\n@ IN MX 10 mx.{name}.\nmx IN A 127.0.0.1\n_25._tcp.mx IN TLSA {tlsa}\n")


def sign(workdir, name: str, text: str) -> tuple[str, str]:
    """The zone signed by a fresh KSK and ZSK, and the KSK's DS record."""
    d = workdir / name
    d.mkdir()
    (d / "zone").write_text(text)
    ksk = run("ldns-keygen", "-a", "ECDSAP256SHA256", "-k", name, cwd=d)
    zsk = run("ldns-keygen", "-a", "ECDSAP256SHA256", name, cwd=d)
    run("ldns-signzone", "-f", "signed", "zone", ksk, zsk, cwd=d)
    return f"$ORIGIN {name}.\n" + (d / "signed").read_text(), (d / f"{ksk}.ds").read_text().strip()


class Unbound:
    """A validating resolver on loopback: stub zones to NSD, our anchors."""

    def __init__(self, workdir, dns_port: int, zones, anchors: list[str]):
        self.port = free_port()
        self.dir = workdir / "unbound"
        self.dir.mkdir()
        (self.dir / "anchors").write_text("\n".join(anchors) + "\n")
        stubs = "".join(f'stub-zone:\n  name: "{z}"\n  stub-addr: 127.0.0.1@{dns_port}\n' for z in zones)
        (self.dir / "unbound.conf").write_text(f"""server:
  interface: 127.0.0.1
  port: {self.port}
  do-ip6: no
  do-not-query-localhost: no
  username: ""
  chroot: ""
  directory: "{self.dir}"
  pidfile: "{self.dir}/unbound.pid"
  use-syslog: no
  logfile: "{self.dir}/unbound.log"
  module-config: "validator iterator"
  trust-anchor-file: "{self.dir}/anchors"
  access-control: 127.0.0.0/8 allow
  qname-minimisation: no
  val-log-level: 2
  # .test is one of unbound's built-in empty zones (RFC 6761).
  local-zone: "test." nodefault
remote-control:
  control-enable: no
{stubs}""")
        check = subprocess.run(["unbound-checkconf", str(self.dir / "unbound.conf")], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        self.proc = subprocess.Popen(["unbound", "-d", "-c", str(self.dir / "unbound.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Ready, and validating: the signed zone's answer carries AD.
        wait_until(lambda: self.authentic("dane.test"), 10,
                   lambda: "unbound to validate: " + (self.dir / "unbound.log").read_text()[-1500:])

    def authentic(self, name: str) -> bool:
        q = dns.message.make_query(name, "SOA", want_dnssec=True)
        q.flags |= dns.flags.AD
        try:
            r = dns.query.udp(q, "127.0.0.1", port=self.port, timeout=1)
        except (dns.exception.Timeout, OSError):
            return False
        return r.rcode() == dns.rcode.NOERROR and bool(r.flags & dns.flags.AD)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def resolver(tmp_path_factory, pki):
    work = tmp_path_factory.mktemp("dane-dns")
    ee = f"3 1 1 {spki_sha256(pki / 'ee.pem')}"
    zones, anchors = {"test": ""}, []
    for name, tlsa in [("dane.test", ee), ("mismatch.test", "3 1 1 " + "00" * 32),
                       ("bogus.test", ee), ("ta.test", f"2 0 1 {cert_sha256(pki / 'ca.pem')}")]:
        signed, ds = sign(work, name, zone(name, tlsa))
        if name == "bogus.test":
            # Change the TLSA data after signing: its RRSIG no longer holds.
            signed = signed.replace(spki_sha256(pki / "ee.pem"), "11" * 32)
        zones[name] = signed
        anchors.append(ds)
    # Unsigned, with a TLSA record that would not match: not believed.
    zones["plain.test"] = ("@ IN MX 10 mx.plain.test.\nmx IN A 127.0.0.1\n"
                           "_25._tcp.mx IN TLSA 3 1 1 " + "00" * 32 + "\n")
    nsd = DnsServer(work, zones).start()
    unbound = Unbound(work, nsd.port, [z for z in zones if z != "test"], anchors)
    yield unbound
    unbound.stop()
    nsd.stop()


DOMAINS = "".join(f'[[domain]]\nname = "{d}"\nrecipients = "any"\n\n'
                  for d in ["dane.test", "mismatch.test", "bogus.test", "plain.test", "ta.test"])


def pair(make_server, resolver, cert, key):
    mx = make_server(f'[tls]\ncert = "{cert}"\nkey = "{key}"\n\n{DOMAINS}', local_test=False)
    s = make_server(f"[delivery]\nport = {mx.mx}\nretry_base_secs = 300\n", dns=f"127.0.0.1:{resolver.port}",
                    start=False)
    s.config.write_text(s.config.read_text().replace("[dns]\n", "[dns]\ntrust_ad = true\n", 1))
    add_user(s, "alice@local.test")
    return s.start(), mx


send_to = from_alice


def test_a_matching_dane_ee_record_delivers_over_tls(make_server, resolver, pki):
    s, mx = pair(make_server, resolver, pki / "ee.pem", pki / "ee.key")
    send_to(s, "bob@dane.test", "dane-ee")
    msg = mx.wait_message("bob", b"Subject: dane-ee", domain="dane.test")
    assert b"with ESMTPS" in msg


def test_a_matching_dane_ta_record_delivers_over_tls(make_server, resolver, pki):
    s, mx = pair(make_server, resolver, pki / "ta-chain.pem", pki / "ta-leaf.key")
    send_to(s, "bob@ta.test", "dane-ta")
    msg = mx.wait_message("bob", b"Subject: dane-ta", domain="ta.test")
    assert b"with ESMTPS" in msg


def test_a_mismatching_record_defers(make_server, resolver, pki):
    s, mx = pair(make_server, resolver, pki / "ee.pem", pki / "ee.key")
    send_to(s, "bob@mismatch.test", "mismatch")
    s.wait_event("deferred", reason=lambda r: "TLSA" in r or "DANE" in r, timeout=20)
    assert mx.messages("bob", domain="mismatch.test") == []
    assert len(s.queued()) == 1


def test_a_bogus_signature_defers(make_server, resolver, pki):
    s, mx = pair(make_server, resolver, pki / "ee.pem", pki / "ee.key")
    send_to(s, "bob@bogus.test", "bogus")
    s.wait_event("deferred", reason=lambda r: "DNSSEC" in r, timeout=20)
    assert mx.messages("bob", domain="bogus.test") == []
    assert len(s.queued()) == 1


def test_an_unsigned_zones_tlsa_is_not_believed(make_server, resolver, pki):
    s, mx = pair(make_server, resolver, pki / "ee.pem", pki / "ee.key")
    send_to(s, "bob@plain.test", "unsigned")
    mx.wait_message("bob", b"Subject: unsigned", domain="plain.test")
