"""Operating it (issue 7): /metrics read with a Prometheus parser after
real traffic, the admin API (refused without its token, described by a
valid OpenAPI document whose every endpoint answers), and the dashboard
in headless Chromium."""

import json
import shutil
import smtplib
import subprocess
import urllib.request
from pathlib import Path

import pytest

from conftest import send, total, wait_until

HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE / "artifacts"


def traffic(s, n: int = 1) -> None:
    """n messages from outside to u@local.test."""
    for i in range(n):
        send(s.mx, "a@sender.test", "u@local.test", f"Subject: {i}\r\n\r\nhello\r\n")


def test_metrics_counters_move_with_traffic(server):
    before = server.metrics()
    traffic(server, 3)
    with smtplib.SMTP("127.0.0.1", server.mx) as c:
        c.ehlo()
        c.mail("a@sender.test")
        assert c.rcpt("someone@elsewhere.test")[0] == 554  # relay denied
    after = server.metrics()
    accepted = "portcullis_messages_accepted_total"
    assert total(after, accepted, listener="mx") - total(before, accepted, listener="mx") == 3
    rejected = "portcullis_messages_rejected_total"
    assert total(after, rejected, code="5.7.1") > total(before, rejected, code="5.7.1")
    assert total(after, "portcullis_connections_total", outcome="admitted") >= 2
    assert total(after, "portcullis_class_admissions_total", **{"class": "default"}) >= 2
    assert total(after, "portcullis_authentication_results_total", method="spf") >= 3
    assert total(after, "portcullis_dns_checks_total", check="spf") - total(before, "portcullis_dns_checks_total", check="spf") >= 3
    assert total(after, "portcullis_dns_check_microseconds_total", check="message") > 0
    server.wait_messages("u", 3)
    # Counted just after the mailbox is written.
    wait_until(lambda: server.metric("portcullis_delivery_attempts_total", result="delivered") >= 3, 10,
               "three deliveries counted")
    final = server.metrics()
    assert ("portcullis_queue_oldest_seconds", ()) in final


def test_openapi_document_is_valid():
    from openapi_spec_validator import validate

    spec = json.loads((HERE.parents[1] / "crates/http/src/openapi.json").read_text())
    validate(spec)


def test_every_documented_endpoint_answers(server):
    traffic(server)
    spec = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{server.http}/api/openapi.json").read())
    bodies = {
        "NewAccount": {"address": "api@local.test", "password": "a long password"},
        "Report": {"verdict": "ham"},
        "Block": {"range": "192.0.2.0/24", "secs": 60, "reason": "api test"},
        "Known": {"range": "198.51.100.0/24", "name": "partner"},
    }
    answered = 0
    # Creations first, so that reads and deletions find something.
    order = {"post": 0, "get": 1, "delete": 2}
    ops = sorted(((p, m, o) for p, ms in spec["paths"].items() for m, o in ms.items()), key=lambda x: order[x[1]])
    for path, method, op in ops:
        concrete = (
            path.replace("{id}", "NOSUCHID")
            .replace("{identity}", "good.test")
            .replace("{address}", "api@local.test")
        )
        if any(p["in"] == "query" and p["name"] == "range" for p in op.get("parameters", [])):
            concrete += "?range=192.0.2.0/24" if "blocklist" in path else "?range=198.51.100.0/24"
        if any(p["in"] == "query" and p["name"] == "q" for p in op.get("parameters", [])):
            concrete += "?q=api@local.test"
        body = None
        if "requestBody" in op:
            ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            body = bodies[ref.rsplit("/", 1)[1]]
        code, _ = server.api(method.upper(), concrete, body)
        assert str(code) in op["responses"], (method, path, code)
        answered += 1
    assert answered >= 19
    code, blocked = server.api("GET", "/api/blocklist")
    assert code == 200 and blocked == []  # added, then deleted above
    code, rep = server.api("GET", "/api/reputation/good.test")
    assert code == 200 and rep["ham"] == 1


def test_api_operations_match_the_cli(server):
    code, _ = server.api("POST", "/api/blocklist", {"range": "203.0.113.7", "reason": "from the API"})
    assert code == 200
    assert "from the API" in server.cli("blocklist", "list").stdout
    code, body = server.api("POST", "/api/blocklist", {"range": "not-a-range"})
    assert code == 400 and "range" in body["error"]


@pytest.mark.skipif(not shutil.which("node"), reason="node is installed by .ci/run")
def test_dashboard_draws_a_chart_that_moves_with_traffic(server):
    if not Path("/usr/bin/chromium").exists():
        pytest.fail("Debian's chromium is not installed (.ci/run installs it)")
    if not (HERE / "browser/node_modules/playwright-core").exists():
        pytest.fail("run `npm ci` in tests/e2e/browser (.ci/run does)")
    ARTIFACTS.mkdir(exist_ok=True)
    url = f"http://127.0.0.1:{server.http}"

    def look(shot: str, above: int) -> dict:
        out = subprocess.run(
            ["node", str(HERE / "browser/dashboard.mjs"), url, server.token, str(ARTIFACTS / shot), str(above)],
            capture_output=True, text=True, timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    before = look("dashboard-before.png", -1)
    traffic(server, 5)
    after = look("dashboard-after.png", before["total"])
    assert after["total"] >= before["total"] + 5
    assert after["pixels"] != before["pixels"], "the chart was redrawn"
    assert "default pool" in after["pool"]
    assert (ARTIFACTS / "dashboard-after.png").stat().st_size > 10_000
