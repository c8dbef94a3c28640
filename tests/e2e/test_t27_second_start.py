"""A second `serve` on a data directory in use (issue 22): the lock is
taken before anything in the data directory is read or changed, whatever
the state backend, so the refused instance neither deletes the running
server's spool segments nor re-queues its messages. Every accepted
message is delivered once, after a restart too."""

import fcntl
import subprocess

import pytest

from conftest import binary, send, wait_until
from test_t15_class_of_service import Redis


@pytest.fixture(params=["embedded", "redis"])
def backend(request, tmp_path):
    if request.param == "embedded":
        yield ""
        return
    r = Redis(tmp_path).start()
    yield f'[state]\nbackend = "redis"\nredis_url = "{r.url}"\n'
    r.stop()


def send_numbered(s, local: str, numbers) -> None:
    for n in numbers:
        send(s.mx, "a@remote.test", f"{local}@local.test", f"Subject: n-{n}\r\n\r\nnumber {n}\r\n")


def spool_files(s) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in (s.data / "spool").iterdir() if p.is_file()}


def test_a_second_serve_on_a_busy_data_directory_loses_nothing(make_server, backend):
    s = make_server(backend)
    # Deliveries to `held` fail (its maildir is a file) and stay queued.
    (s.data / "mail" / "local.test").mkdir(parents=True, exist_ok=True)
    (s.data / "mail" / "local.test" / "held").write_text("not a maildir")
    send_numbered(s, "u", range(3))
    s.wait_messages("u", 3)
    before = spool_files(s)

    second = subprocess.run([binary(), "serve", "--config", str(s.config)],
                            capture_output=True, text=True, timeout=30)
    assert second.returncode != 0
    assert "another portcullis already serves" in second.stderr, second.stderr
    assert spool_files(s) == before, "the refused instance changed the running server's spool"

    send_numbered(s, "held", range(3, 6))
    send_numbered(s, "u", range(6, 8))
    s.wait_messages("u", 5)
    wait_until(lambda: len(s.queued()) == 3, 10, lambda: s.cli("queue", "list").stdout)

    s.stop()
    (s.data / "mail" / "local.test" / "held").unlink()
    s.start()
    s.wait_messages("held", 3, timeout=30)
    wait_until(lambda: s.queue_size() == 0, 30, "the queue to drain")
    assert len(s.messages("u")) == 5, "delivered twice"
    assert len(s.messages("held")) == 3


def test_a_held_lock_stops_serve_before_it_reads_the_spool(make_server):
    """A server still starting (recovering its spool, its control socket
    not bound yet) holds the lock all the same: the second stops there."""
    s = make_server()
    send_numbered(s, "u", range(2))
    s.wait_messages("u", 2)
    s.stop()
    before = spool_files(s)
    with open(s.data / "lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        second = subprocess.run([binary(), "serve", "--config", str(s.config)],
                                capture_output=True, text=True, timeout=30)
    assert second.returncode != 0
    assert "another portcullis already serves" in second.stderr, second.stderr
    assert spool_files(s) == before, "recovery ran under someone else's lock"
