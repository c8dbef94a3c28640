//! The session state machine. One file per group of verbs (chasquid's
//! layout): `greeting.rs` (connect, HELO/EHLO, STARTTLS), `mail.rs`,
//! `rcpt.rs`, `data.rs` (DATA and BDAT). This file owns the input buffer,
//! the line reader and the dispatch loop.

mod auth;
mod data;
mod greeting;
mod mail;
mod rcpt;
#[cfg(test)]
mod tests;

use crate::address::Mailbox;
use crate::command::{self, Command, MailParams, RcptParams};
use crate::framing::DataReader;
use crate::reply::{Reply, Status, canned};
pub use auth::Credentials;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The listener role decides the rules, not the port number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Transfer (port 25): no AUTH, relaying is decided by policy.
    Mx,
    /// Submission with STARTTLS (587): AUTH required for every message.
    Submission,
    /// Submission over implicit TLS (465).
    Submissions,
}

impl Role {
    pub fn is_submission(self) -> bool {
        self != Role::Mx
    }
}

/// Limits an attacker could otherwise choose for us.
#[derive(Clone, Debug)]
pub struct Limits {
    pub command_line: usize,
    pub text_line: usize,
    pub max_recipients: usize,
    pub max_message_size: u64,
    pub max_errors: u32,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
}

impl Default for Limits {
    /// RFC 5321 4.5.3 minimums.
    fn default() -> Self {
        Limits {
            command_line: 512,
            text_line: 1000,
            max_recipients: 100,
            max_message_size: 25 * 1024 * 1024,
            max_errors: 20,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
        }
    }
}

/// What a session needs to know about where it runs. Shared by all
/// sessions of a listener.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub hostname: String,
    pub role: Role,
    pub limits: Limits,
    /// STARTTLS can be offered (a certificate is loaded).
    pub tls_available: bool,
}

/// The client at the other end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub addr: SocketAddr,
    /// Forward-confirmed reverse DNS name, when known.
    pub ptr: Option<String>,
}

/// The negotiated TLS parameters, for the Received header and the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsInfo {
    pub version: String,
    pub cipher: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    pub mailbox: Mailbox,
    pub params: RcptParams,
}

/// One mail transaction: envelope, content and how it arrived, and what
/// the driver's checks found out about it at MAIL FROM (`X`, opaque here).
#[derive(Clone, Debug)]
pub struct Transaction<X = ()> {
    pub peer: Peer,
    pub helo: String,
    pub esmtp: bool,
    pub tls: Option<TlsInfo>,
    /// The authenticated identity, for submission.
    pub auth: Option<String>,
    /// `None` is the null reverse-path `<>`.
    pub mail_from: Option<Mailbox>,
    pub mail_params: MailParams,
    pub recipients: Vec<Recipient>,
    /// The content as received: CRLF lines, dots unstuffed.
    pub body: Vec<u8>,
    /// What the answer to MAIL FROM handed over ([`Session::answer_mail`]):
    /// the one copy of the checks' own transaction state, carried here from
    /// MAIL FROM to [`Action::Deliver`] and dropped with the transaction
    /// (RSET, a failed chunk), so it can never outlive or miss it.
    pub findings: X,
}

impl<X> Transaction<X> {
    /// The "with" keyword of the Received header (RFC 3848, RFC 6531 3.7.3).
    pub fn protocol(&self) -> &'static str {
        match (
            self.mail_params.smtputf8,
            self.tls.is_some(),
            self.auth.is_some(),
        ) {
            (true, false, false) => "UTF8SMTP",
            (true, true, false) => "UTF8SMTPS",
            (true, false, true) => "UTF8SMTPA",
            (true, true, true) => "UTF8SMTPSA",
            (false, _, _) if !self.esmtp => "SMTP",
            (false, false, false) => "ESMTP",
            (false, true, false) => "ESMTPS",
            (false, false, true) => "ESMTPA",
            (false, true, true) => "ESMTPSA",
        }
    }
}

/// What the driver must do next.
#[derive(Debug)]
pub enum Action<X = ()> {
    /// Write this reply. Replies may be buffered until `poll` returns
    /// `None` (RFC 2920 pipelining).
    Reply(Reply),
    /// Flush, then run the TLS handshake and call
    /// [`Session::tls_established`].
    StartTls,
    /// Decide on this sender; answer with [`Session::answer_mail`].
    CheckMail {
        from: Option<Mailbox>,
        params: MailParams,
    },
    /// Decide on this recipient of [`Session::transaction`]; answer with
    /// [`Session::answer_rcpt`].
    CheckRcpt { to: Mailbox, params: RcptParams },
    /// Check these credentials; answer with [`Session::answer_auth`].
    Authenticate(Credentials),
    /// Spool this message (durably) and answer with
    /// [`Session::answer_data`].
    Deliver(Box<Transaction<X>>),
    /// Flush and close the connection.
    Close,
}

/// The driver's answer to a question: go on with `T`, or this refusal
/// (5xx) or deferral (4xx), which the session gives as the command's reply.
pub type Answer<T> = Result<T, Reply>;

#[derive(Debug)]
enum Pending {
    Mail {
        from: Option<Mailbox>,
        params: MailParams,
    },
    Rcpt(Recipient),
    Data,
    Tls,
    Auth,
}

#[derive(Debug)]
enum Mode {
    Command,
    Data(Box<DataReader>),
    /// Reading `remaining` octets of a BDAT chunk.
    Chunk {
        remaining: u64,
        last: bool,
    },
    /// Waiting for the client's next line of an AUTH exchange.
    Auth(auth::AuthStage),
}

/// One SMTP server session. `X` is what the driver's checks keep per
/// transaction (see [`Transaction::findings`]).
pub struct Session<X = ()> {
    cfg: Arc<SessionConfig>,
    peer: Peer,
    tls: Option<TlsInfo>,
    auth: Option<String>,
    helo: Option<(String, bool)>,
    txn: Option<Transaction<X>>,
    /// Set when a BDAT chunk failed: the rest of the chunk is read and
    /// dropped, then this reply is given.
    chunk_error: Option<Reply>,
    /// Line checks of the BDAT content so far; `Some` once a chunk of this
    /// transaction has been read.
    chunk_check: Option<crate::framing::ChunkCheck>,
    mode: Mode,
    input: Vec<u8>,
    pos: usize,
    /// The rest of an over-long command line is being skipped.
    skipping_line: bool,
    out: VecDeque<Action<X>>,
    pending: Option<Pending>,
    errors: u32,
    closed: bool,
}

enum LineError {
    /// Reply and carry on.
    Soft(Reply),
    /// Reply and close: the stream cannot be framed safely any more.
    Fatal(Reply),
}

impl<X> Session<X> {
    pub fn new(cfg: Arc<SessionConfig>, peer: Peer, tls: Option<TlsInfo>) -> Session<X> {
        Session {
            cfg,
            peer,
            tls,
            auth: None,
            helo: None,
            txn: None,
            chunk_error: None,
            chunk_check: None,
            mode: Mode::Command,
            input: Vec::new(),
            pos: 0,
            skipping_line: false,
            out: VecDeque::new(),
            pending: None,
            errors: 0,
            closed: false,
        }
    }

    /// Bytes received from the client.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.closed {
            return;
        }
        if self.pos > 0 && self.pos == self.input.len() {
            self.input.clear();
            self.pos = 0;
        }
        self.input.extend_from_slice(bytes);
    }

    /// The next thing to do, or `None` when the session needs more input
    /// or an answer.
    pub fn poll(&mut self) -> Option<Action<X>> {
        loop {
            if let Some(a) = self.out.pop_front() {
                return Some(a);
            }
            if self.closed || self.pending.is_some() || !self.step() {
                return None;
            }
        }
    }

    /// Whether the session has ended (after `Action::Close`).
    pub fn is_closed(&self) -> bool {
        self.closed && self.out.is_empty()
    }

    /// How long to wait for the client before [`Session::timed_out`]
    /// (RFC 5321 4.5.3.2: commands 5 minutes, data blocks 3 minutes).
    pub fn timeout(&self) -> Duration {
        match self.mode {
            Mode::Command | Mode::Auth(_) => self.cfg.limits.command_timeout,
            _ => self.cfg.limits.data_timeout,
        }
    }

    pub fn timed_out(&mut self) {
        self.close_with(canned::timeout());
    }

    /// The server is stopping: between transactions' content the client is
    /// told so (421 4.3.2, RFC 5321 §3.8) and the connection closes; what
    /// it had not finished it will send again later.
    pub fn shut_down(&mut self) {
        self.close_with(canned::shutting_down());
    }

    /// Whether the client is in the middle of sending content, for the log.
    pub fn in_data(&self) -> bool {
        matches!(self.mode, Mode::Data(_) | Mode::Chunk { .. })
    }

    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The HELO/EHLO name the client gave, once it has.
    pub fn helo_name(&self) -> Option<&str> {
        self.helo.as_ref().map(|(h, _)| h.as_str())
    }

    fn reply(&mut self, r: Reply) {
        self.out.push_back(Action::Reply(r));
    }

    /// The transaction open since MAIL FROM was accepted, if one is.
    pub fn transaction(&self) -> Option<&Transaction<X>> {
        self.txn.as_ref()
    }

    fn reset_txn(&mut self) {
        self.txn = None;
        self.chunk_check = None;
    }

    /// Give an error reply and count it; too many close the session.
    fn fail(&mut self, r: Reply) {
        self.reply(r);
        self.errors += 1;
        if self.errors >= self.cfg.limits.max_errors {
            self.close_with(canned::too_many_errors());
        }
    }

    fn close_with(&mut self, r: Reply) {
        if self.closed {
            return;
        }
        self.reply(r);
        self.out.push_back(Action::Close);
        self.closed = true;
        self.input.clear();
        self.pos = 0;
    }

    /// Process some input. Returns false when more input is needed.
    fn step(&mut self) -> bool {
        match self.mode {
            Mode::Command | Mode::Auth(_) => match self.next_line() {
                None => false,
                Some(Ok(line)) => {
                    match std::mem::replace(&mut self.mode, Mode::Command) {
                        Mode::Auth(stage) => self.auth_line(stage, &line),
                        _ => self.dispatch(&line),
                    }
                    true
                }
                Some(Err(LineError::Soft(r))) => {
                    self.fail(r);
                    true
                }
                Some(Err(LineError::Fatal(r))) => {
                    self.close_with(r);
                    true
                }
            },
            Mode::Data(_) => self.step_data(),
            Mode::Chunk { .. } => self.step_chunk(),
        }
    }

    /// Take one CRLF-terminated command line off the input.
    fn next_line(&mut self) -> Option<Result<String, LineError>> {
        let limit = match self.mode {
            Mode::Auth(_) => auth::AUTH_LINE,
            _ => self.cfg.limits.command_line,
        };
        loop {
            let avail = &self.input[self.pos..];
            let Some(lf) = avail.iter().position(|&b| b == b'\n') else {
                if avail.len() > limit && !self.skipping_line {
                    self.skipping_line = true;
                    self.pos = self.input.len();
                    return Some(Err(LineError::Soft(canned::line_too_long(limit))));
                }
                if self.skipping_line {
                    self.pos = self.input.len();
                }
                return None;
            };
            let raw = &avail[..lf];
            self.pos += lf + 1;
            if std::mem::take(&mut self.skipping_line) {
                continue;
            }
            return Some(check_line(raw, limit));
        }
    }

    fn dispatch(&mut self, line: &str) {
        let cmd = match command::parse(line) {
            Ok(c) => c,
            Err(r) => return self.fail(r),
        };
        match cmd {
            Command::Helo(name) => self.helo(name, false),
            Command::Ehlo(name) => self.helo(name, true),
            Command::StartTls => self.starttls(),
            Command::Mail(path, params) => self.mail(path, params),
            Command::Rcpt(path, params) => self.rcpt(path, params),
            Command::Data => self.data(),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                self.reset_txn();
                self.reply(Reply::new(250, Status(2, 0, 0), "Reset state"));
            }
            Command::Noop => self.reply(canned::ok()),
            Command::Quit => {
                let bye = Reply::new(
                    221,
                    Status(2, 0, 0),
                    format!("{} closing connection", self.cfg.hostname),
                );
                self.close_with(bye);
            }
            // RFC 5321 3.5.3: 252 when we will not verify but would accept.
            Command::Vrfy => self.reply(Reply::new(
                252,
                Status(2, 5, 0),
                "Cannot VRFY user, but will accept message and attempt delivery",
            )),
            // Mailing list expansion discloses addresses; refuse it (3.5.2).
            Command::Expn => self.fail(Reply::new(502, Status(5, 5, 1), "EXPN not available")),
            Command::Help => self.help(),
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial),
            Command::Foreign => self.close_with(Reply::new(
                500,
                Status(5, 5, 1),
                "This is an SMTP server, not a web or POP server; closing connection",
            )),
        }
    }
}

/// A command line must end in CRLF with no other CR or LF, hold no NUL,
/// and be UTF-8 (RFC 6531 allows UTF-8 in addresses).
fn check_line(raw: &[u8], limit: usize) -> Result<String, LineError> {
    if raw.len() + 1 > limit {
        return Err(LineError::Soft(canned::line_too_long(limit)));
    }
    let Some(body) = raw.strip_suffix(b"\r") else {
        return Err(LineError::Fatal(canned::bare_newline_in_command()));
    };
    if body.contains(&b'\r') {
        return Err(LineError::Fatal(canned::bare_newline_in_command()));
    }
    if body.contains(&0) {
        return Err(LineError::Soft(Reply::new(
            500,
            Status(5, 5, 2),
            "NUL byte in command line",
        )));
    }
    String::from_utf8(body.to_vec()).map_err(|_| {
        LineError::Soft(Reply::new(
            500,
            Status(5, 5, 2),
            "Command line is not valid UTF-8",
        ))
    })
}
