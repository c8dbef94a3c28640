"""A milter written with pymilter (Debian's python3-milter, so it runs
under /usr/bin/python3) that does what each message asks of it, so that
one milter exercises every reply and modification portcullis must apply.

    /usr/bin/python3 pymilter_peer.py SOCKET RECORD_FILE

RECORD_FILE "-" records nothing. The message's Subject names the action at the end of message; a few
envelope addresses name actions at MAIL and RCPT. Each message ends with
one JSON line in RECORD_FILE: the macros seen at each step, the headers
and the body as the milter received them."""

import json
import sys
import time

import Milter

RECORD = sys.argv[2]

MACROS = {
    "connect": ["j", "{daemon_name}", "{client_addr}", "{client_name}", "v"],
    "envfrom": ["{mail_addr}", "{auth_authen}", "{auth_type}", "{tls_version}", "{cipher}", "j", "{daemon_name}"],
    "envrcpt": ["{rcpt_addr}"],
    "eom": ["i"],
}


class TestMilter(Milter.Base):
    def __init__(self):
        self.seen = {}
        self.headers = []
        self.content = b""
        self.rcpts = []
        self.subject = ""

    def macros(self, step):
        self.seen[step] = {m: self.getsymval(m) for m in MACROS[step] if self.getsymval(m) is not None}

    def connect(self, hostname, family, hostaddr):
        self.macros("connect")
        self.seen["connect_host"] = hostname
        self.seen["connect_addr"] = hostaddr[0] if hostaddr else None
        return Milter.CONTINUE

    def hello(self, name):
        self.seen["helo"] = name
        return Milter.CONTINUE

    def envfrom(self, sender, *params):
        self.headers, self.content, self.rcpts, self.subject = [], b"", [], ""
        self.macros("envfrom")
        self.seen["mail"] = [sender, *params]
        if sender.startswith("<replycode@"):
            self.setreply("553", "5.7.9", "Sender refused by the test milter")
            return Milter.REJECT
        if sender.startswith("<rejectsender@"):
            return Milter.REJECT
        return Milter.CONTINUE

    def envrcpt(self, rcpt, *params):
        self.macros("envrcpt")
        self.rcpts.append(rcpt)
        if rcpt.startswith("<rejectme@"):
            return Milter.REJECT
        if rcpt.startswith("<tempme@"):
            return Milter.TEMPFAIL
        return Milter.CONTINUE

    def header(self, name, value):
        self.headers.append([name, value])
        if name.lower() == "subject":
            self.subject = value.strip()
        return Milter.CONTINUE

    def eoh(self):
        if self.subject == "accept-at-eoh":
            self.record("accepted at eoh")
            return Milter.ACCEPT
        return Milter.CONTINUE

    def body(self, chunk):
        self.content += chunk
        return Milter.CONTINUE

    def record(self, outcome):
        if RECORD == "-":  # a pass-through milter (bench/milter.sh)
            return
        self.seen["outcome"] = outcome
        self.seen["headers"] = self.headers
        self.seen["body"] = self.content.decode(errors="replace")
        self.seen["rcpts"] = self.rcpts
        with open(RECORD, "a") as f:
            f.write(json.dumps(self.seen) + "\n")

    def eom(self):
        self.macros("eom")
        s = self.subject
        if s == "modify":
            self.addheader("X-Added", "added by the test milter")
            self.addheader("X-Inserted", "at the top", 0)
            self.chgheader("X-Change", 1, "changed")
            self.chgheader("X-Delete", 1, "")
            self.chgfrom("<changed-sender@elsewhere.test>")
            self.addrcpt("<added@local.test>")
            self.delrcpt("<removed@local.test>")
            self.replacebody(b"The body the milter wrote.\r\nSecond line.\r\n")
        elif s == "reject":
            self.record(s)
            return Milter.REJECT
        elif s == "tempfail":
            self.record(s)
            return Milter.TEMPFAIL
        elif s == "replycode":
            self.setreply("554", "5.7.0", "Content refused: test pattern")
            self.record(s)
            return Milter.REJECT
        elif s == "discard":
            self.record(s)
            return Milter.DISCARD
        elif s == "quarantine":
            self.quarantine("held by the test milter")
        elif s.startswith("progress"):
            # Each pause is shorter than the MTA's timeout, all of them
            # together longer: only progress messages keep it waiting.
            for _ in range(int(s.split()[1])):
                time.sleep(0.3)
                self.progress()
        self.record(s)
        return Milter.ACCEPT


def main():
    Milter.factory = TestMilter
    Milter.set_flags(Milter.ADDHDRS | Milter.CHGHDRS | Milter.ADDRCPT | Milter.DELRCPT
                     | Milter.CHGFROM | Milter.CHGBODY | Milter.QUARANTINE)
    Milter.runmilter("portcullis-test", sys.argv[1], 60)


if __name__ == "__main__":
    main()
