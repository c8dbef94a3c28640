"""A tiny raw SMTP client for tests that must send exact bytes (smuggling,
pipelining, garbage), which real clients are too well-behaved to send."""

import socket
import ssl
import time


class Raw:
    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5.0, greet: bool = True):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        if greet:
            self.greeting = self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> tuple[int, str]:
        """Read one (possibly multi-line) reply: (code, full text)."""
        lines = []
        while True:
            line = self._line()
            if line is None:
                raise ConnectionError("closed: " + "".join(lines))
            lines.append(line)
            if len(line) < 4 or line[3] == " ":
                return int(line[:3]), "".join(lines)

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace") + "\n"

    def cmd(self, line: str) -> tuple[int, str]:
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def closed(self, wait: float = 3.0) -> bool:
        """True if the server closes the connection (EOF) within `wait`."""
        self.sock.settimeout(wait)
        try:
            deadline = time.time() + wait
            while time.time() < deadline:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (socket.timeout, ConnectionResetError):
            return False
        return False

    def starttls(self) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = ctx.wrap_socket(self.sock, server_hostname="mx.portcullis.test")
        self.buf = b""

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class ScriptedPeer:
    """A scripted SMTP server on loopback for the peers no package
    provides (one that never offers STARTTLS, one that drops the
    connection inside DATA): it accepts connections on `port` and runs
    `session(conn)` for each in a thread of its own."""

    def __init__(self):
        import threading

        from conftest import free_port

        self.port = free_port()
        self.sock = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading

        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.session, args=(conn,), daemon=True).start()

    def session(self, conn):
        raise NotImplementedError
