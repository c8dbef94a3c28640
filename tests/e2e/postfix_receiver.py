"""A throw-away Postfix instance as a receiving MTA on loopback
(`bench/postfix_instance.sh`): its smtpd on one address and port,
Maildir delivery for the given domains, and its log to count what it
saw."""

import os
import re
import subprocess
import tempfile
from pathlib import Path

from conftest import ROOT, port_open, wait_until


class Postfix:
    """A Postfix instance on `addr`:`port` taking mail for `domains`."""

    def __init__(self, addr: str, port: int, domains: list[str], extra: str = "", maps: str = "static:bench.test/u/"):
        self.dir = Path(tempfile.mkdtemp(prefix="pc-postfix-", dir="/var/tmp"))
        os.chmod(self.dir, 0o755)
        self.addr, self.port = addr, port
        env = dict(
            os.environ,
            PF_ADDR=addr,
            PF_EXTRA=f"""virtual_mailbox_domains = {' '.join(domains)}
virtual_mailbox_maps = {maps}
smtpd_client_event_limit_exceptions =
inet_interfaces = all
{extra}
""",
        )
        subprocess.run(["bash", str(ROOT / "bench/postfix_instance.sh"), "start", str(self.dir), str(port)],
                       check=True, env=env, capture_output=True)
        wait_until(lambda: port_open(port, addr), timeout=30, what=f"Postfix on {addr}:{port}")

    def delivered(self) -> int:
        return sum(len(files) for _, _, files in os.walk(self.dir / "mail"))

    def stop(self):
        subprocess.run(["bash", str(ROOT / "bench/postfix_instance.sh"), "stop", str(self.dir)], capture_output=True)
        subprocess.run(["rm", "-rf", str(self.dir)])

    def log(self) -> str:
        path = self.dir / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def connections(self) -> int:
        """SMTP sessions started (not counting probes of the port that
        said nothing, such as the one that waited for it to open)."""
        connects = len(re.findall(r"postfix/smtpd\[\d+\]: connect from ", self.log()))
        return connects - len([d for d in self._disconnects() if d.get("commands") == 0])

    def sessions(self) -> list[dict[str, int]]:
        """Each ended SMTP session's command counts (`mail=5 rset=4 quit=1`)."""
        return [d for d in self._disconnects() if d.get("commands") != 0]

    def _disconnects(self) -> list[dict[str, int]]:
        out = []
        for line in re.findall(r"postfix/smtpd\[\d+\]: disconnect from \S+ (.*)", self.log()):
            out.append({k: int(v.split("/")[0]) for k, v in re.findall(r"(\w+)=(\S+)", line)})
        return out
