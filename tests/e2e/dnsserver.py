"""A real authoritative DNS server (NSD, from Debian) on a loopback port,
serving the zones a test gives it."""

import subprocess
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import dns.resolver

from conftest import free_port, wait_until

SOA = "@ IN SOA ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 60\n@ IN NS ns.{zone}.\nns IN A 127.0.0.1\n"


class DnsServer:
    def __init__(self, workdir: Path, zones: dict[str, str], netns: str | None = None, port: int | None = None):
        self.dir = workdir / "dns"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.zones = zones
        # Run inside a network namespace the test made (its own loopback).
        self.netns = netns
        self.proc = None

    def start(self) -> "DnsServer":
        conf = [
            "server:",
            f"  ip-address: 127.0.0.1@{self.port}",
            f"  port: {self.port}",
            '  username: ""',
            '  chroot: ""',
            f"  zonesdir: {self.dir}",
            f"  pidfile: {self.dir}/nsd.pid",
            f"  xfrdfile: {self.dir}/xfrd.state",
            # Its own database: NSD's default, /var/lib/nsd/nsd.db, is one
            # file for every instance, and two pytest-xdist workers each
            # start an NSD.
            f"  database: {self.dir}/nsd.db",
            f"  zonelistfile: {self.dir}/zone.list",
            f"  logfile: {self.dir}/nsd.log",
            "  server-count: 1",
            "  verbosity: 1",
            "remote-control:",
            "  control-enable: no",
        ]
        for zone, records in self.zones.items():
            # A whole zone file (a signed one, say) is served as it is.
            body = records if records.startswith("$ORIGIN") else (
                f"$ORIGIN {zone}.\n$TTL 60\n" + SOA.format(zone=zone) + records + "\n")
            (self.dir / f"{zone}.zone").write_text(body)
            conf += ["zone:", f"  name: {zone}", f"  zonefile: {zone}.zone"]
        (self.dir / "nsd.conf").write_text("\n".join(conf) + "\n")
        check = subprocess.run(["nsd-checkconf", str(self.dir / "nsd.conf")], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.proc = subprocess.Popen(
            [*prefix, "nsd", "-d", "-c", str(self.dir / "nsd.conf")],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "nsd.stderr", "wb"),
        )
        first = next(iter(self.zones))
        wait_until(lambda: self._answers(first), 10, lambda: "nsd to answer: " + (self.dir / "nsd.stderr").read_text())
        return self

    def _answers(self, zone: str) -> bool:
        """Whether NSD answers for `zone` yet (asked from inside the
        namespace it runs in, if any)."""
        if self.netns:
            probe = (
                "import sys, dns.message, dns.query, dns.rdatatype\n"
                "q = dns.message.make_query(sys.argv[1], dns.rdatatype.SOA)\n"
                "dns.query.udp(q, '127.0.0.1', port=int(sys.argv[2]), timeout=0.3)\n"
            )
            r = subprocess.run(["ip", "netns", "exec", self.netns, "python3", "-c", probe, zone, str(self.port)],
                               capture_output=True)
            return r.returncode == 0
        try:
            q = dns.message.make_query(zone, dns.rdatatype.SOA)
            dns.query.udp(q, "127.0.0.1", port=self.port, timeout=0.3)
            return True
        except Exception:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def resolver(self) -> dns.resolver.Resolver:
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = ["127.0.0.1"]
        r.port = self.port
        r.lifetime = 3
        return r

    def txt(self, name) -> bytes | None:
        """TXT lookup as dkimpy's dnsfunc wants it."""
        if isinstance(name, bytes):
            name = name.decode()
        try:
            answer = self.resolver().resolve(name, "TXT")
        except Exception:
            return None
        return b"".join(b"".join(r.strings) for r in answer)
