"""A bad config is refused by check-config and by serve, naming the file,
line and key."""

import subprocess

from conftest import binary

CASES = {
    "unknown_key": ('hostname = "mx.test"\nlistner = 1\n', 2, "listner", "unknown field"),
    "bad_address": ('[[listener]]\nrole = "mx"\nbind = ["127.0.0.1:99999"]\n', 3, "listener.bind", "address"),
    "missing_cert": ('[tls]\ncert = "/nonexistent/cert.pem"\nkey = "/nonexistent/key.pem"\n', 2, "tls.cert", "/nonexistent/cert.pem"),
}


def run(*args):
    return subprocess.run([binary(), *args], capture_output=True, text=True, timeout=30)


def check(result, path, line, key, words):
    assert result.returncode != 0
    assert f"{path}:{line}:" in result.stderr, result.stderr
    assert f"key `{key}`" in result.stderr, result.stderr
    assert words in result.stderr, result.stderr


def test_bad_configs_are_refused_by_check_config_and_serve(workdir):
    for name, (text, line, key, words) in CASES.items():
        path = workdir / f"{name}.toml"
        path.write_text(text)
        check(run("check-config", "--config", str(path)), path, line, key, words)
        check(run("serve", "--config", str(path)), path, line, key, words)


def test_good_config_passes(workdir):
    path = workdir / "good.toml"
    path.write_text('hostname = "mx.test"\n[[domain]]\nname = "example.test"\n')
    r = run("check-config", "--config", str(path))
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout


def test_the_example_config_is_valid(workdir):
    from conftest import ROOT

    text = (ROOT / "portcullis.example.toml").read_text().replace("/var/lib/portcullis", str(workdir / "data"))
    path = workdir / "example.toml"
    path.write_text(text)
    r = run("check-config", "--config", str(path))
    assert r.returncode == 0, r.stderr
