"""OP25B rule generation: the output of each format is accepted by the real
tool, bad input is refused with the line, and in network namespaces the
test builds, the generated nftables rules block port 25 from a dynamic
subscriber except to the designated MSA, while 587 stays open."""

import shutil
import subprocess
import textwrap

import pytest

from conftest import ROOT, binary, wait_until

EXAMPLE = ROOT / "examples" / "op25b-network.toml"


def op25b(*args, input_file=EXAMPLE):
    return subprocess.run([binary(), "op25b", "--input", str(input_file), *args], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    "fmt,check",
    [
        ("nftables", ["nft", "-c", "-f", "{}"]),
        ("iptables", ["iptables-restore", "--test", "{}"]),
        ("ip6tables", ["ip6tables-restore", "--test", "{}"]),
    ],
)
def test_output_is_accepted_by_the_real_tool(workdir, fmt, check):
    r = op25b("--format", fmt)
    assert r.returncode == 0, r.stderr
    f = workdir / f"rules.{fmt}"
    f.write_text(r.stdout)
    v = subprocess.run([a.replace("{}", str(f)) for a in check], capture_output=True, text=True)
    assert v.returncode == 0, v.stderr + r.stdout


@pytest.mark.parametrize("fmt", ["cisco", "juniper"])
def test_router_formats_render(fmt):
    r = op25b("--format", fmt)
    assert r.returncode == 0 and "587" in r.stdout and "192.0.2.25" in r.stdout


def test_stats_show_the_drafts_formula_on_its_example(workdir):
    dynamic = ", ".join(f'"10.{i // 100}.{(i % 100) * 2}.0/24"' for i in range(100))
    msa = ", ".join(f'"192.0.2.{i * 2 + 1}/32"' for i in range(10))
    f = workdir / "isp.toml"
    f.write_text(f"dynamic = [{dynamic}]\nmsa = [{msa}]\n")
    r = op25b("--format", "nftables", "--stats", input_file=f)
    assert "100 dynamic x (10 MSA + 1) = 1100" in r.stderr
    assert "1100 port-25 rules" in r.stderr


@pytest.mark.parametrize(
    "text,line,words",
    [
        ('dynamic = ["198.51.100.0/24"]\nmsa = ["192.0.2.1/24"]\n', 2, "host bits"),
        ('dynamic = ["198.51.100.0/24"]\nstatic = ["198.51.100.0/25"]\n', 2, "overlaps"),
        ('dynamic = ["198.51.100.0/24"]\nrouter = "x"\n', 2, "unknown field"),
    ],
)
def test_bad_input_names_the_line(workdir, text, line, words):
    f = workdir / "bad.toml"
    f.write_text(text)
    r = op25b("--format", "nftables", input_file=f)
    assert r.returncode != 0
    assert f"line {line}" in r.stderr and words in r.stderr, r.stderr


def test_unknown_format_is_refused():
    r = op25b("--format", "pf")
    assert r.returncode != 0 and "invalid value" in r.stderr


def sh(*cmd, check=True):
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check)


def netns_available():
    if shutil.which("ip") is None or shutil.which("nft") is None:
        return False
    r = subprocess.run(["ip", "netns", "add", "pc-probe"], capture_output=True)
    if r.returncode != 0:
        return False
    subprocess.run(["ip", "netns", "del", "pc-probe"], capture_output=True)
    return True


PROBE = """
import socket, sys
s = socket.socket()
s.settimeout(2)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
except OSError:
    # The router drops the SYN: no connection at all.
    print("blocked")
    sys.exit()
s.settimeout(15)
print(s.recv(100).decode().split()[0])
"""


def from_subscriber(host, port):
    r = sh("ip", "netns", "exec", "pc-sub", "python3", "-c", PROBE, host, str(port))
    return r.stdout.strip()


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    """Built once for the module: its tests only probe it and send one
    message through it."""
    workdir = tmp_path_factory.mktemp("op25b")
    if not netns_available():
        pytest.skip("this machine cannot create network namespaces (ip netns add failed)")
    names = ["pc-sub", "pc-rtr", "pc-msa", "pc-out"]
    for n in names:
        subprocess.run(["ip", "netns", "del", n], capture_output=True)
        sh("ip", "netns", "add", n)
        sh("ip", "-n", n, "link", "set", "lo", "up")
    # subscriber (dynamic) --- router --- MSA 192.0.2.25 / outside MTA 192.0.2.199
    links = [
        ("pc-sub", "198.51.100.10/24", "pc-rtr", "198.51.100.1/24"),
        ("pc-msa", "192.0.2.25/25", "pc-rtr", "192.0.2.1/25"),
        ("pc-out", "192.0.2.199/25", "pc-rtr", "192.0.2.129/25"),
    ]
    for i, (a, a_addr, b, b_addr) in enumerate(links):
        va, vb = f"pcv{i}a", f"pcv{i}b"
        sh("ip", "link", "add", va, "netns", a, "type", "veth", "peer", "name", vb, "netns", b)
        sh("ip", "-n", a, "addr", "add", a_addr, "dev", va)
        sh("ip", "-n", b, "addr", "add", b_addr, "dev", vb)
        sh("ip", "-n", a, "link", "set", va, "up")
        sh("ip", "-n", b, "link", "set", vb, "up")
        sh("ip", "-n", a, "route", "add", "default", "via", b_addr.split("/")[0])
    sh("ip", "netns", "exec", "pc-rtr", "sysctl", "-qw", "net.ipv4.ip_forward=1")
    net = workdir / "net.toml"
    net.write_text('dynamic = ["198.51.100.0/24"]\nmsa = ["192.0.2.25/32"]\nblocking_point = 3\n')
    rules = op25b("--format", "nftables", input_file=net)
    assert rules.returncode == 0, rules.stderr
    (workdir / "rules.nft").write_text(rules.stdout)
    from dnsserver import DnsServer

    # The MSA resolves the outside domain's MX through an NSD of its own.
    dns = DnsServer(
        workdir / "msa-dns",
        {"test": "", "outside.test": "@ IN MX 10 mx.outside.test.\nmx IN A 192.0.2.199\n"},
        netns="pc-msa",
        port=5353,
    ).start()
    servers = []
    for ns, addr, domain in [("pc-msa", "192.0.2.25", "isp.test"), ("pc-out", "192.0.2.199", "outside.test")]:
        d = workdir / ns
        d.mkdir()
        (d / "p.toml").write_text(
            textwrap.dedent(
                f"""
                hostname = "{ns}.test"
                data_dir = "{d}/data"
                [dns]
                nameservers = ["127.0.0.1:5353"]
                timeout_ms = 300
                [[listener]]
                role = "mx"
                bind = ["{addr}:25"]
                [[listener]]
                role = "submission"
                bind = ["{addr}:587"]
                [[domain]]
                name = "{domain}"
                recipients = "any"
                """
            )
        )
        if ns == "pc-msa":
            subprocess.run(
                ["ip", "netns", "exec", ns, binary(), "user", "add", "user@isp.test", "--password-stdin", "--config", str(d / "p.toml")],
                input="subscriber-pw\n", text=True, check=True, capture_output=True,
            )
        servers.append(
            subprocess.Popen(
                ["ip", "netns", "exec", ns, binary(), "serve", "--config", str(d / "p.toml")],
                stdout=subprocess.DEVNULL,
                stderr=open(d / "log", "wb"),
            )
        )
    # Before the rules, port 25 to the outside MTA is open: what the test
    # sees afterwards is the rules' doing.
    for host in ("192.0.2.25", "192.0.2.199"):
        wait_until(lambda: from_subscriber(host, 25) == "220", 15, f"{host}:25 to greet the subscriber")
    sh("ip", "netns", "exec", "pc-rtr", "nft", "-f", str(workdir / "rules.nft"))
    yield workdir
    dns.stop()
    for p in servers:
        p.terminate()
        p.wait(timeout=10)
    for n in names:
        subprocess.run(["ip", "netns", "del", n], capture_output=True)


def test_op25b_in_network_namespaces(network):
    assert from_subscriber("192.0.2.199", 25) == "blocked"
    assert from_subscriber("192.0.2.199", 587) == "220"
    assert from_subscriber("192.0.2.25", 25) == "220"
    assert from_subscriber("192.0.2.25", 587) == "220"


SUBMIT = """
import smtplib, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
with smtplib.SMTP("192.0.2.25", 587, timeout=20) as s:
    s.starttls(context=ctx)
    s.login("user@isp.test", "subscriber-pw")
    s.sendmail("user@isp.test", ["friend@outside.test"],
               "From: user@isp.test\\r\\nSubject: via the MSA\\r\\n\\r\\nhello\\r\\n")
print("sent")
"""


def test_mail_submitted_to_the_isp_msa_reaches_the_outside_mta(network):
    workdir = network
    r = sh("ip", "netns", "exec", "pc-sub", "python3", "-c", SUBMIT, check=False)
    assert r.stdout.strip() == "sent", r.stderr
    new = workdir / "pc-out" / "data" / "mail" / "outside.test" / "friend" / "new"
    [msg] = wait_until(lambda: new.is_dir() and [p.read_bytes() for p in new.iterdir()], 20, "the outside MTA's mailbox")
    assert b"Subject: via the MSA" in msg
    assert b"(authenticated as user@isp.test)" in msg
