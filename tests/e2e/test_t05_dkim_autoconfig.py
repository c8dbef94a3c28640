"""Submitted mail is DKIM-signed (Ed25519 and RSA side by side) and
verifies with dkimpy against the records `dkim keygen` printed, served by a
real DNS server; mail clients find the right ports by autoconfig."""

import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import dkim
import pytest

from conftest import add_user, submit
from dnsserver import DnsServer


@pytest.fixture
def signed(make_server, workdir):
    s = make_server(start=False)
    add_user(s, "alice@local.test")
    records = []
    for selector, alg in [("ed", "ed25519"), ("rs", "rsa")]:
        r = s.cli("dkim", "keygen", "--domain", "local.test", "--selector", selector, "--algorithm", alg)
        assert r.returncode == 0, r.stderr
        records.append(r.stdout.strip())
    dns_server = DnsServer(workdir, {"local.test": "\n".join(records)}).start()
    s.start()
    yield s, dns_server, records
    dns_server.stop()


def signed_copy(server, body):
    """What bob receives when alice submits `body`."""
    submit(server, "bob@local.test", body)
    [msg] = server.wait_messages("bob", 1)
    return msg


BODY = (
    "From: Alice <alice@local.test>\r\nTo: bob@local.test\r\nSubject: signed\r\n"
    "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nHello Bob,\r\n  with   spaces  \r\n\r\n"
)


def test_both_signatures_verify_with_dkimpy(signed):
    server, dns_server, _ = signed
    msg = signed_copy(server, BODY)
    d = dkim.DKIM(msg)
    sigs = [l for l in msg.split(b"\r\n") if l.startswith(b"DKIM-Signature:")]
    assert len(sigs) == 2
    assert b"a=ed25519-sha256" in sigs[0] and b"a=rsa-sha256" in sigs[1]
    for i in range(2):
        assert d.verify(idx=i, dnsfunc=lambda name, timeout=5: dns_server.txt(name)), f"signature {i}"


def test_a_modified_body_fails_verification(signed):
    server, dns_server, _ = signed
    msg = signed_copy(server, BODY).replace(b"Hello Bob", b"Hello Eve")
    d = dkim.DKIM(msg)
    for i in range(2):
        try:
            ok = d.verify(idx=i, dnsfunc=lambda name, timeout=5: dns_server.txt(name))
        except dkim.ValidationError:
            ok = False
        assert not ok


def test_dns_records_prints_srv_spf_dkim_and_dmarc(signed):
    server, _, records = signed
    out = server.cli("dns-records", "local.test").stdout
    assert f"_submissions._tcp.local.test. IN SRV 0 1 {server.subs} mx.portcullis.test." in out
    assert f"_submission._tcp.local.test. IN SRV 10 1 {server.sub} mx.portcullis.test." in out
    assert '"v=spf1 mx ~all"' in out
    assert "_dmarc.local.test. IN TXT" in out
    for r in records:
        assert r in out


def fetch(url, data=None, headers=None):
    req = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.read()


def status_of(url, data=None, headers=None):
    try:
        fetch(url, data, headers)
        return 200
    except urllib.error.HTTPError as e:
        return e.code


# The mailbox server clients are told about (portcullis serves no IMAP).
AUTOCONFIG = '[autoconfig]\nimap = "imap.portcullis.test:993"\n'


@pytest.fixture
def provider(make_server):
    return make_server(AUTOCONFIG)


@pytest.mark.parametrize("path", ["/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml"])
def test_thunderbird_autoconfig_names_imap_and_both_submission_ports(provider, path):
    server = provider
    xml = fetch(f"http://127.0.0.1:{server.http}{path}?emailaddress=alice@local.test")
    root = ET.fromstring(xml)
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    provider = root.find("emailProvider")
    assert provider.get("id") == "local.test"
    assert provider.findtext("domain") == "local.test"
    [imap] = provider.findall("incomingServer")
    assert imap.get("type") == "imap"
    assert (imap.findtext("hostname"), imap.findtext("port"), imap.findtext("socketType")) == (
        "imap.portcullis.test", "993", "SSL")
    assert imap.findtext("username") == "%EMAILADDRESS%"
    servers = {
        (o.findtext("port"), o.findtext("socketType")): o for o in provider.findall("outgoingServer")
    }
    assert set(servers) == {(str(server.subs), "SSL"), (str(server.sub), "STARTTLS")}
    for o in servers.values():
        assert o.get("type") == "smtp"
        assert o.findtext("hostname") == "mx.portcullis.test"
        assert o.findtext("authentication") == "password-cleartext"
        assert o.findtext("username") == "%EMAILADDRESS%"


def test_thunderbird_autoconfig_follows_the_host_header(provider):
    url = f"http://127.0.0.1:{provider.http}/mail/config-v1.1.xml"
    root = ET.fromstring(fetch(url, headers={"Host": "autoconfig.local.test"}))
    assert root.find("emailProvider").get("id") == "local.test"


def outlook_request(address: str) -> bytes:
    return (
        b'<?xml version="1.0"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">'
        b"<Request><EMailAddress>" + address.encode() + b"</EMailAddress>"
        b"<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>"
        b"</Request></Autodiscover>"
    )


def test_outlook_autodiscover_names_imap_and_smtp(provider):
    server = provider
    root = ET.fromstring(fetch(f"http://127.0.0.1:{server.http}/autodiscover/autodiscover.xml",
                               outlook_request("alice@local.test")))
    ns = {"a": "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"}
    protos = root.findall(".//a:Protocol", ns)
    got = {
        (p.findtext("a:Type", namespaces=ns), p.findtext("a:Port", namespaces=ns),
         p.findtext("a:Encryption", namespaces=ns))
        for p in protos
    }
    assert got == {("IMAP", "993", "SSL"), ("SMTP", str(server.subs), "SSL"), ("SMTP", str(server.sub), "TLS")}
    assert all(p.findtext("a:LoginName", namespaces=ns) == "alice@local.test" for p in protos)


def test_a_foreign_domain_gets_404_from_both(provider):
    base = f"http://127.0.0.1:{provider.http}"
    assert status_of(f"{base}/mail/config-v1.1.xml?emailaddress=someone@gmail.com") == 404
    assert status_of(f"{base}/mail/config-v1.1.xml", headers={"Host": "autoconfig.gmail.com"}) == 404
    assert status_of(f"{base}/autodiscover/autodiscover.xml", outlook_request("someone@gmail.com")) == 404


def test_without_a_mailbox_server_the_file_still_names_the_submission_servers(server):
    # Thunderbird needs [autoconfig] imap; submission clients (portcullis
    # sendmail) only read the outgoing servers.
    url = f"http://127.0.0.1:{server.http}/mail/config-v1.1.xml?emailaddress=alice@local.test"
    provider = ET.fromstring(fetch(url)).find("emailProvider")
    assert provider.findall("incomingServer") == []
    assert len(provider.findall("outgoingServer")) == 2


def test_dns_records_prints_the_mailbox_server_srv_record(provider):
    out = provider.cli("dns-records", "local.test").stdout
    assert "_imaps._tcp.local.test. IN SRV 0 1 993 imap.portcullis.test." in out
