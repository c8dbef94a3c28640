"""A scripted SMTP receiver that answers as the large providers do: each
recipient's local part names the reply (Gmail's, Microsoft's, Yahoo's
texts from their postmaster pages), and connections over IPv6 can be
refused as Gmail refuses an address without a PTR record. Everything it
accepts is kept in `accepted` (recipient, client address)."""

import socket
import threading

# Local part → the reply to RCPT TO (the large providers' own wording).
REPLIES = {
    "gmail-unknown": "550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n"
    "550 5.1.1 double-checking the recipient's email address for typos. - gsmtp",
    "gmail-full": "452-4.2.2 The email account that you tried to reach is over quota. Please direct\r\n"
    "452 4.2.2 the recipient to https://support.google.com/mail/?p=OverQuotaTemp - gsmtp",
    "gmail-spam": "550-5.7.1 [192.0.2.1] Our system has detected that this message is likely\r\n"
    "550 5.7.1 unsolicited mail. To reduce the amount of spam sent to Gmail - gsmtp",
    "gmail-auth": "550-5.7.26 This mail has been blocked because the sender is unauthenticated.\r\n"
    "550 5.7.26 Gmail requires all senders to authenticate with either SPF or DKIM. - gsmtp",
    "ms-auth": "550 5.7.515 Access denied, sending domain local.test does not meet the required authentication level.",
    "ms-blocked": "550 5.7.1 Service unavailable, Client host [192.0.2.1] blocked using Spamhaus.",
    "ms-unknown": "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
    "yahoo-tss04": "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
}

# Gmail's refusal of an IPv6 client without a PTR record.
NO_PTR = ("550-5.7.25 [::1] The IP address sending this message does not have a PTR record setup, or\r\n"
          "550 5.7.25 the corresponding forward DNS entry does not point to the sending IP. - gsmtp")


class Provider:
    def __init__(self, binds: list[tuple[str, int]], refuse_ipv6: bool = False):
        self.binds = binds
        self.refuse_ipv6 = refuse_ipv6
        self.accepted: list[tuple[str, str]] = []
        self.refused_v6 = 0
        self.socks = []
        self.lock = threading.Lock()

    def start(self) -> "Provider":
        for host, port in self.binds:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            s.listen(64)
            self.socks.append(s)
            threading.Thread(target=self._accept, args=(s,), daemon=True).start()
        return self

    def stop(self):
        for s in self.socks:
            s.close()

    def _accept(self, s):
        while True:
            try:
                conn, peer = s.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn, peer[0]), daemon=True).start()

    def _session(self, conn, client):
        f = conn.makefile("rb")

        def say(text):
            conn.sendall(text.encode() + b"\r\n")

        try:
            say("220 mx.provider.test ESMTP")
            rcpts = []
            while True:
                line = f.readline()
                if not line:
                    return
                cmd = line.decode(errors="replace").strip()
                verb = cmd[:4].upper()
                if verb in ("EHLO", "HELO"):
                    say("250-mx.provider.test\r\n250 8BITMIME")
                elif verb == "MAIL":
                    if self.refuse_ipv6 and ":" in client:
                        with self.lock:
                            self.refused_v6 += 1
                        say(NO_PTR)
                    else:
                        rcpts = []
                        say("250 2.1.0 OK")
                elif verb == "RCPT":
                    address = cmd.split("<", 1)[1].split(">", 1)[0]
                    reply = REPLIES.get(address.split("@")[0])
                    if reply:
                        say(reply)
                        if reply.startswith("421"):
                            return
                    else:
                        rcpts.append(address)
                        say("250 2.1.5 OK")
                elif verb == "DATA":
                    if not rcpts:
                        say("554 5.5.1 no valid recipients")
                        continue
                    say("354 go ahead")
                    while f.readline() not in (b".\r\n", b""):
                        pass
                    with self.lock:
                        self.accepted.extend((r, client) for r in rcpts)
                    say("250 2.0.0 OK queued")
                elif verb == "QUIT":
                    say("221 2.0.0 bye")
                    return
                else:
                    say("250 2.0.0 OK")
        except OSError:
            pass
        finally:
            conn.close()
