//! The SMTP client that hands a message to the next hop (RFC 5321), with
//! opportunistic STARTTLS (RFC 3207): encrypted when the server offers it,
//! the certificate not checked, as opportunistic TLS between MTAs is
//! defined (RFC 7435); plain otherwise unless TLS is required. The LMTP
//! variant (`lmtp.rs`) and the TLS connectors (`tls.rs`) live beside it;
//! a session's transactions are `session.rs`, and the sessions kept for
//! the next transaction to the same place are `pool.rs` (their rules in
//! `cache.rs`).
//!
//! Each recipient gets its own outcome, with the enhanced status code
//! read from the reply here: some may be accepted while others are
//! refused.

mod cache;
mod lmtp;
mod pool;
mod session;
mod tls;

pub(crate) use cache::CacheSettings;
pub use lmtp::deliver_lmtp;
pub(crate) use pool::{Carried, ConnKey, Pool, TlsRules};
pub(crate) use session::SmtpSession;
pub(crate) use tls::{CertificateCheck, checked_tls, subject_public_key_info};
pub use tls::{opportunistic_tls, parse_pin, pinned_tls, tlsa_spki_sha256, verified_tls};

use crate::outcome::{Answer, FailureKind, HostFailure, RcptOutcome, Status};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A message to hand over.
#[derive(Clone)]
pub struct Outgoing<'a> {
    pub helo: &'a str,
    pub sender: &'a str,
    pub recipients: &'a [String],
    pub data: &'a [u8],
    pub smtputf8: bool,
    pub eight_bit: bool,
    pub require_tls: bool,
    /// Pass REQUIRETLS on (RFC 8689 §4.2.1): the next hop must offer it.
    pub requiretls: bool,
    /// Log in with AUTH PLAIN (a smarthost); only ever over TLS.
    pub auth: Option<(&'a str, &'a str)>,
    /// The local address to connect from (`[delivery] source_ipv4`,
    /// `source_ipv6`); the system's choice when `None`.
    pub source: Option<std::net::IpAddr>,
}

const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(crate) struct Conn {
    io: Box<dyn Io>,
    buf: Vec<u8>,
}

pub(crate) struct Reply {
    code: u16,
    text: String,
}

impl Reply {
    fn line(&self) -> String {
        self.text.lines().collect::<Vec<_>>().join(" / ")
    }

    /// The reply's enhanced status code (RFC 2034 §4: right after the
    /// basic code on the first line, of the same class); without one, the
    /// class of the basic code with "0.0" (RFC 3463 §3.1, "other").
    fn status(&self) -> Status {
        let class = (self.code / 100) as u8;
        self.text
            .get(4..)
            .and_then(|t| t.split_whitespace().next())
            .and_then(|s| parse_status(s).filter(|st| st.0 == class))
            .unwrap_or(Status(class, 0, 0))
    }

    fn answer(&self) -> Answer {
        Answer::new(self.status(), self.line()).with_code(Some(self.code))
    }
}

/// `X.Y.Z` with X in 2, 4, 5 and Y, Z of at most three digits.
fn parse_status(s: &str) -> Option<Status> {
    let mut parts = s.split('.');
    let class: u8 = parts.next()?.parse().ok()?;
    let subject: u16 = parts.next().filter(|p| p.len() <= 3)?.parse().ok()?;
    let detail: u16 = parts.next().filter(|p| p.len() <= 3)?.parse().ok()?;
    (parts.next().is_none() && matches!(class, 2 | 4 | 5)).then_some(Status(class, subject, detail))
}

/// The connection broke or misbehaved: RFC 3463 X.4.2 "bad connection".
fn temp(reason: impl Into<String>) -> HostFailure {
    HostFailure::temporary(Status(4, 4, 2), reason)
}

impl Conn {
    async fn read_reply(&mut self) -> Result<Reply, HostFailure> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line().await?;
            let done = line.len() < 4 || line.as_bytes()[3] != b'-';
            lines.push(line);
            if done {
                break;
            }
        }
        let code = lines[0]
            .get(..3)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| temp("malformed reply"))?;
        Ok(Reply {
            code,
            text: lines.join("\n"),
        })
    }

    async fn read_line(&mut self) -> Result<String, HostFailure> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.buf.len() > 64 * 1024 {
                return Err(temp("reply line too long"));
            }
            let mut chunk = [0u8; 4096];
            let n = match timeout(COMMAND_TIMEOUT, self.io.read(&mut chunk)).await {
                Ok(Ok(0)) => return Err(temp("connection closed by the server")),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(temp(e.to_string())),
                Err(_) => return Err(temp("timeout waiting for a reply")),
            };
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), HostFailure> {
        match timeout(COMMAND_TIMEOUT, async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        })
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(temp(e.to_string())),
            Err(_) => Err(temp("timeout sending")),
        }
    }

    async fn command(&mut self, line: &str) -> Result<Reply, HostFailure> {
        self.send(format!("{line}\r\n").as_bytes()).await?;
        self.read_reply().await
    }
}

pub(crate) fn session_failure(stage: &str, r: &Reply) -> HostFailure {
    HostFailure {
        permanent: r.code >= 500,
        status: r.status(),
        reason: format!("{stage}: {}", r.line()),
        kind: FailureKind::Other,
        code: Some(r.code),
    }
}

async fn connect(
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
    protocol: &str,
) -> Result<TcpStream, HostFailure> {
    let attempt = async {
        let Some(from) = source else {
            return TcpStream::connect(addr).await;
        };
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(from, 0))?;
        socket.connect(addr).await
    };
    match timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(Ok(s)) => Ok(s),
        // RFC 3463 X.4.1: no answer from host.
        Ok(Err(e)) => Err(HostFailure::temporary(
            Status(4, 4, 1),
            format!("connect to {protocol} {addr}: {e}"),
        )
        .with_kind(FailureKind::Connect)),
        Err(_) => Err(HostFailure::temporary(
            Status(4, 4, 1),
            format!("connect to {protocol} {addr}: timeout"),
        )
        .with_kind(FailureKind::Connect)),
    }
}

/// Connect and read the 220 greeting.
pub(crate) async fn open(
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
    protocol: &str,
) -> Result<Conn, HostFailure> {
    let stream = connect(addr, source, protocol).await?;
    greet(Conn {
        io: Box::new(stream),
        buf: Vec::new(),
    })
    .await
}

async fn greet(mut c: Conn) -> Result<Conn, HostFailure> {
    let greeting = c.read_reply().await?;
    if greeting.code != 220 {
        return Err(session_failure("greeting", &greeting));
    }
    Ok(c)
}

/// Deliver to one address. Ok: an outcome per recipient, in order.
pub async fn deliver(
    addr: SocketAddr,
    msg: &Outgoing<'_>,
    tls: &tokio_rustls::TlsConnector,
    server_name: &str,
) -> Result<Vec<RcptOutcome>, HostFailure> {
    let mut s = establish(addr, msg, tls, server_name).await?;
    let outcomes = s.transaction(msg).await;
    if outcomes.is_ok() {
        s.quit().await;
    }
    outcomes
}

/// Connect, read the greeting, say EHLO, start TLS when offered (or
/// required) and log in: a session ready for its first transaction.
pub(crate) async fn establish(
    addr: SocketAddr,
    msg: &Outgoing<'_>,
    tls: &tokio_rustls::TlsConnector,
    server_name: &str,
) -> Result<SmtpSession, HostFailure> {
    let mut c = open(addr, msg.source, "SMTP").await?;
    let mut ehlo = c.command(&format!("EHLO {}", msg.helo)).await?;
    if ehlo.code != 250 {
        return Err(session_failure("EHLO", &ehlo));
    }
    if has_extension(&ehlo, "STARTTLS") {
        let r = c.command("STARTTLS").await?;
        if r.code == 220 {
            c = starttls(c, tls, server_name).await?;
            ehlo = c.command(&format!("EHLO {}", msg.helo)).await?;
            if ehlo.code != 250 {
                return Err(session_failure("EHLO after STARTTLS", &ehlo));
            }
        } else if msg.require_tls || msg.auth.is_some() {
            // Credentials never travel in the clear.
            return Err(HostFailure {
                kind: FailureKind::Tls,
                ..session_failure("STARTTLS", &r)
            });
        }
    } else if msg.require_tls || msg.auth.is_some() {
        // RFC 3463 X.7.10 (RFC 8689): encryption needed.
        return Err(HostFailure::temporary(
            Status(4, 7, 10),
            "TLS required but the server does not offer STARTTLS",
        )
        .with_kind(FailureKind::Tls));
    }
    if let Some((user, password)) = msg.auth {
        login(&mut c, user, password).await?;
    }
    Ok(SmtpSession::new(c, ehlo))
}

/// Submit over implicit TLS (RFC 8314, port 465): the handshake comes
/// before the greeting, so nothing is ever sent in the clear.
pub async fn deliver_implicit_tls(
    addr: SocketAddr,
    msg: &Outgoing<'_>,
    tls: &tokio_rustls::TlsConnector,
    server_name: &str,
) -> Result<Vec<RcptOutcome>, HostFailure> {
    let stream = connect(addr, msg.source, "SMTPS").await?;
    let plain = Conn {
        io: Box::new(stream),
        buf: Vec::new(),
    };
    let mut c = greet(starttls(plain, tls, server_name).await?).await?;
    let ehlo = c.command(&format!("EHLO {}", msg.helo)).await?;
    if ehlo.code != 250 {
        return Err(session_failure("EHLO", &ehlo));
    }
    if let Some((user, password)) = msg.auth {
        login(&mut c, user, password).await?;
    }
    let mut s = SmtpSession::new(c, ehlo);
    let outcomes = s.transaction(msg).await;
    if outcomes.is_ok() {
        s.quit().await;
    }
    outcomes
}

async fn starttls(
    c: Conn,
    tls: &tokio_rustls::TlsConnector,
    server_name: &str,
) -> Result<Conn, HostFailure> {
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
        .map_err(|_| temp(format!("{server_name} is not a valid TLS server name")))?;
    // Anything the server sent after its 220 is discarded with the plain
    // buffer (RFC 3207 §4.2).
    let io = Box::new(IoBox(c.io));
    let stream = timeout(CONNECT_TIMEOUT, tls.connect(name, io))
        .await
        .map_err(|_| temp("TLS handshake timeout"))?
        .map_err(|e| {
            // RFC 3463 X.7.5: cryptographic failure.
            HostFailure::temporary(
                Status(4, 7, 5),
                format!("TLS handshake with {server_name}: {e}"),
            )
            .with_kind(FailureKind::Tls)
        })?;
    Ok(Conn {
        io: Box::new(stream),
        buf: Vec::new(),
    })
}

/// A boxed stream as a concrete type tokio-rustls can wrap.
struct IoBox(Box<dyn Io>);

impl AsyncRead for IoBox {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for IoBox {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut *self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

/// AUTH PLAIN (RFC 4616) with the initial response. Called only after
/// STARTTLS succeeded.
async fn login(c: &mut Conn, user: &str, password: &str) -> Result<(), HostFailure> {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
    let r = c.command(&format!("AUTH PLAIN {token}")).await?;
    if r.code != 235 {
        return Err(HostFailure {
            kind: FailureKind::Auth,
            ..session_failure("AUTH", &r)
        });
    }
    Ok(())
}

fn has_extension(ehlo: &Reply, name: &str) -> bool {
    ehlo.text.lines().skip(1).any(|l| {
        l.get(4..)
            .and_then(|e| e.split_whitespace().next())
            .is_some_and(|e| e.eq_ignore_ascii_case(name))
    })
}

/// A RCPT reply as an outcome; `None` while the recipient waits for DATA.
fn rcpt_outcome(r: &Reply) -> Option<RcptOutcome> {
    match r.code {
        250 | 251 => None,
        _ => Some(outcome_of(r)),
    }
}

/// A final reply as an outcome: 2xx delivered, 4xx later, else never.
pub(crate) fn outcome_of(r: &Reply) -> RcptOutcome {
    match r.code {
        200..=299 => RcptOutcome::Delivered(r.answer()),
        400..=499 => RcptOutcome::Temporary(r.answer()),
        _ => RcptOutcome::Permanent(r.answer()),
    }
}

/// RFC 5321 §4.5.2: a line starting with "." gets one more; the data ends
/// with CRLF "." CRLF.
pub(crate) fn dot_stuff(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16);
    let mut at_line_start = true;
    for &b in data {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16, text: &str) -> Reply {
        Reply {
            code,
            text: text.into(),
        }
    }

    #[test]
    fn the_enhanced_status_is_read_from_the_first_line() {
        assert_eq!(
            reply(550, "550 5.1.1 <x@y>: no such user").status(),
            Status(5, 1, 1)
        );
        assert_eq!(
            reply(451, "451-4.3.0 busy\n451 4.3.0 later").status(),
            Status(4, 3, 0)
        );
    }

    #[test]
    fn a_reply_without_an_enhanced_status_gets_its_class() {
        assert_eq!(reply(550, "550 no such user").status(), Status(5, 0, 0));
        assert_eq!(reply(450, "450 try later").status(), Status(4, 0, 0));
        // A code of another class than the reply is not believed.
        assert_eq!(reply(450, "450 5.1.1 odd").status(), Status(4, 0, 0));
        assert_eq!(
            reply(550, "550 1.2.3.4 is listed").status(),
            Status(5, 0, 0)
        );
    }

    #[test]
    fn dot_stuffing_and_terminator() {
        assert_eq!(
            dot_stuff(b"a\r\n.b\r\n..c\r\n"),
            b"a\r\n..b\r\n...c\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b".start"), b"..start\r\n.\r\n");
    }
}
