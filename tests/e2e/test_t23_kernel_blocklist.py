"""The blocklist in the kernel (issue 17): with `kernel_blocklist = true`
portcullis keeps an nftables set in step with its temporal blocklist, so
a blocked range's SYNs are dropped before accept. Everything runs in a
network namespace the test makes, where every address of 2001:db8::/32
is local (AnyIP), so a client can come from any /64 it likes.

Issue 28: by default ("auto") it runs wherever nft and CAP_NET_ADMIN are
there, also after the drop to `user` (the server keeps that capability
alone, on the one thread that starts nft) and under the packaged unit's
capability set; the log says which way it runs and why.

Needs root (network namespaces, nftables), as CI runs."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import binary, free_port, wait_until

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("nft"), reason="needs root and nft (CI has both)"
)

NS = f"pck{os.getpid()}"

# Connect from SOURCE to [::1]:PORT inside the namespace: "open" when the
# server answered (220 or a refusal), "dropped" when the SYN went
# unanswered, "refused" when nothing listens.
PROBE = """
import socket, sys
s = socket.socket(socket.AF_INET6)
s.bind((sys.argv[1], 0))
s.settimeout(1.0)
try:
    s.connect(("::1", int(sys.argv[2])))
    s.recv(200)
    print("open")
except socket.timeout:
    print("dropped")
except ConnectionRefusedError:
    print("refused")
"""


IP = shutil.which("ip") or "/usr/sbin/ip"


def ns(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([IP, "netns", "exec", NS, *args], capture_output=True, text=True, timeout=30, **kw)


@pytest.fixture(scope="module")
def netns():
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        subprocess.run(["ip", "-n", NS, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", NS, "-6", "route", "add", "local", "2001:db8::/32", "dev", "lo"], check=True)
        ns("sysctl", "-qw", "net.ipv6.ip_nonlocal_bind=1")
        yield NS
    finally:
        subprocess.run(["ip", "netns", "del", NS])


class NsServer:
    """One portcullis inside the namespace, its mx listener on [::1]."""

    def __init__(self, workdir, extra: str = "", top: str = ""):
        self.mx, self.http = free_port(), free_port()
        self.data = workdir / "data"
        self.config = workdir / "portcullis.toml"
        self.config.write_text(f"""{top}
hostname = "mx.portcullis.test"
data_dir = "{self.data}"
[dns]
nameservers = ["127.0.0.1:1"]
timeout_ms = 300
[[listener]]
role = "mx"
bind = ["[::1]:{self.mx}"]
[http]
bind = "127.0.0.1:{self.http}"
[[domain]]
name = "local.test"
recipients = "any"
{extra}
""")
        self.log = workdir / "server.log"
        self.proc = None

    def start(self, env=None, wrap=()) -> "NsServer":
        """`wrap`: a command the server runs under inside the namespace
        (setpriv with a capability set)."""
        self.proc = subprocess.Popen(
            [IP, "netns", "exec", NS, *wrap, binary(), "serve", "--config", str(self.config)],
            stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
            env={**(env or os.environ), "PORTCULLIS_LOG_FORMAT": "json"},
        )
        wait_until(lambda: self.probe("2001:db8:ffff::1") != "refused" or self.proc.poll() is not None, 20,
                   lambda: f"the server in {NS} did not listen: {self.log.read_text()[-2000:]}")
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    def probe(self, source: str) -> str:
        return ns(sys.executable, "-c", PROBE, source, str(self.mx)).stdout.strip()

    def cli(self, *args) -> subprocess.CompletedProcess:
        # The control socket is a file: the CLI reaches the server from outside the namespace.
        return subprocess.run([binary(), *args, "--config", str(self.config)], capture_output=True, text=True, timeout=30)

    def events(self, name: str) -> list[dict]:
        lines = self.log.read_text().splitlines()
        return [e for e in (json.loads(l) for l in lines if l.startswith("{")) if e.get("event") == name]

    def kernel_set(self) -> str:
        return ns("nft", "list", "set", "inet", "portcullis", "blocked6").stdout

    def dropped_packets(self) -> int:
        chain = ns("nft", "list", "chain", "inet", "portcullis", "input").stdout
        line = next(l for l in chain.splitlines() if "@blocked6" in l)
        return int(line.split("counter packets")[1].split()[0])


@pytest.fixture
def server(netns, tmp_path):
    made = []

    def make(extra: str = "", top: str = "", base: Path | None = None) -> NsServer:
        workdir = (base or tmp_path) / f"s{len(made)}"
        workdir.mkdir()
        s = NsServer(workdir, extra, top)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


ON = "[admission]\nkernel_blocklist = true\nper_range_max_connections = 0\nper_range_connections_per_minute = 0\n"


def test_a_blocked_range_cannot_complete_a_handshake_until_its_entry_expires(server):
    s = server(ON).start()
    assert s.probe("2001:db8:1:2::1") == "open"
    out = s.cli("blocklist", "add", "2001:db8:1:2::/64", "--secs", "4", "--reason", "flooding")
    assert out.returncode == 0, out.stderr
    wait_until(lambda: "2001:db8:1:2::/64" in s.kernel_set(), 5, "the block reaches the kernel's set")
    before = s.dropped_packets()
    assert s.probe("2001:db8:1:2::99") == "dropped"
    assert s.dropped_packets() > before, "the SYNs were dropped by our rule"
    assert s.probe("2001:db8:1:3::1") == "open", "another /64 is not blocked"
    # The element carries the block's timeout: the kernel forgets it on time.
    wait_until(lambda: s.probe("2001:db8:1:2::99") == "open", 15, "the block expires")


def test_an_unblock_reaches_the_kernel_at_once(server):
    s = server(ON).start()
    assert s.cli("blocklist", "add", "2001:db8:7::/48", "--secs", "600").returncode == 0
    wait_until(lambda: "2001:db8:7::/48" in s.kernel_set(), 5, "blocked in the kernel")
    assert s.cli("blocklist", "del", "2001:db8:7::/48").returncode == 0
    wait_until(lambda: "2001:db8:7::/48" not in s.kernel_set(), 5, "unblocked in the kernel")
    assert s.probe("2001:db8:7:1::1") == "open"


def test_a_restarted_server_reloads_the_set(server):
    s = server(ON).start()
    assert s.cli("blocklist", "add", "2001:db8:9::/48", "--secs", "600").returncode == 0
    wait_until(lambda: "2001:db8:9::/48" in s.kernel_set(), 5, "blocked in the kernel")
    s.stop()
    assert ns("nft", "list", "tables").stdout.count("portcullis") == 0, "a stopped server leaves no table"
    s.start()
    wait_until(lambda: "2001:db8:9::/48" in s.kernel_set(), 5, "reloaded from the saved state")


def test_escalation_blocks_the_wider_prefix_in_the_kernel(server):
    s = server(
        "[class.default]\nconnections_per_minute = 1\n"
        "[admission]\nkernel_blocklist = true\nper_range_max_connections = 0\n"
        "per_range_connections_per_minute = 0\nescalate_after = 3\n"
    ).start()
    # start() took the pool's one connection this minute (from another
    # /56); three /64s of 2001:db8:5::/56 then find it spent (421).
    for n in range(1, 4):
        assert s.probe(f"2001:db8:5:{n}::1") == "open"
    listed = s.cli("blocklist", "list").stdout
    assert "2001:db8:5::/56" in listed and "escalated: 3 ranges" in listed, listed
    wait_until(lambda: "2001:db8:5::/56" in s.kernel_set(), 5, "the /56 in the kernel")
    assert s.probe("2001:db8:5:77::1") == "dropped"


def test_without_nft_the_server_refuses_to_start(server, tmp_path):
    s = server(ON)
    env = dict(os.environ, PATH=str(tmp_path))  # no nft on this PATH
    proc = subprocess.run(
        [IP, "netns", "exec", NS, binary(), "serve", "--config", str(s.config)],
        capture_output=True, text=True, timeout=30, env=env,
    )
    assert proc.returncode != 0
    assert "kernel_blocklist needs the nft command" in proc.stderr, proc.stderr


# The per-range limits off (the probes come fast), kernel_blocklist left
# to its default.
DEFAULT = "[admission]\nper_range_max_connections = 0\nper_range_connections_per_minute = 0\n"
NET_ADMIN = 1 << 12


def caps_by_thread(pid: int) -> dict[int, tuple[str, int]]:
    """Each thread of `pid`: its name and effective capabilities."""
    threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        status = (task / "status").read_text()
        eff = next(l for l in status.splitlines() if l.startswith("CapEff:"))
        threads[int(task.name)] = ((task / "comm").read_text().strip(), int(eff.split()[1], 16))
    return threads


def blocks_in_the_kernel(s: NsServer, prefix: str) -> None:
    assert s.probe(f"{prefix}1") == "open"
    out = s.cli("blocklist", "add", f"{prefix}/64", "--secs", "600", "--reason", "flooding")
    assert out.returncode == 0, out.stderr
    wait_until(lambda: f"{prefix}/64" in s.kernel_set(), 5, "the block reaches the kernel's set")
    before = s.dropped_packets()
    assert s.probe(f"{prefix}99") == "dropped", "no SYN-ACK for the blocked range"
    assert s.dropped_packets() > before, "the SYNs were dropped by our rule"


@pytest.fixture
def open_workdir(workdir):
    # Under pytest's own 0700 directory nobody could not reach its data.
    os.chmod(workdir, 0o755)
    return workdir


def test_dropped_to_user_by_default_the_server_keeps_only_net_admin_and_blocks_in_the_kernel(server, open_workdir):
    s = server(DEFAULT, top='user = "nobody"', base=open_workdir).start()
    [decision] = s.events("kernel_blocklist")
    assert (decision["mode"], decision["reason"]) == ("on", "nft and CAP_NET_ADMIN"), decision
    [dropped] = s.events("privileges_dropped")
    assert (dropped["user"], dropped["kept"]) == ("nobody", "CAP_NET_ADMIN"), dropped
    # One thread, the one that starts nft, holds CAP_NET_ADMIN and nothing
    # else; every other thread of the server holds no capability at all.
    threads = caps_by_thread(s.proc.pid)
    assert [(name, eff) for name, eff in threads.values() if eff] == [("nft", NET_ADMIN)], threads
    status = Path(f"/proc/{s.proc.pid}/status").read_text()
    assert f"\t{pwd_uid('nobody')}\t" in next(l for l in status.splitlines() if l.startswith("Uid:")), status
    blocks_in_the_kernel(s, "2001:db8:28:1::")
    # The table goes with the server, removed by nft as nobody.
    s.stop()
    assert "portcullis" not in ns("nft", "list", "tables").stdout, "a stopped server leaves no table"


def pwd_uid(name: str) -> int:
    import pwd

    return pwd.getpwnam(name).pw_uid


def unit_setting(key: str) -> list[str]:
    """A setting of the packaged systemd unit, its words."""
    unit = (REPO / "packaging" / "portcullis.service").read_text()
    [line] = [l for l in unit.splitlines() if l.startswith(f"{key}=")]
    return line.split("=", 1)[1].split()


def setpriv(caps: list[str], no_new_privs: bool) -> list[str]:
    """Run as nobody with `caps` (CAP_* names) inheritable, ambient and
    bounding, as systemd starts a unit with User= and those settings."""
    names = ",".join(["-all"] + [f"+{c.lower().removeprefix('cap_')}" for c in caps])
    return [shutil.which("setpriv") or "/usr/bin/setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
            f"--inh-caps={names}", f"--ambient-caps={names}", f"--bounding-set={names}",
            *(["--no-new-privs"] if no_new_privs else [])]


def for_nobody(s: NsServer) -> None:
    s.data.mkdir()
    os.chown(s.data, pwd_uid("nobody"), -1)


def test_with_the_packaged_units_capabilities_the_server_blocks_in_the_kernel(server, open_workdir):
    ambient = unit_setting("AmbientCapabilities")
    assert "CAP_NET_ADMIN" in ambient and "CAP_NET_ADMIN" in unit_setting("CapabilityBoundingSet")
    assert "AF_NETLINK" in unit_setting("RestrictAddressFamilies"), "nft speaks netlink"
    s = server(DEFAULT, base=open_workdir)
    for_nobody(s)
    s.start(wrap=setpriv(ambient, unit_setting("NoNewPrivileges") == ["yes"]))
    [decision] = s.events("kernel_blocklist")
    assert decision["mode"] == "on", decision
    blocks_in_the_kernel(s, "2001:db8:28:2::")


def test_without_the_capability_auto_runs_in_user_space_and_says_why(server, open_workdir):
    s = server(DEFAULT, base=open_workdir)
    for_nobody(s)
    s.start(wrap=setpriv([], True))
    [decision] = s.events("kernel_blocklist")
    assert (decision["mode"], decision["reason"]) == ("off", "no CAP_NET_ADMIN"), decision
    assert "portcullis" not in ns("nft", "list", "tables").stdout
    # The block still holds, refused after accept.
    assert s.cli("blocklist", "add", "2001:db8:28:3::/64", "--secs", "600").returncode == 0
    assert s.probe("2001:db8:28:3::1") == "open"
    # `true` insists: no start without the capability, saying what is missing.
    s.stop()
    t = server(ON, base=open_workdir)
    for_nobody(t)
    proc = subprocess.run(
        [IP, "netns", "exec", NS, *setpriv([], True), binary(), "serve", "--config", str(t.config)],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode != 0
    assert "kernel_blocklist needs CAP_NET_ADMIN" in proc.stderr, proc.stderr


def test_without_nft_auto_runs_in_user_space_and_says_why(server, tmp_path):
    s = server(DEFAULT)
    s.start(env=dict(os.environ, PATH=str(tmp_path)))  # no nft on this PATH
    [decision] = s.events("kernel_blocklist")
    assert (decision["mode"], decision["reason"]) == ("off", "no nft"), decision


def test_turned_off_it_stays_off_and_says_so(server):
    s = server("[admission]\nkernel_blocklist = false\n").start()
    [decision] = s.events("kernel_blocklist")
    assert (decision["mode"], decision["reason"]) == ("off", "turned off"), decision
    assert "portcullis" not in ns("nft", "list", "tables").stdout
