"""The DMARC conformance cases (shared/testdata/dmarc/dmarc_cases.yml) and
the Public Suffix List tests (psl_tests.txt) through portcullis' own DMARC
path (`portcullis dmarc`), each case's DNS served by a scripted server on
loopback.

portcullis follows RFC 7489 by default: the record at the From: domain,
else at its organizational domain from the Public Suffix List. The cases
marked `dmarcbis_only` run twice: under `[dmarc] discovery = "tree-walk"`
(mail-auth's DMARCbis) with the file's expectations, and under RFC 7489
with the outcome each case's note gives for it."""

import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import binary
from spfzone import ScriptedDns

DATA = Path(__file__).resolve().parents[3] / "shared/testdata/dmarc"
CASES = yaml.safe_load((DATA / "dmarc_cases.yml").read_text())
VERIFY = CASES["alignment"] + CASES["policy_discovery"]

# RFC 7489 outcomes of the DMARCbis-only cases, as their notes state them.
RFC7489_EXPECT = {
    "pol-3": {"policy": "quarantine"},
    # The note's "also pass" skips discovery: RFC 7489 asks only
    # _dmarc.a.mail.example.com and _dmarc.example.com (the PSL's
    # organizational domain), never _dmarc.mail.example.com where the
    # record is, so DMARC does not apply.
    "pol-6": {"dmarc_record": "absent", "dmarc": "none", "spf_aligned": "none"},
    "pol-7": {"spf_aligned": "pass"},
    "pol-8": {"policy": "reject"},
}


def zone(dns: dict) -> dict:
    out: dict = {}
    for key, value in dns.items():
        name, _, kind = key.partition(" ")
        out.setdefault(name, []).append({kind or "TXT": value})
    return out


def ours(dns_port: int, from_domain: str, spf: dict | None, dkim: dict | None, config: Path | None) -> dict:
    args = [binary(), "dmarc", "--from", from_domain, "--dns", f"127.0.0.1:{dns_port}", "--dns-timeout-ms", "1000"]
    if config:
        args += ["--config", str(config)]
    if spf:
        args += ["--spf", f"{spf['result']}:{spf.get('domain', '')}"]
    if dkim and dkim.get("result", "none") != "none":
        args += ["--dkim", f"{dkim['result'].split()[0]}:{dkim.get('d', '')}"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return dict(kv.split("=", 1) for kv in r.stdout.split())


def run_case(case: dict, expect: dict, config: Path | None = None):
    server = ScriptedDns(zone(case.get("dns", {})))
    try:
        from_domain = case.get("from_domain") or case["from"].rsplit("@", 1)[1]
        got = ours(server.port, from_domain, case.get("spf"), case.get("dkim"), config)
    finally:
        server.stop()
    expect = dict(expect)
    if "dmarc_record" in expect:
        assert got["record"] == expect.pop("dmarc_record"), got
    for key, want in expect.items():
        assert got[key] == want, f"{key}: got {got[key]}, want {want} ({case.get('note', case['origin'])})"


@pytest.mark.parametrize("case", [pytest.param(c, id=c["id"]) for c in VERIFY])
def test_dmarc_case_rfc7489(case):
    run_case(case, RFC7489_EXPECT.get(case["id"], case["expect"]) if case.get("dmarcbis_only") else case["expect"])


@pytest.mark.parametrize("case", [pytest.param(c, id=c["id"]) for c in VERIFY if c.get("dmarcbis_only")])
def test_dmarcbis_case_under_tree_walk(case, tmp_path):
    config = tmp_path / "portcullis.toml"
    config.write_text('[dmarc]\ndiscovery = "tree-walk"\n')
    run_case(case, case["expect"], config)


PSL_CASES = [
    line.split()
    for line in (DATA / "psl_tests.txt").read_text(encoding="utf-8").splitlines()
    if line.strip() and not line.startswith("//")
]


def test_public_suffix_list_cases():
    """All of publicsuffix.org's test cases: the organizational domain (the
    registrable domain) of each name, or null. The `null` input stands for
    no name at all and is the empty string here."""
    assert len(PSL_CASES) == 78
    names = [name if name != "null" else "" for name, _ in PSL_CASES]
    r = subprocess.run([binary(), "dmarc", "--org-domain", *names], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = [line.rsplit(" ", 1)[-1] for line in r.stdout.splitlines()]
    wrong = [(n, want, g) for (n, want), g in zip(PSL_CASES, got) if want != g]
    assert len(got) == len(PSL_CASES) and not wrong, wrong


@pytest.mark.parametrize("case", [pytest.param(c, id=c["id"]) for c in CASES["record_parsing"]])
def test_dmarc_record_parsing(case):
    r = subprocess.run([binary(), "dmarc", "--record", case["record"]], capture_output=True, text=True, timeout=30)
    expect = case["expect"]
    assert (r.returncode == 0) == expect["valid"], (r.stdout, r.stderr)
    if not expect["valid"]:
        return
    got = dict(kv.split("=", 1) for kv in r.stdout.split())
    for key in ("p", "sp", "adkim", "aspf"):
        if key in expect:
            assert got[key] == expect[key], f"{key}: got {got[key]}, want {expect[key]}"
    if "effective_p" in expect:
        assert got["p"] == expect["effective_p"]
