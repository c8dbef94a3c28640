"""SPF (RFC 7208) cross-checked against a real peer: pyspf evaluates the
same cases as `portcullis spf` (the code the mx listener uses), each
zone served on loopback. The OpenSPF RFC 7208 suite itself runs in
crates/authn/tests/spf_suite.rs, against check_host() directly."""

import subprocess

import pytest

from conftest import binary
from spfzone import ScriptedDns


def our_spf(port: int, ip: str, helo: str, mail_from: str) -> str:
    args = [binary(), "spf", "--ip", ip, "--helo", helo, "--dns", f"127.0.0.1:{port}", "--dns-timeout-ms", "700"]
    if mail_from:
        args += ["--mail-from", mail_from]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()[0]


# Cases the OpenSPF suite leaves out, cross-checked against pyspf (python3-spf).
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
        ours = our_spf(server.port, ip, helo, sender)
        assert ours == theirs, f"portcullis {ours}, pyspf {theirs}"
    finally:
        server.stop()
