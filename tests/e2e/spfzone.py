"""A DNS server scripted from zonedata in the OpenSPF suite's format
(dnslib on loopback, UDP and TCP), for the pyspf cross-check (test_t08).
Such zones need answers a zone file cannot give — TIMEOUT (no answer at
all), records published only as type SPF — so they are served exactly as
the suite's own harness (pyspf) serves them. The suite itself runs in
crates/authn/tests/spf_suite.rs, from a table with these semantics."""

import dnslib
from dnslib import QTYPE, RCODE, RR
from dnslib.server import BaseResolver, DNSError, DNSHandler, DNSServer

from conftest import free_port


def _norm(name: str) -> str:
    return name.rstrip(".").lower()


def _txt_strings(value) -> list[bytes]:
    parts = value if isinstance(value, list) else [value]
    out = []
    for p in parts:
        b = p.encode("utf-8") if isinstance(p, str) else p
        out.extend(b[i : i + 255] for i in range(0, len(b), 255)) if b else out.append(b"")
    # A TXT record of no strings cannot be sent (the suite's null-text
    # case says so); the nearest legal record is one empty string.
    return out or [b""]


class ZoneResolver(BaseResolver):
    def __init__(self, zonedata: dict):
        self.zone = {_norm(k): v for k, v in zonedata.items()}

    def records(self, name: str, kind: str):
        # "NONE" marks a type as deliberately absent (pyspf's harness).
        return [r[kind] for r in self.zone.get(name, []) if isinstance(r, dict) and r.get(kind, "NONE") != "NONE"]

    def times_out(self, name: str, qtype: str) -> bool:
        """pyspf's harness: TIMEOUT stands for a server that never answers
        a query for which the name has no record of the asked type."""
        if "TIMEOUT" not in self.zone.get(name, []):
            return False
        return not (self.answers(name, name, qtype) or self.records(name, "CNAME"))

    def resolve(self, request, handler):
        try:
            return self._resolve(request, handler)
        except DNSError:
            raise
        except Exception:
            # A name the suite made unparsable on purpose: as a real server
            # would, say it does not exist.
            reply = request.reply()
            reply.header.rcode = RCODE.NXDOMAIN
            return reply

    def _resolve(self, request, handler):
        qname = str(request.q.qname)
        # The zone's names as raw text: str() escapes a space as \032.
        name = _norm(b".".join(request.q.qname.label).decode("latin-1"))
        qtype = QTYPE[request.q.qtype]
        reply = request.reply()
        entries = self.zone.get(name)
        if entries is not None and self.times_out(name, qtype):
            raise DNSError("scripted timeout")
        if entries is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        cnames = self.records(name, "CNAME")
        if cnames and qtype != "CNAME":
            target = cnames[0]
            reply.add_answer(RR(qname, QTYPE.CNAME, rdata=dnslib.CNAME(target), ttl=60))
            sub = dnslib.DNSRecord.question(target, qtype)
            chased = self._resolve(sub, handler)
            for rr in chased.rr:
                reply.add_answer(rr)
            return reply
        for rr in self.answers(qname, name, qtype):
            reply.add_answer(rr)
        return reply

    def answers(self, qname, name, qtype):
        if qtype == "TXT":
            # pyspf's harness: a name with SPF records and no TXT record
            # answers TXT queries with the SPF records.
            # A TXT entry, even "NONE", turns that off.
            declared = any(isinstance(r, dict) and "TXT" in r for r in self.zone.get(name, []))
            values = self.records(name, "TXT") if declared else self.records(name, "SPF")
            return [RR(qname, QTYPE.TXT, rdata=dnslib.TXT(_txt_strings(v)), ttl=60) for v in values]
        if qtype == "SPF":
            return [RR(qname, 99, rdata=dnslib.TXT(_txt_strings(v)), ttl=60) for v in self.records(name, "SPF")]
        if qtype == "A":
            return [RR(qname, QTYPE.A, rdata=dnslib.A(v), ttl=60) for v in self.records(name, "A")]
        if qtype == "AAAA":
            return [RR(qname, QTYPE.AAAA, rdata=dnslib.AAAA(v), ttl=60) for v in self.records(name, "AAAA")]
        if qtype == "MX":
            return [RR(qname, QTYPE.MX, rdata=dnslib.MX(v[1], v[0]), ttl=60) for v in self.records(name, "MX")]
        if qtype == "PTR":
            return [RR(qname, QTYPE.PTR, rdata=dnslib.PTR(v), ttl=60) for v in self.records(name, "PTR")]
        return []


class QuietLogger:
    def __getattr__(self, _):
        return lambda *a, **k: None


class ScriptedDns:
    def __init__(self, zonedata: dict):
        self.port = free_port()
        resolver = ZoneResolver(zonedata)
        self.servers = [
            DNSServer(resolver, port=self.port, address="127.0.0.1", tcp=tcp, logger=QuietLogger(), handler=DNSHandler)
            for tcp in (False, True)
        ]
        for s in self.servers:
            s.start_thread()

    def stop(self):
        for s in self.servers:
            s.stop()
