"""Fixtures for end-to-end tests: a real portcullis process on loopback,
driven by real clients (swaks, smtplib, smtp-source)."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def binary() -> str:
    env = os.environ.get("PORTCULLIS_BIN")
    if env:
        return env
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    return str(Path(target) / "release" / "portcullis")


SESSION_DNS = {"port": 0}

# Tests deliver to made-up mailboxes; the recipient policies have tests
# of their own (test_t10_recipients.py).
LOCAL_TEST = """
[[domain]]
name = "local.test"
recipients = "any"
"""

# Functional tests are not about rate limits: with no class-of-service
# section of their own they run with the limits switched off (0). The
# class-of-service tests (test_t15) set their own.
UNLIMITED = """
[class.default]
max_connections = 0
connections_per_minute = 0
messages_per_minute = 0
recipients_per_message = 0
recipients_per_minute = 0
bytes_per_minute = 0

[admission]
per_range_max_connections = 0
per_range_connections_per_minute = 0
"""


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, never handed out twice in one run (two
    servers of one test must not get the same port)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_port(port: int, timeout: float = 30.0, proc=None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise TimeoutError(f"the server exited with status {proc.returncode}")
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open")


class Server:
    """One portcullis under test, with its own data dir and ports."""

    def __init__(
        self, workdir: Path, extra: str = "", listener_extra: str = "", dns: str | None = None, local_test: bool = True
    ):
        self.workdir = workdir
        # Never the system resolver: tests only talk to loopback. Without a
        # zone of its own, a test resolves through the session's NSD, which
        # answers NXDOMAIN for everything under .test.
        dns = dns or f"127.0.0.1:{SESSION_DNS['port']}"
        self.data = workdir / "data"
        self.mx, self.sub, self.subs, self.http = (free_port() for _ in range(4))
        self.config = workdir / "portcullis.toml"
        self.config.write_text(
            f"""
hostname = "mx.portcullis.test"
data_dir = "{self.data}"

[dns]
nameservers = ["{dns}"]
timeout_ms = 2000

[[listener]]
role = "mx"
bind = ["127.0.0.1:{self.mx}"]
{listener_extra}

[[listener]]
role = "submission"
bind = ["127.0.0.1:{self.sub}"]

[[listener]]
role = "submissions"
bind = ["127.0.0.1:{self.subs}"]

[http]
bind = "127.0.0.1:{self.http}"

{LOCAL_TEST if local_test else ""}
{"" if "[class." in extra or "[admission]" in extra else UNLIMITED}
{extra}
"""
        )
        self.proc = None
        self.log = workdir / "server.log"

    def start(self) -> "Server":
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [binary(), "serve", "--config", str(self.config)],
            stdout=logf,
            stderr=logf,
            cwd=self.workdir,
        )
        try:
            wait_port(self.mx, proc=self.proc)
        except TimeoutError:
            # Say why: the server's own words are in its log.
            raise RuntimeError(f"portcullis did not start: {self.log.read_text()[-2000:]}") from None
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def maildir(self, local: str, domain: str = "local.test") -> Path:
        return self.data / "mail" / domain / local / "new"

    def messages(self, local: str, domain: str = "local.test") -> list[bytes]:
        d = self.maildir(local, domain)
        if not d.is_dir():
            return []
        return [p.read_bytes() for p in sorted(d.iterdir())]

    def wait_messages(self, local: str, count: int, timeout: float = 10.0) -> list[bytes]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            msgs = self.messages(local)
            if len(msgs) >= count:
                return msgs
            time.sleep(0.05)
        return self.messages(local)

    def cli_args(self, *args: str) -> list[str]:
        return [binary(), *args, "--config", str(self.config)]

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.cli_args(*args),
            capture_output=True,
            text=True,
            timeout=30,
        )


@pytest.fixture(scope="session", autouse=True)
def session_dns(tmp_path_factory):
    from dnsserver import DnsServer

    d = DnsServer(tmp_path_factory.mktemp("session-dns"), {"test": ""}).start()
    SESSION_DNS["port"] = d.port
    yield d
    d.stop()


@pytest.fixture
def workdir():
    d = Path(tempfile.mkdtemp(prefix="portcullis-e2e-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def server(workdir):
    s = Server(workdir).start()
    yield s
    s.stop()


@pytest.fixture
def make_server(workdir):
    """Start a server with extra config text."""
    started = []

    def make(
        extra: str = "", listener_extra: str = "", start: bool = True, dns: str | None = None, local_test: bool = True
    ) -> Server:
        sub = workdir / f"s{len(started)}"
        sub.mkdir()
        s = Server(sub, extra, listener_extra, dns, local_test)
        started.append(s)
        return s.start() if start else s

    yield make
    for s in started:
        s.stop()
