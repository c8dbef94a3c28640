"""portcullis and postfix-mta-sts-resolver (Debian package) agree on the
MTA-STS policy outcome (issue 19): a network namespace made here has its
own resolv.conf (NSD on its 127.0.0.1:53) and an HTTPS policy host with a
test CA; for each test domain `mta-sts-query` and `portcullis mta-sts`
report valid (with the same mode, mx and max_age), no policy, or a fetch
error."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import binary, make_ca, make_leaf
from dnsserver import DnsServer

NS = "pcsts"
HOST = "127.0.0.44"
OK = "version: STSv1\r\nmode: enforce\r\nmx: mx.good.test\r\nmx: *.good.test\r\nmax_age: 86400\r\n"
# domain → (HTTP status, content type, policy text); None: no _mta-sts record.
CASES = {
    "good.test": (200, "text/plain", OK),
    "testing.test": (200, "text/plain; charset=utf-8", OK.replace("enforce", "testing")),
    "none-mode.test": (200, "text/plain", "version: STSv1\r\nmode: none\r\nmax_age: 86400\r\n"),
    "nomode.test": (200, "text/plain", "version: STSv1\r\nmx: mx.nomode.test\r\nmax_age: 86400\r\n"),
    "nomx.test": (200, "text/plain", "version: STSv1\r\nmode: enforce\r\nmax_age: 86400\r\n"),
    "badage.test": (200, "text/plain", OK.replace("86400", "99999999999")),
    "badversion.test": (200, "text/plain", OK.replace("STSv1", "STSv2", 1)),
    "redirect.test": (301, "text/plain", OK),
    "html.test": (200, "text/html", OK),
    "norecord.test": None,
}

SERVER = r'''
import http.server, json, ssl, sys
cases = json.load(open(sys.argv[1]))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        domain = self.headers["Host"].split(":")[0].removeprefix("mta-sts.")
        status, ctype, body = cases.get(domain, (404, "text/plain", ""))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if status == 301:
            self.send_header("Location", "https://elsewhere.test/")
        body = body.encode()
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
httpd = http.server.ThreadingHTTPServer((sys.argv[2], 443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[3], sys.argv[4])
httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
print("ready", flush=True)
httpd.serve_forever()
'''

pytestmark = pytest.mark.skipif(shutil.which("mta-sts-query") is None,
                                reason="postfix-mta-sts-resolver is not installed (.ci/run installs it)")


@pytest.fixture(scope="module")
def namespace(tmp_path_factory):
    work = tmp_path_factory.mktemp("sts-cross")
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    subprocess.run(["ip", "netns", "add", NS], check=True)
    subprocess.run(["ip", "-n", NS, "link", "set", "lo", "up"], check=True)
    # `ip netns exec` mounts this over /etc/resolv.conf inside NS.
    etc = Path("/etc/netns") / NS
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    make_ca(work)
    make_leaf(work, "leaf", [f"mta-sts.{d}" for d in CASES])
    zones = {"test": ""}
    for d, case in CASES.items():
        zones[d] = f"mta-sts IN A {HOST}\n" + ("" if case is None else '_mta-sts IN TXT "v=STSv1; id=7"\n')
    dns = DnsServer(work, zones, netns=NS, port=53).start()
    import json
    (work / "cases.json").write_text(json.dumps({d: c for d, c in CASES.items() if c}))
    (work / "server.py").write_text(SERVER)
    https = subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, str(work / "server.py"), str(work / "cases.json"),
                              HOST, str(work / "leaf.pem"), str(work / "leaf.key")], stdout=subprocess.PIPE, text=True)
    assert https.stdout.readline().strip() == "ready"
    config = work / "portcullis.toml"
    config.write_text(f'hostname = "mx.cross.test"\ndata_dir = "{work / "data"}"\n[dns]\nnameservers = ["127.0.0.1:53"]\n'
                      f'[delivery]\nmta_sts_ca = "{work / "ca.pem"}"\nmta_sts_timeout_secs = 5\n')
    yield work, config
    https.terminate()
    dns.stop()
    shutil.rmtree(etc, ignore_errors=True)
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def theirs(work, domain: str):
    """mta-sts-query's (result, policy) as ("valid", mode, mx, max_age), ("none",) or ("fetch-error",)."""
    r = subprocess.run(["ip", "netns", "exec", NS, "env", f"SSL_CERT_FILE={work / 'ca.pem'}", "mta-sts-query",
                        "-v", "error", domain], capture_output=True, text=True, timeout=60)
    out = r.stdout.strip()
    if out.startswith("(<STSFetchResult.VALID"):
        policy = ast.literal_eval(out[out.index("('"):-1])[1]
        return ("valid", policy["mode"], sorted(policy["mx"]), int(policy["max_age"]))
    if "STSFetchResult.NONE" in out:
        return ("none",)
    assert "STSFetchResult.FETCH_ERROR" in out, out + r.stderr
    return ("fetch-error",)


def ours(config, domain: str):
    r = subprocess.run(["ip", "netns", "exec", NS, binary(), "mta-sts", domain, "--config", str(config)],
                       capture_output=True, text=True, timeout=60)
    out = r.stdout.strip()
    if out.startswith("valid"):
        f = dict(kv.split("=", 1) for kv in out.split()[1:])
        return ("valid", f["mode"], sorted(m for m in f["mx"].split(",") if m), int(f["max_age"]))
    if out == "none":
        return ("none",)
    assert out.startswith("fetch-error") and r.returncode != 0, out + r.stderr
    return ("fetch-error",)


@pytest.mark.parametrize("domain", list(CASES))
def test_both_resolvers_reach_the_same_outcome(namespace, domain):
    work, config = namespace
    assert ours(config, domain) == theirs(work, domain)


def test_the_cases_cover_valid_none_and_errors(namespace):
    work, config = namespace
    outcomes = {ours(config, d)[0] for d in CASES}
    assert outcomes == {"valid", "none", "fetch-error"}
