"""The OpenSPF RFC 7208 test suite (../shared/testdata/spf, 16 scenarios,
203 tests), each scenario's DNS served on loopback, evaluated by the same
code the mx listener uses (`portcullis spf`). pyspf cross-checks cases the
suite leaves out."""

import ipaddress
import subprocess

import pytest
import yaml

from conftest import ROOT, binary
from spfzone import ScriptedDns

SUITE = ROOT.parent / "shared" / "testdata" / "spf" / "rfc7208-tests.yml"
SCENARIOS = list(yaml.safe_load_all(SUITE.read_text()))
CASES = [pytest.param(i, name, id=f"{i}-{name}") for i, sc in enumerate(SCENARIOS) for name in sc["tests"]]


@pytest.fixture(scope="module")
def dns_servers():
    servers = {}
    yield servers
    for s in servers.values():
        s.stop()


def our_spf(port: int, ip: str, helo: str, mail_from: str) -> tuple[str, str | None]:
    args = [binary(), "spf", "--ip", ip, "--helo", helo, "--dns", f"127.0.0.1:{port}", "--dns-timeout-ms", "700"]
    if mail_from:
        args += ["--mail-from", mail_from]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    explanation = next((l.split(": ", 1)[1] for l in lines if l.startswith("explanation: ")), None)
    return lines[0], explanation


@pytest.mark.parametrize("scenario,name", CASES)
def test_rfc7208_suite(dns_servers, scenario, name):
    sc = SCENARIOS[scenario]
    if scenario not in dns_servers:
        dns_servers[scenario] = ScriptedDns(sc.get("zonedata", {}))
    t = sc["tests"][name]
    expected = t["result"] if isinstance(t["result"], list) else [t["result"]]
    mail_from = t.get("mailfrom", "")
    got, explanation = our_spf(dns_servers[scenario].port, t["host"], t["helo"], mail_from)
    assert got in expected, f"{t.get('description', '')} (spec {t.get('spec')}): got {got}, want {expected}"
    if "explanation" in t and got == "fail":
        assert explanation is not None and explanation.lower() == expected_explanation(t).lower()


def expected_explanation(t: dict) -> str:
    """The suite's "DEFAULT" stands for the checker's own explanation of a
    fail without a usable exp= (RFC 7208 §6.2). Letters compare without
    case: the suite writes the IPv6 nibbles of %{i} in upper case, RFC 7208
    §7.3's own example in lower case, and DNS does not care."""
    if t["explanation"] != "DEFAULT":
        return t["explanation"]
    ip = ipaddress.ip_address(t["host"])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    domain = t["mailfrom"].rsplit("@", 1)[1] if t.get("mailfrom") else t["helo"]
    return f"{domain} does not designate {ip} as a permitted sender"


# Cases the suite leaves out, cross-checked against pyspf (python3-spf).
EXTRA_ZONE = {
    "ipv6.test": [{"TXT": "v=spf1 ip6:2001:db8::/32 -all"}],
    "mixed.test": [{"TXT": "v=spf1 a:host.mixed.test ~all"}],
    "host.mixed.test": [{"A": "192.0.2.10"}, {"AAAA": "2001:db8::10"}],
    "inc.test": [{"TXT": "v=spf1 include:ipv6.test ?all"}],
    "macro.test": [{"TXT": "v=spf1 exists:%{i}.%{l}.allow.macro.test -all"}],
    "1.2.3.4.bob.allow.macro.test": [{"A": "127.0.0.2"}],
    "redir.test": [{"TXT": "v=spf1 redirect=ipv6.test"}],
    # HELO identity (null sender), mx, ptr, domain macros, limits.
    "helo.test": [{"TXT": "v=spf1 a -all"}, {"A": "192.0.2.20"}],
    "mxs.test": [{"TXT": "v=spf1 mx/30 -all"}, {"MX": [10, "mail.mxs.test"]}],
    "mail.mxs.test": [{"A": "192.0.2.40"}],
    "ptr.test": [{"TXT": "v=spf1 ptr -all"}],
    "50.2.0.192.in-addr.arpa": [{"PTR": "host.ptr.test"}],
    "host.ptr.test": [{"A": "192.0.2.50"}],
    "sub.org.test": [{"TXT": "v=spf1 include:_spf.%{d2} -all"}],
    "_spf.org.test": [{"TXT": "v=spf1 exists:%{l}.%{h}.users.org.test ~all"}],
    "carol.h.test.users.org.test": [{"A": "127.0.0.2"}],
    "broken.test": [{"TXT": "v=spf1 include:nospf.test -all"}],
    "nospf.test": [{"A": "192.0.2.1"}],
    "many.test": [{"TXT": "v=spf1 " + " ".join(f"a:n{i}.many.test" for i in range(11)) + " -all"}],
    **{f"n{i}.many.test": [{"A": "198.51.100.1"}] for i in range(11)},
    "voids.test": [{"TXT": "v=spf1 a:v1.voids.test a:v2.voids.test a:v3.voids.test ?all"}],
    "soft.test": [{"TXT": "v=spf1 ip4:192.0.2.0/24 ~all"}],
}
EXTRA = [
    ("2001:db8::1", "h.test", "a@ipv6.test"),
    ("2001:db9::1", "h.test", "a@ipv6.test"),
    ("192.0.2.10", "h.test", "a@mixed.test"),
    ("2001:db8::10", "h.test", "a@mixed.test"),
    ("192.0.2.11", "h.test", "a@mixed.test"),
    ("2001:db8::5", "h.test", "a@inc.test"),
    ("192.0.2.5", "h.test", "a@inc.test"),
    ("1.2.3.4", "h.test", "bob@macro.test"),
    ("1.2.3.5", "h.test", "bob@macro.test"),
    ("2001:db8::7", "h.test", "x@redir.test"),
    ("192.0.2.1", "h.test", "x@nonexistent.test"),
    ("192.0.2.20", "helo.test", ""),
    ("192.0.2.21", "helo.test", ""),
    ("192.0.2.41", "h.test", "a@mxs.test"),
    ("192.0.2.45", "h.test", "a@mxs.test"),
    ("192.0.2.50", "h.test", "a@ptr.test"),
    ("192.0.2.51", "h.test", "a@ptr.test"),
    ("192.0.2.9", "h.test", "carol@sub.org.test"),
    ("192.0.2.9", "h.test", "dave@sub.org.test"),
    ("192.0.2.9", "h.test", "a@broken.test"),
    ("192.0.2.9", "h.test", "a@many.test"),
    ("192.0.2.9", "h.test", "a@voids.test"),
    ("::ffff:192.0.2.7", "h.test", "a@soft.test"),
    ("198.51.100.7", "h.test", "a@soft.test"),
]


@pytest.mark.parametrize("ip,helo,sender", EXTRA)
def test_agrees_with_pyspf(ip, helo, sender):
    import dns.resolver
    import spf

    server = ScriptedDns(EXTRA_ZONE)
    try:
        r = dns.resolver.Resolver(configure=False)
        r.nameservers, r.port = ["127.0.0.1"], server.port
        # pyspf resolves through dnspython's default resolver: point it at
        # the scripted server for the duration of the check.
        saved = dns.resolver.default_resolver
        dns.resolver.default_resolver = r
        try:
            theirs = spf.check2(i=ip, s=sender, h=helo)[0]
        finally:
            dns.resolver.default_resolver = saved
        ours, _ = our_spf(server.port, ip, helo, sender)
        assert ours == theirs, f"portcullis {ours}, pyspf {theirs}"
    finally:
        server.stop()
