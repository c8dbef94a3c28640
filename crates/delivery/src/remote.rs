//! The SMTP client that hands a message to the next hop (RFC 5321), with
//! opportunistic STARTTLS (RFC 3207): encrypted when the server offers it,
//! the certificate not checked, as opportunistic TLS between MTAs is
//! defined (RFC 7435); plain otherwise unless TLS is required.
//!
//! Each recipient gets its own outcome: some may be accepted while others
//! are refused.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// What the next hop said about one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RcptOutcome {
    Delivered(String),
    /// 4xx, or the connection failed: try again later.
    Temporary(String),
    /// 5xx: bounce.
    Permanent(String),
}

/// A message to hand over.
pub struct Outgoing<'a> {
    pub helo: &'a str,
    pub sender: &'a str,
    pub recipients: &'a [String],
    pub data: &'a [u8],
    pub smtputf8: bool,
    pub eight_bit: bool,
    pub require_tls: bool,
    /// Log in with AUTH PLAIN (a smarthost); only ever over TLS.
    pub auth: Option<(&'a str, &'a str)>,
}

/// Why a whole attempt failed before any recipient was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFailure {
    pub permanent: bool,
    pub reason: String,
    pub kind: FailureKind,
}

/// Where an attempt failed, for callers that answer differently (the
/// sendmail client's exit codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailureKind {
    /// No TCP connection.
    Connect,
    /// The TLS handshake failed (for a verifying client: a certificate
    /// that is not trusted).
    Tls,
    /// The server refused the credentials.
    Auth,
    #[default]
    Other,
}

const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Conn {
    io: Box<dyn Io>,
    buf: Vec<u8>,
}

struct Reply {
    code: u16,
    text: String,
}

impl Reply {
    fn line(&self) -> String {
        self.text.lines().collect::<Vec<_>>().join(" / ")
    }
}

fn temp(reason: impl Into<String>) -> HostFailure {
    HostFailure {
        permanent: false,
        reason: reason.into(),
        kind: FailureKind::Other,
    }
}

fn failed(kind: FailureKind, reason: impl Into<String>) -> HostFailure {
    HostFailure {
        kind,
        ..temp(reason)
    }
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

fn session_failure(stage: &str, r: &Reply) -> HostFailure {
    HostFailure {
        permanent: r.code >= 500,
        reason: format!("{stage}: {}", r.line()),
        kind: FailureKind::Other,
    }
}

async fn connect(addr: SocketAddr, protocol: &str) -> Result<TcpStream, HostFailure> {
    match timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(failed(
            FailureKind::Connect,
            format!("connect to {protocol} {addr}: {e}"),
        )),
        Err(_) => Err(failed(
            FailureKind::Connect,
            format!("connect to {protocol} {addr}: timeout"),
        )),
    }
}

/// Connect and read the 220 greeting.
async fn open(addr: SocketAddr, protocol: &str) -> Result<Conn, HostFailure> {
    let stream = connect(addr, protocol).await?;
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
    let mut c = open(addr, "SMTP").await?;
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
        return Err(failed(
            FailureKind::Tls,
            "TLS required but the server does not offer STARTTLS",
        ));
    }
    if let Some((user, password)) = msg.auth {
        login(&mut c, user, password).await?;
    }
    transaction(&mut c, &ehlo, msg).await
}

/// Submit over implicit TLS (RFC 8314, port 465): the handshake comes
/// before the greeting, so nothing is ever sent in the clear.
pub async fn deliver_implicit_tls(
    addr: SocketAddr,
    msg: &Outgoing<'_>,
    tls: &tokio_rustls::TlsConnector,
    server_name: &str,
) -> Result<Vec<RcptOutcome>, HostFailure> {
    let stream = connect(addr, "SMTPS").await?;
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
    transaction(&mut c, &ehlo, msg).await
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
            failed(
                FailureKind::Tls,
                format!("TLS handshake with {server_name}: {e}"),
            )
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

/// Deliver to an LMTP server (RFC 2033): LHLO instead of EHLO, and after
/// the data one reply per accepted recipient, so each mailbox's own
/// answer (full, over quota) reaches its recipient.
pub async fn deliver_lmtp(
    addr: SocketAddr,
    msg: &Outgoing<'_>,
) -> Result<Vec<RcptOutcome>, HostFailure> {
    let mut c = open(addr, "LMTP").await?;
    let lhlo = c.command(&format!("LHLO {}", msg.helo)).await?;
    if lhlo.code != 250 {
        return Err(session_failure("LHLO", &lhlo));
    }
    let r = c.command(&format!("MAIL FROM:<{}>", msg.sender)).await?;
    if r.code != 250 {
        return Err(session_failure("MAIL FROM", &r));
    }
    let mut outcomes: Vec<Option<RcptOutcome>> = Vec::with_capacity(msg.recipients.len());
    for rcpt in msg.recipients {
        let r = c.command(&format!("RCPT TO:<{rcpt}>")).await?;
        outcomes.push(reply_outcome(&r, false));
    }
    let accepted = outcomes.iter().filter(|o| o.is_none()).count();
    if accepted > 0 {
        let r = c.command("DATA").await?;
        if r.code != 354 {
            return Err(session_failure("DATA", &r));
        }
        c.send(&dot_stuff(msg.data)).await?;
        // One reply per accepted recipient, in RCPT order.
        for slot in outcomes.iter_mut().filter(|o| o.is_none()) {
            let r = c.read_reply().await?;
            *slot = reply_outcome(&r, true);
        }
    }
    let _ = c.command("QUIT").await;
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| RcptOutcome::Temporary("no reply".into())))
        .collect())
}

/// A reply as an outcome; `None` for a 2xx that only accepts a recipient
/// (`final_reply` false) and so has no outcome yet.
fn reply_outcome(r: &Reply, final_reply: bool) -> Option<RcptOutcome> {
    match r.code {
        200..=299 if final_reply => Some(RcptOutcome::Delivered(r.line())),
        200..=299 => None,
        400..=499 => Some(RcptOutcome::Temporary(r.line())),
        _ => Some(RcptOutcome::Permanent(r.line())),
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

async fn transaction(
    c: &mut Conn,
    ehlo: &Reply,
    msg: &Outgoing<'_>,
) -> Result<Vec<RcptOutcome>, HostFailure> {
    let mut mail = format!("MAIL FROM:<{}>", msg.sender);
    if has_extension(ehlo, "SIZE") {
        mail.push_str(&format!(" SIZE={}", msg.data.len()));
    }
    if msg.eight_bit && has_extension(ehlo, "8BITMIME") {
        mail.push_str(" BODY=8BITMIME");
    }
    if msg.smtputf8 {
        if !has_extension(ehlo, "SMTPUTF8") {
            return Err(HostFailure {
                permanent: true,
                reason: "the message needs SMTPUTF8, which the server does not offer".into(),
                kind: FailureKind::Other,
            });
        }
        mail.push_str(" SMTPUTF8");
    }
    let rcpt_lines: Vec<String> = msg
        .recipients
        .iter()
        .map(|r| format!("RCPT TO:<{r}>\r\n"))
        .collect();
    let pipelining = has_extension(ehlo, "PIPELINING");
    let (mail_reply, outcomes, data_reply) = if pipelining {
        // RFC 2920: MAIL, every RCPT and DATA in one write, then the
        // replies in order; DATA is refused by the server if no RCPT was
        // accepted, so nothing is sent by mistake.
        let mut batch = format!("{mail}\r\n");
        batch.extend(rcpt_lines.iter().map(String::as_str));
        batch.push_str("DATA\r\n");
        c.send(batch.as_bytes()).await?;
        let mail_reply = c.read_reply().await?;
        let mut outcomes = Vec::with_capacity(rcpt_lines.len());
        for _ in &rcpt_lines {
            outcomes.push(rcpt_outcome(&c.read_reply().await?));
        }
        let data_reply = c.read_reply().await?;
        (mail_reply, outcomes, Some(data_reply))
    } else {
        let mail_reply = c.command(&mail).await?;
        let mut outcomes = Vec::with_capacity(rcpt_lines.len());
        if mail_reply.code == 250 {
            for line in &rcpt_lines {
                c.send(line.as_bytes()).await?;
                outcomes.push(rcpt_outcome(&c.read_reply().await?));
            }
        }
        (mail_reply, outcomes, None)
    };
    if mail_reply.code != 250 {
        return Err(session_failure("MAIL FROM", &mail_reply));
    }
    if outcomes.iter().all(Option::is_some) {
        let _ = c.command("QUIT").await;
        return Ok(outcomes.into_iter().flatten().collect());
    }
    let r = match data_reply {
        Some(r) => r,
        None => c.command("DATA").await?,
    };
    if r.code != 354 {
        return Err(session_failure("DATA", &r));
    }
    c.send(&dot_stuff(msg.data)).await?;
    let r = c.read_reply().await?;
    let final_outcome = match r.code {
        200..=299 => RcptOutcome::Delivered(r.line()),
        400..=499 => RcptOutcome::Temporary(r.line()),
        _ => RcptOutcome::Permanent(r.line()),
    };
    let _ = c.command("QUIT").await;
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| final_outcome.clone()))
        .collect())
}

/// A RCPT reply as an outcome; `None` while the recipient waits for DATA.
fn rcpt_outcome(r: &Reply) -> Option<RcptOutcome> {
    match r.code {
        250 | 251 => None,
        400..=499 => Some(RcptOutcome::Temporary(r.line())),
        _ => Some(RcptOutcome::Permanent(r.line())),
    }
}

/// RFC 5321 §4.5.2: a line starting with "." gets one more; the data ends
/// with CRLF "." CRLF.
fn dot_stuff(data: &[u8]) -> Vec<u8> {
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

/// TLS for opportunistic STARTTLS: encryption without authentication
/// (RFC 7435). Certificates are not checked; MTA-STS/DANE would be the way
/// to check them, and are not implemented yet.
pub fn opportunistic_tls() -> Result<tokio_rustls::TlsConnector, rustls::Error> {
    custom_tls(None)
}

/// TLS that accepts exactly one certificate: the one whose DER encoding
/// has this SHA-256 (an operator pinning a self-signed certificate).
/// A certificate pin: the SHA-256 of the certificate (DER) as 64 hex
/// digits, colons allowed (as `openssl x509 -fingerprint -sha256` prints).
pub fn parse_pin(text: &str) -> Result<[u8; 32], String> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err("a pin is 64 hex digits (colons allowed)".into());
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

pub fn pinned_tls(sha256: [u8; 32]) -> Result<tokio_rustls::TlsConnector, rustls::Error> {
    custom_tls(Some(sha256))
}

fn custom_tls(pin: Option<[u8; 32]>) -> Result<tokio_rustls::TlsConnector, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = CertificatePolicy {
        provider: provider.clone(),
        pin,
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// TLS that verifies the server's certificate and name against the
/// system's CAs (`/etc/ssl/certs/ca-certificates.crt`) and any extra CA
/// files given.
pub fn verified_tls(
    extra_cas: &[std::path::PathBuf],
) -> Result<tokio_rustls::TlsConnector, String> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    let system = std::path::Path::new("/etc/ssl/certs/ca-certificates.crt");
    let files = system
        .exists()
        .then(|| system.to_path_buf())
        .into_iter()
        .chain(extra_cas.iter().cloned());
    for file in files {
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(&file)
            .map_err(|e| format!("{}: {e}", file.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("{}: {e}", file.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", file.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Which server certificates a connector accepts: any (opportunistic TLS
/// between MTAs, RFC 7435), or exactly a pinned one.
#[derive(Debug)]
struct CertificatePolicy {
    provider: Arc<rustls::crypto::CryptoProvider>,
    pin: Option<[u8; 32]>,
}

impl rustls::client::danger::ServerCertVerifier for CertificatePolicy {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self.pin {
            Some(pin)
                if ring::digest::digest(&ring::digest::SHA256, end_entity).as_ref() != pin =>
            {
                Err(rustls::Error::General(
                    "the certificate is not the pinned one (SHA-256 differs)".into(),
                ))
            }
            _ => Ok(rustls::client::danger::ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing_and_terminator() {
        assert_eq!(
            dot_stuff(b"a\r\n.b\r\n..c\r\n"),
            b"a\r\n..b\r\n...c\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b".start"), b"..start\r\n.\r\n");
    }
}
