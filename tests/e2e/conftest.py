"""Fixtures and shared helpers for end-to-end tests: a real portcullis
process on loopback, driven by real clients (swaks, smtplib, smtp-source).

Every test waits on a condition through `wait_until`, never on a fixed
sleep, and asserts on what the server exposes: mailboxes, /metrics, the
admin API and the JSON log events (`Server.events`)."""

import json
import re
import os
import signal
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]


def binary() -> str:
    env = os.environ.get("PORTCULLIS_BIN")
    if env:
        return env
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    return str(Path(target) / "release" / "portcullis")


# --- waiting ----------------------------------------------------------------


def wait_until(condition, timeout: float = 10.0, what=None):
    """Poll `condition()` until it returns something truthy, and return
    that. Past `timeout` seconds, fail the test naming `what` (a string,
    or a function making one then). The one polling loop of the suite:
    every wait goes through here."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout} s waiting for {said or condition}")
        # Polling interval: the conditions are files, sockets and HTTP
        # answers of other processes, which have no way to notify us.
        time.sleep(0.05)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_port(port: int, timeout: float = 30.0, proc=None) -> None:
    def up():
        if proc is not None and proc.poll() is not None:
            raise TimeoutError(f"the process exited with status {proc.returncode}")
        return port_open(port)

    try:
        wait_until(up, timeout, f"port {port} to open")
    except AssertionError:
        raise TimeoutError(f"port {port} did not open") from None


# --- clients -----------------------------------------------------------------

PASSWORD = "correct horse battery staple"


def insecure_tls() -> ssl.SSLContext:
    """Our servers' certificates are self-signed: tests do not verify them."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def swaks(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["swaks", *args], capture_output=True, text=True, timeout=30)


def send(port: int, sender: str, rcpts, body, *, source: str | None = None, helo: str | None = None,
         timeout: float = 30, **options) -> dict:
    """One message over one plain SMTP connection (smtplib); smtplib's
    exceptions tell a refusal. Returns the refused recipients."""
    rcpts = [rcpts] if isinstance(rcpts, str) else list(rcpts)
    kw = {"source_address": (source, 0)} if source else {}
    with smtplib.SMTP("127.0.0.1", port, local_hostname=helo, timeout=timeout, **kw) as c:
        return c.sendmail(sender, rcpts, body, **options)


def try_send(port: int, sender: str, rcpts="u@local.test", body="Subject: x\r\n\r\nhello\r\n", **kw) -> tuple[int, str]:
    """`send`, answering (250, "") or the first refusal's code and text."""
    try:
        return answer(lambda: send(port, sender, rcpts, body, **kw))
    except (smtplib.SMTPServerDisconnected, OSError):
        return 421, "disconnected"


def answer(exchange) -> tuple[int, str]:
    """Run an smtplib exchange: (250, "") or the first refusal's code and text."""
    try:
        exchange()
        return 250, ""
    except (smtplib.SMTPConnectError, smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as e:
        return e.smtp_code, e.smtp_error.decode(errors="replace")
    except smtplib.SMTPRecipientsRefused as e:
        code, text = next(iter(e.recipients.values()))
        return code, text.decode(errors="replace")


def login(port: int, user: str = "alice@local.test", password: str = PASSWORD, source: str = "127.0.0.1",
          timeout: float = 10) -> smtplib.SMTP:
    """A submission session on `port`, after STARTTLS and AUTH."""
    s = smtplib.SMTP("127.0.0.1", port, source_address=(source, 0), timeout=timeout)
    s.starttls(context=insecure_tls())
    s.ehlo()
    s.login(user, password)
    return s


def submit(server, rcpts, body, *, user: str = "alice@local.test", password: str = PASSWORD,
           rcpt_options=()) -> dict:
    """Submit one message on the server's 587 as `user`."""
    rcpts = [rcpts] if isinstance(rcpts, str) else list(rcpts)
    with login(server.sub, user, password) as c:
        return c.sendmail(user, rcpts, body, rcpt_options=list(rcpt_options))


def from_alice(server, rcpt: str, subject: str) -> dict:
    """A short message from alice@local.test, submitted on 587."""
    return submit(server, rcpt, f"From: alice@local.test\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\nhi\r\n")


# --- a test PKI (openssl) ---------------------------------------------------


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d: Path, name: str = "ca") -> None:
    """A test CA: d/NAME.pem and d/NAME.key."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
            "-days", "2", "-subj", f"/CN=portcullis test CA {name}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def make_leaf(d: Path, stem: str, names: list[str], ca: str = "ca") -> None:
    """A server certificate for `names` signed by the CA in d: d/STEM.pem, d/STEM.key."""
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{stem}.key", "-out", f"{stem}.csr",
            "-subj", f"/CN={names[0]}", cwd=d)
    (d / f"{stem}.ext").write_text("subjectAltName=" + ",".join(f"DNS:{n}" for n in names) + "\n"
                                   "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                                   "extendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", f"{stem}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-out", f"{stem}.pem", "-days", "2", "-extfile", f"{stem}.ext", cwd=d)


def add_user(server, address: str, password: str = PASSWORD) -> None:
    r = subprocess.run(server.cli_args("user", "add", address, "--password-stdin"), input=password + "\n",
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


# --- servers -------------------------------------------------------------------

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
# Functional tests send from one account far beyond any history; the
# containment tests set their own [containment].
CONTAINMENT_OFF = """
[containment]
enabled = false
"""

UNLIMITED = "".join(
    f"""
[class.{name}]
max_connections = 0
connections_per_minute = 0
messages_per_minute = 0
recipients_per_message = 0
recipients_per_minute = 0
bytes_per_minute = 0
"""
    # Every class: the per-sender levels too, or an SPF-passing sender
    # would meet class `new`'s built-in limits in a "functional" test.
    for name in ("default", "new", "trusted", "high")
) + """
[admission]
per_range_max_connections = 0
per_range_connections_per_minute = 0
"""


def without_kernel_blocklist(config: str) -> str:
    """The config with `[admission] kernel_blocklist = false` unless it
    sets the key: run as root, the default ("auto") would give every server
    of a run the one nftables table of the host's network namespace, each
    making it its own (test_t23 tests it in namespaces of its own)."""
    if "kernel_blocklist" in config:
        return config
    if re.search(r"^\[admission\][ \t]*$", config, re.M):
        return re.sub(r"^\[admission\][ \t]*$", "[admission]\nkernel_blocklist = false", config, count=1, flags=re.M)
    return config + "\n[admission]\nkernel_blocklist = false\n"


_HANDED_OUT: set[int] = set()

# Under pytest-xdist each worker hands out ports from its own block below
# the kernel's ephemeral range (32768 and up), so two workers never pick
# the same port between one's probe and its server's bind.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_NEXT_PORT = [10000 + 4000 * int(_WORKER[2:])] if _WORKER[2:].isdigit() else None


def free_port() -> int:
    """A port nothing listens on, never handed out twice in one run (two
    servers of one test must not get the same port)."""
    while _NEXT_PORT is not None:
        port = _NEXT_PORT[0]
        _NEXT_PORT[0] += 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def _matches(event: dict, fields: dict) -> bool:
    for k, want in fields.items():
        if k not in event:
            return False
        if callable(want):
            if not want(event[k]):
                return False
        elif event[k] != want:
            return False
    return True


def timestamp(event: dict) -> float:
    """An event's time (the server's clock), in seconds since the epoch."""
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


class Server:
    """One portcullis under test, with its own data dir and ports."""

    def __init__(
        self, workdir: Path, extra: str = "", listener_extra: str = "", dns: str | None = None, local_test: bool = True,
        dns_timeout_ms: int = 2000,
    ):
        self.workdir = workdir
        # Never the system resolver: tests only talk to loopback. Without a
        # zone of its own, a test resolves through the session's NSD, which
        # answers NXDOMAIN for everything under .test.
        dns = dns or f"127.0.0.1:{SESSION_DNS['port']}"
        self.data = workdir / "data"
        self.mx, self.sub, self.subs, self.http = (free_port() for _ in range(4))
        self.config = workdir / "portcullis.toml"
        self.config.write_text(without_kernel_blocklist(
            f"""
hostname = "mx.portcullis.test"
data_dir = "{self.data}"

[dns]
nameservers = ["{dns}"]
timeout_ms = {dns_timeout_ms}

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
{"" if "[containment]" in extra else CONTAINMENT_OFF}
{extra}
"""
        ))
        self.proc = None
        self.log = workdir / "server.log"

    def use_dns(self, port: int) -> None:
        """Resolve through the DNS server on `port` from the next start."""
        self.config.write_text(
            self.config.read_text().replace('nameservers = ["127.0.0.1:', f'nameservers = ["127.0.0.1:{port}"] # was ["127.0.0.1:', 1)
        )

    def start(self) -> "Server":
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [binary(), "serve", "--config", str(self.config)],
            stdout=logf,
            stderr=logf,
            cwd=self.workdir,
            # One JSON object per event: the tests read fields, not text.
            env={**os.environ, "PORTCULLIS_LOG_FORMAT": "json"},
        )
        try:
            wait_port(self.mx, proc=self.proc)
        except TimeoutError:
            # Say why: the server's own words are in its log.
            raise RuntimeError(f"portcullis did not start: {self.log_tail()}") from None
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

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the log, for failure messages only (never an oracle)."""
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    # Mailboxes.

    def maildir(self, local: str, domain: str = "local.test", folder: str | None = None) -> Path:
        d = self.data / "mail" / domain / local
        return (d / f".{folder}" if folder else d) / "new"

    def messages(self, local: str, domain: str = "local.test", folder: str | None = None) -> list[bytes]:
        d = self.maildir(local, domain, folder)
        if not d.is_dir():
            return []
        return [p.read_bytes() for p in sorted(d.iterdir())]

    def wait_messages(self, local: str, count: int, timeout: float = 10.0, domain: str = "local.test",
                      folder: str | None = None) -> list[bytes]:
        """At least `count` messages in the mailbox, or the test fails."""
        return wait_until(
            lambda: m if len(m := self.messages(local, domain, folder)) >= count else None,
            timeout,
            lambda: f"{count} message(s) for {local}@{domain}:\n{self.log_tail(1500)}",
        )

    def wait_message(self, local: str, needle: bytes, domain: str = "local.test", timeout: float = 20.0) -> bytes:
        """The first message in the mailbox containing `needle`."""
        return wait_until(
            lambda: next((m for m in self.messages(local, domain) if needle in m), None),
            timeout,
            f"a message with {needle!r} for {local}@{domain}",
        )

    # JSON log events.

    def events(self, name: str | None = None, **fields) -> list[dict]:
        """The log's events in order, those named `name` with the given
        field values (a callable value is a predicate on the field)."""
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue  # the start banner on stdout
            try:
                e = json.loads(line)
            except ValueError:
                continue  # a line being written as we read
            if (name is None or e.get("event") == name) and _matches(e, fields):
                out.append(e)
        return out

    def wait_event(self, name: str, timeout: float = 10.0, count: int = 1, **fields) -> list[dict]:
        """Wait for at least `count` events named `name` with those fields."""
        return wait_until(
            lambda: es if len(es := self.events(name, **fields)) >= count else None,
            timeout,
            lambda: f"{count} {name!r} event(s) with {fields}:\n{self.log_tail(1500)}",
        )

    def session_of(self, sock: socket.socket) -> str:
        """The server's session id for the connection `sock` is our end of
        (its connect event names our address as the peer)."""
        host, port = sock.getsockname()[:2]
        [connect] = self.wait_event("connect", peer=f"{host}:{port}")
        return connect["session"]

    # The queue.

    def queue_size(self) -> float:
        """Messages accepted and not yet completed (bounces included)."""
        return self.metrics()[("portcullis_queue_messages", ())]

    def queued(self) -> list[str]:
        """`portcullis queue list`, one line per queued message."""
        out = self.cli("queue", "list").stdout
        return [l for l in out.splitlines() if "message(s) queued" not in l]

    # /metrics and the admin API.

    def metrics(self) -> dict[tuple[str, tuple], float]:
        """Every sample of /metrics, keyed by (name, sorted labels)."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.http}/metrics", timeout=5).read().decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def metric(self, name: str, **labels) -> float:
        """The sum of the samples named `name` that carry these labels."""
        return total(self.metrics(), name, **labels)

    @property
    def token(self) -> str:
        return (self.data / "admin.token").read_text().strip()

    def api(self, method: str, path: str, body=None, token: str | None = "") -> tuple[int, object]:
        """An admin API call with the server's token (or `token`; None for
        no Authorization header): (status, decoded JSON)."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.http}{path}", method=method)
        token = self.token if token == "" else token
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, data=data, timeout=10) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    # The command line.

    def cli_args(self, *args: str) -> list[str]:
        return [binary(), *args, "--config", str(self.config)]

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.cli_args(*args),
            capture_output=True,
            text=True,
            timeout=30,
        )


def total(samples: dict, name: str, **labels) -> float:
    """The sum of the samples named `name` that carry these labels."""
    return sum(
        v for (n, ls), v in samples.items() if n == name and all((k, str(w)) in ls for k, w in labels.items())
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
        extra: str = "", listener_extra: str = "", start: bool = True, dns: str | None = None, local_test: bool = True,
        dns_timeout_ms: int = 2000,
    ) -> Server:
        sub = workdir / f"s{len(started)}"
        sub.mkdir()
        s = Server(sub, extra, listener_extra, dns, local_test, dns_timeout_ms)
        started.append(s)
        return s.start() if start else s

    yield make
    for s in started:
        s.stop()
