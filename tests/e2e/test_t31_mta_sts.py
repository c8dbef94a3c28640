"""MTA-STS, sending side (RFC 8461, issue 19): NSD serves the `_mta-sts`
and MX records, a Python HTTPS server with a test CA serves the policy,
and a second portcullis is the MX. An `enforce` policy delivers only to a
matching MX over TLS verified for its name, and otherwise defers (never
in clear, never bounced); `testing` delivers as before; the policy is
cached across a restart; a policy host that never answers holds nothing
up for longer than the fetch timeout."""

import email
import gzip
import hashlib
import http.client
import http.server
import json
import re
import smtplib
import socket
import ssl
import subprocess
import threading

import dkim
import jsonschema
import pytest

from conftest import add_user, from_alice, login, make_ca, make_leaf, wait_until
from dnsserver import DnsServer

POLICY_HOST = "127.0.0.44"
HANGING_HOST = "127.0.0.46"
OUR_POLICY_HOST = "127.0.0.47"

ZONES = {
    "test": "",
    "far.test": ('@ IN MX 10 mx.far.test.\nmx IN A 127.0.0.1\n'
                 f'mta-sts IN A {POLICY_HOST}\n_mta-sts IN TXT "v=STSv1; id=20261130"\n'
                 '_smtp._tls IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@far.test"\n'),
    # A domain whose policy host is a portcullis (our receiving side).
    "far2.test": ('@ IN MX 10 mx.far.test.\n'
                  f'mta-sts IN A {OUR_POLICY_HOST}\n_mta-sts IN TXT "v=STSv1; id=2"\n'),
    "nopolicy.test": "@ IN MX 10 mx.far.test.\n",
    "hang.test": ('@ IN MX 10 mx.hang.test.\nmx IN A 127.0.0.1\n'
                  f'mta-sts IN A {HANGING_HOST}\n_mta-sts IN TXT "v=STSv1; id=1"\n'),
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A test CA and one certificate it signed for the MX and policy hosts."""
    d = tmp_path_factory.mktemp("pki")
    make_ca(d)
    make_leaf(d, "leaf", ["mx.far.test", "mta-sts.far.test", "mx.hang.test", "mta-sts.far2.test"])
    return d


class PolicyServer:
    """https://mta-sts.far.test/.well-known/mta-sts.txt on POLICY_HOST:443."""

    def __init__(self, pki):
        self.policy = ""
        self.fetches = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.fetches += 1
                body = outer.policy.encode()
                self.send_response(200 if self.path == "/.well-known/mta-sts.txt" else 404)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer((POLICY_HOST, 443), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki / "leaf.pem", pki / "leaf.key")
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def policy_server(pki):
    p = PolicyServer(pki)
    yield p
    p.stop()


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    d = DnsServer(tmp_path_factory.mktemp("sts-dns"), ZONES).start()
    yield d
    d.stop()


def enforce(mx: str = "mx.far.test") -> str:
    return f"version: STSv1\r\nmode: enforce\r\nmx: {mx}\r\nmax_age: 86400\r\n"


def receiver(make_server, dns, pki=None):
    """The far.test (and hang.test) MX: with the test CA's certificate,
    or with its own self-signed one."""
    tls = f'[tls]\ncert = "{pki / "leaf.pem"}"\nkey = "{pki / "leaf.key"}"\n\n' if pki else ""
    domains = "".join(f'[[domain]]\nname = "{d}"\nrecipients = "any"\n\n' for d in ["far.test", "hang.test", "nopolicy.test"])
    return make_server(tls + domains, local_test=False, dns=f"127.0.0.1:{dns.port}")


def sender(make_server, dns, pki, to, delivery: str = ""):
    s = make_server(f'[delivery]\nport = {to.mx}\nretry_base_secs = 300\nmta_sts_ca = "{pki / "ca.pem"}"\n'
                    f'mta_sts_timeout_secs = 3\n{delivery}', dns=f"127.0.0.1:{dns.port}", start=False)
    add_user(s, "alice@local.test")
    return s.start()


send_to = from_alice


def deferred_for_sts(s) -> bool:
    return bool(s.events("deferred", reason=lambda r: "MTA-STS" in r or "certificate" in r.lower()
                         or "TLS handshake" in r))


def test_enforce_delivers_to_a_matching_mx_over_verified_tls(make_server, dns, pki, policy_server):
    policy_server.policy = enforce()
    far = receiver(make_server, dns, pki)
    s = sender(make_server, dns, pki, far)
    send_to(s, "bob@far.test", "over verified tls")
    msg = far.wait_message("bob", b"Subject: over verified tls", domain="far.test")
    assert b"with ESMTPS" in msg, msg[:600]
    assert policy_server.fetches == 1
    assert (s.data / "mta-sts" / "far.test.json").exists()


def test_enforce_defers_when_no_mx_matches(make_server, dns, pki, policy_server):
    policy_server.policy = enforce("*.elsewhere.test")
    far = receiver(make_server, dns, pki)
    s = sender(make_server, dns, pki, far)
    send_to(s, "bob@far.test", "mx outside the policy")
    s.wait_event("deferred", reason=lambda r: "matches its MTA-STS policy" in r, timeout=20)
    assert far.messages("bob", domain="far.test") == []
    assert len(s.queued()) == 1, "deferred, not bounced"


def test_enforce_defers_on_a_self_signed_certificate(make_server, dns, pki, policy_server):
    policy_server.policy = enforce()
    far = receiver(make_server, dns)  # its generated, self-signed certificate
    s = sender(make_server, dns, pki, far)
    send_to(s, "bob@far.test", "self-signed")
    s.wait_event("deferred", reason=lambda r: "TLS" in r, timeout=20)
    assert far.messages("bob", domain="far.test") == []
    assert len(s.queued()) == 1


def test_testing_mode_delivers_as_before(make_server, dns, pki, policy_server):
    policy_server.policy = enforce().replace("mode: enforce", "mode: testing")
    far = receiver(make_server, dns)
    s = sender(make_server, dns, pki, far)
    send_to(s, "bob@far.test", "testing mode")
    far.wait_message("bob", b"Subject: testing mode", domain="far.test")


def test_the_policy_is_cached_across_a_restart(make_server, dns, pki, policy_server):
    policy_server.policy = enforce()
    far = receiver(make_server, dns, pki)
    s = sender(make_server, dns, pki, far)
    send_to(s, "bob@far.test", "first")
    far.wait_message("bob", b"Subject: first", domain="far.test")
    # The policy host goes away and the MX loses its certificate: the
    # cached enforce policy still holds after a restart.
    policy_server.stop()
    far.stop()
    self_signed = receiver(make_server, dns)
    s.stop()
    s.config.write_text(s.config.read_text().replace(f"port = {far.mx}", f"port = {self_signed.mx}"))
    s.start()
    send_to(s, "bob@far.test", "second")
    s.wait_event("deferred", reason=lambda r: "TLS" in r, timeout=20)
    assert self_signed.messages("bob", domain="far.test") == []


def test_a_hanging_policy_host_holds_delivery_only_for_the_timeout(make_server, dns, pki):
    # Accepts the connection, never says a word.
    hang = socket.socket()
    hang.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    hang.bind((HANGING_HOST, 443))
    hang.listen(8)
    try:
        far = receiver(make_server, dns)
        s = sender(make_server, dns, pki, far)
        send_to(s, "carol@hang.test", "despite a hanging policy host")
        # No policy could be fetched: delivered as before, after at most
        # the 3 s fetch timeout.
        far.wait_message("carol", b"Subject: despite a hanging", domain="hang.test", timeout=15)
        assert s.events("mta_sts_fetch_failed", error=lambda e: "timed out" in e)
    finally:
        hang.close()


# --- the receiving side: our own policy host -----------------------------


def policy_host(make_server, dns, pki):
    """far2.test's MX, serving its enforce policy on OUR_POLICY_HOST:443."""
    s = make_server(f'[tls]\ncert = "{pki / "leaf.pem"}"\nkey = "{pki / "leaf.key"}"\n\n'
                    '[[domain]]\nname = "far2.test"\nrecipients = "any"\nmta_sts = "enforce"\nmx = ["mx.far.test"]\n',
                    local_test=False, dns=f"127.0.0.1:{dns.port}", start=False)
    s.config.write_text(s.config.read_text().replace("[http]\n", f'[http]\nmta_sts_bind = "{OUR_POLICY_HOST}:443"\n', 1))
    return s.start()


def fetch(pki, host: str) -> tuple[int, str, str]:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    conn = http.client.HTTPSConnection(OUR_POLICY_HOST, 443, context=ctx, timeout=10)
    # SNI and certificate checks are for `host`, the connection goes to our address.
    conn.sock = ctx.wrap_socket(socket.create_connection((OUR_POLICY_HOST, 443), timeout=10), server_hostname=host)
    conn.request("GET", "/.well-known/mta-sts.txt", headers={"Host": host})
    r = conn.getresponse()
    return r.status, r.getheader("Content-Type") or "", r.read().decode()


def test_our_policy_host_serves_each_domains_policy_over_https(make_server, dns, pki):
    policy_host(make_server, dns, pki)
    status, ctype, body = fetch(pki, "mta-sts.far2.test")
    assert status == 200 and ctype.startswith("text/plain"), (status, ctype)
    assert body.startswith("version: STSv1\r\n") and "mode: enforce\r\n" in body and "mx: mx.far.test\r\n" in body
    assert "max_age: 604800" in body


def test_our_policy_host_answers_404_for_a_foreign_domain(make_server, dns, pki):
    policy_host(make_server, dns, pki)
    assert fetch(pki, "mta-sts.far.test")[0] == 404


def test_dns_records_prints_the_mta_sts_tls_rpt_and_tlsa_records(make_server, dns, pki):
    s = policy_host(make_server, dns, pki)
    out = s.cli("dns-records", "far2.test").stdout
    assert re.search(r'^_mta-sts\.far2\.test\. IN TXT "v=STSv1; id=[0-9a-f]{16}"$', out, re.M), out
    assert "mta-sts.far2.test. IN CNAME mx.portcullis.test." in out
    assert '_smtp._tls.far2.test. IN TXT "v=TLSRPTv1; rua=mailto:' in out
    spki = subprocess.run(f"openssl x509 -in {pki / 'leaf.pem'} -pubkey -noout | openssl pkey -pubin -outform der",
                          shell=True, capture_output=True, check=True).stdout
    assert f"_25._tcp.mx.portcullis.test. IN TLSA 3 1 1 {hashlib.sha256(spki).hexdigest()}" in out, out


def test_a_portcullis_sender_follows_a_portcullis_policy(make_server, dns, pki):
    far2 = policy_host(make_server, dns, pki)
    s = sender(make_server, dns, pki, far2)
    send_to(s, "bob@far2.test", "policy from portcullis")
    msg = far2.wait_message("bob", b"Subject: policy from portcullis", domain="far2.test")
    assert b"with ESMTPS" in msg
    cached = json.loads((s.data / "mta-sts" / "far2.test.json").read_text())
    assert cached["policy"]["mode"] == "enforce" and cached["policy"]["mx"] == ["mx.far.test"]


# --- REQUIRETLS (RFC 8689) -------------------------------------------------


def submit_requiretls(s, rcpt: str, subject: str, options=()):
    with login(s.sub) as c:
        assert "requiretls" in c.esmtp_features, c.esmtp_features
        body = f"From: alice@local.test\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\nthe confidential body\r\n"
        c.sendmail("alice@local.test", [rcpt], body, mail_options=["REQUIRETLS", *options])


def test_requiretls_is_relayed_where_mta_sts_validates_the_mx(make_server, dns, pki, policy_server):
    policy_server.policy = enforce().replace("mode: enforce", "mode: testing")
    far = receiver(make_server, dns, pki)
    s = sender(make_server, dns, pki, far)
    submit_requiretls(s, "bob@far.test", "requiretls via sts")
    msg = far.wait_message("bob", b"Subject: requiretls via sts", domain="far.test")
    assert b"with ESMTPS" in msg


def test_requiretls_without_a_validated_mx_bounces_with_5_7_30(make_server, dns, pki):
    far = receiver(make_server, dns, pki)
    s = sender(make_server, dns, pki, far)
    submit_requiretls(s, "bob@nopolicy.test", "requiretls nowhere", ["RET=FULL"])
    bounce = s.wait_message("alice", b"5.7.30", domain="local.test")
    # RFC 8689 §5: the report returns headers only, whatever RET asked.
    assert b"text/rfc822-headers" in bounce and b"the confidential body" not in bounce, bounce.decode()[-1500:]
    assert far.messages("bob", domain="nopolicy.test") == []


def test_requiretls_over_plain_smtp_is_refused(make_server, dns, pki):
    far = receiver(make_server, dns, pki)
    with smtplib.SMTP("127.0.0.1", far.mx, timeout=10) as c:
        c.ehlo("client.test")
        assert "requiretls" not in c.esmtp_features
        code, text = c.mail("a@remote.test", ["REQUIRETLS"])
    assert code == 530 and b"5.7.10" in text


# --- TLS-RPT (RFC 8460) ----------------------------------------------------

# RFC 8460 §4.4, the fields a report must carry, as JSON Schema.
TLSRPT_SCHEMA = {
    "type": "object",
    "required": ["organization-name", "date-range", "contact-info", "report-id", "policies"],
    "properties": {
        "organization-name": {"type": "string"},
        "contact-info": {"type": "string"},
        "report-id": {"type": "string"},
        "date-range": {
            "type": "object", "required": ["start-datetime", "end-datetime"],
            "properties": {"start-datetime": {"type": "string", "format": "date-time"},
                           "end-datetime": {"type": "string", "format": "date-time"}},
        },
        "policies": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["policy", "summary"],
            "properties": {
                "policy": {"type": "object", "required": ["policy-type", "policy-domain"], "properties": {
                    "policy-type": {"enum": ["tlsa", "sts", "no-policy-found"]},
                    "policy-string": {"type": "array", "items": {"type": "string"}},
                    "policy-domain": {"type": "string"},
                    "mx-host": {"type": "array", "items": {"type": "string"}}}},
                "summary": {"type": "object",
                            "required": ["total-successful-session-count", "total-failure-session-count"],
                            "properties": {"total-successful-session-count": {"type": "integer", "minimum": 0},
                                           "total-failure-session-count": {"type": "integer", "minimum": 0}}},
                "failure-details": {"type": "array", "items": {
                    "type": "object", "required": ["result-type", "failed-session-count"],
                    "properties": {"result-type": {"type": "string"},
                                   "failed-session-count": {"type": "integer", "minimum": 0}}}},
            }}},
    },
}


def test_a_tls_report_reaches_the_policy_domains_rua_signed(make_server, dns, pki, policy_server):
    policy_server.policy = enforce()
    far = receiver(make_server, dns, pki)
    s = make_server(f'[delivery]\nport = {far.mx}\nretry_base_secs = 300\nmta_sts_ca = "{pki / "ca.pem"}"\n'
                    'tls_rpt_interval_secs = 3\n', dns=f"127.0.0.1:{dns.port}", start=False)
    add_user(s, "alice@local.test")
    record = s.cli("dkim", "keygen", "--domain", "local.test", "--selector", "s1").stdout
    s.start()
    send_to(s, "bob@far.test", "counted")
    far.wait_message("bob", b"Subject: counted", domain="far.test")
    wait_until(lambda: s.metric("portcullis_tls_sessions_total", policy_domain="far.test", result="success") >= 1,
               10, "the session counted")
    raw = far.wait_message("tlsrpt", b"TLS-Report-Domain: far.test", domain="far.test", timeout=30)
    msg = email.message_from_bytes(raw)
    assert msg.get_content_type() == "multipart/report" and msg.get_param("report-type") == "tlsrpt"
    [part] = [p for p in msg.walk() if p.get_content_type() == "application/tlsrpt+gzip"]
    report = json.loads(gzip.decompress(part.get_payload(decode=True)))
    jsonschema.validate(report, TLSRPT_SCHEMA, format_checker=jsonschema.FormatChecker())
    [policy] = report["policies"]
    assert policy["policy"]["policy-type"] == "sts" and policy["policy"]["policy-domain"] == "far.test"
    assert "mode: enforce" in policy["policy"]["policy-string"]
    assert policy["policy"]["mx-host"] == ["mx.far.test"]
    assert policy["summary"]["total-successful-session-count"] >= 1
    # Signed by the reporting domain, verified by dkimpy against the key
    # `dkim keygen` printed.
    txt = "".join(re.findall(r'"([^"]*)"', record)).encode()
    assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: txt), "DKIM"


def test_testing_mode_counts_an_mx_outside_the_policy_as_a_failure(make_server, dns, pki, policy_server):
    policy_server.policy = enforce("*.elsewhere.test").replace("mode: enforce", "mode: testing")
    far = receiver(make_server, dns, pki)
    s = sender(make_server, dns, pki, far)
    send_to(s, "bob@far.test", "testing counted")
    far.wait_message("bob", b"Subject: testing counted", domain="far.test")
    assert s.metric("portcullis_tls_sessions_total", policy_domain="far.test", result="validation-failure") >= 1
    # The dashboard's table reads the same counts from /api/stats.
    status, stats = s.api("GET", "/api/stats")
    [row] = [p for p in stats["tls_sessions"]["policies"] if p["policy_domain"] == "far.test"]
    assert row["policy_type"] == "sts" and row["failed"] >= 1
    assert row["failures"][0]["result_type"] == "validation-failure"
