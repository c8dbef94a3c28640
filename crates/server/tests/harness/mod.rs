//! The real server in this process (chasquid's `server_test.go` is the
//! model): `Server::start` on port 0 with a config value, a DNS server on
//! loopback that answers NXDOMAIN for every name (so SPF and DKIM see
//! nothing and nothing waits on a timeout), and plain SMTP and HTTP
//! clients. Each test gets its own data directory and ports.

#![allow(dead_code)]

use portcullis_config::{Config, ListenerRole};
use portcullis_server::{Bound, Server};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UdpSocket};

pub const TOKEN: &str = "in-process-admin-token-0123456789abcdef";

/// A server under test and where it keeps its data.
pub struct Running {
    pub server: Server,
    pub data: PathBuf,
    _dir: TempDir,
}

impl Running {
    pub fn smtp(&self, role: ListenerRole) -> SocketAddr {
        self.server
            .address(Bound::Smtp(role))
            .expect("the role has a listener")
    }

    pub fn http(&self) -> SocketAddr {
        self.server.address(Bound::Http).expect("http is bound")
    }

    pub fn mailbox(&self, domain: &str, user: &str) -> PathBuf {
        self.data.join("mail").join(domain).join(user).join("new")
    }
}

/// The embedded default on port 0 everywhere, `change` applied.
pub async fn start(change: impl FnOnce(&mut Config)) -> Running {
    let dir = TempDir::new();
    let config = config(&dir.0, dns_nxdomain().await, change);
    let data = config.data_dir.clone();
    let server = Server::start(config, None)
        .await
        .expect("the server starts");
    Running {
        server,
        data,
        _dir: dir,
    }
}

/// The config `start` uses, for a test that writes it to a file.
pub fn config(dir: &Path, dns: SocketAddr, change: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config::embedded_default(dir.join("data"), "mx.inprocess.test".into());
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    for l in &mut c.listeners {
        l.bind = vec![any];
    }
    c.http_bind = Some(any);
    c.admin_token = Some(TOKEN.into());
    c.dns_nameservers = vec![dns];
    c.dns_timeout = Duration::from_secs(2);
    // The nftables table is one per network namespace: servers tested
    // side by side (as root) must not each make it their own.
    c.admission.kernel_blocklist = portcullis_config::KernelBlocklistMode::Off;
    change(&mut c);
    c
}

/// A DNS server on loopback answering every query with NXDOMAIN.
pub async fn dns_nxdomain() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("udp bind");
    let addr = sock.local_addr().expect("udp addr");
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
            if n < 12 {
                continue;
            }
            let mut answer = buf[..n].to_vec();
            // QR=1, opcode kept, RD kept; RA=1, RCODE=3 (NXDOMAIN); no
            // answers, authorities or additionals (RFC 1035 §4.1.1).
            answer[2] |= 0x80;
            answer[3] = 0x80 | 0x03;
            answer[6..12].fill(0);
            let _ = sock.send_to(&answer, peer).await;
        }
    });
    addr
}

/// A directory removed when the test ends.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("portcullis-it-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An SMTP client speaking one command at a time.
pub struct Smtp {
    reader: BufReader<tokio::io::ReadHalf<TcpStream>>,
    writer: tokio::io::WriteHalf<TcpStream>,
}

/// A reply: its code and its lines' text.
#[derive(Debug)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl Smtp {
    /// Connect and read the greeting.
    pub async fn connect(addr: SocketAddr) -> (Smtp, Reply) {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (r, w) = tokio::io::split(stream);
        let mut c = Smtp {
            reader: BufReader::new(r),
            writer: w,
        };
        let greeting = c.reply().await;
        (c, greeting)
    }

    pub async fn reply(&mut self) -> Reply {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(10), self.reader.read_line(&mut line))
                .await
                .expect("a reply within 10 s")
                .expect("read");
            assert!(n > 0, "connection closed; so far: {text}");
            text.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                return Reply { code, text };
            }
        }
    }

    pub async fn send(&mut self, text: &str) {
        self.send_bytes(text.as_bytes()).await
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write");
    }

    /// One command line and its reply.
    pub async fn cmd(&mut self, line: &str) -> Reply {
        self.send(&format!("{line}\r\n")).await;
        self.reply().await
    }

    /// EHLO, MAIL, RCPT for each, DATA, the message: the last reply.
    pub async fn mail(&mut self, from: &str, to: &[&str], message: &str) -> Reply {
        let r = self.cmd("EHLO client.inprocess.test").await;
        assert_eq!(r.code, 250, "{r:?}");
        let r = self.cmd(&format!("MAIL FROM:<{from}>")).await;
        if r.code != 250 {
            return r;
        }
        for rcpt in to {
            let r = self.cmd(&format!("RCPT TO:<{rcpt}>")).await;
            if r.code != 250 {
                return r;
            }
        }
        let r = self.cmd("DATA").await;
        assert_eq!(r.code, 354, "{r:?}");
        self.send(&format!("{message}\r\n.\r\n")).await;
        self.reply().await
    }
}

/// An HTTP/1.1 request with the admin token: (status, body).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect http");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let body = if method == "POST" || method == "DELETE" {
        "{}"
    } else {
        ""
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write http");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("an answer within 10 s")
        .expect("read http");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// Poll `condition` until it holds, or fail naming `what` after 10 s.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Files in a Maildir `new/`.
pub fn delivered(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}
