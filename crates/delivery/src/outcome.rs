//! One outcome vocabulary for every courier (chasquid's courier: an error
//! and whether it is permanent; maddy's `exterrors`): each recipient ends
//! an attempt delivered, deferred or failed, with the enhanced status code
//! (RFC 3463) and the words behind it. The code is read once, where the
//! reply is parsed; nothing downstream parses text for it.

use std::fmt;

pub use portcullis_shaping::{Action, ReplyClass};
pub use portcullis_smtp::Status;

/// A reply or a local failure: its enhanced status code and its words
/// (the next hop's reply line, or what went wrong here), and what the
/// reply table makes of it (the router classifies every answer once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: Status,
    pub text: String,
    /// The next hop's basic reply code; `None` for a failure of our own.
    pub code: Option<u16>,
    pub class: ReplyClass,
    pub action: Action,
    /// The recipient's site asks for no new try before this
    /// (milliseconds since the epoch): it is paused, or our own limits
    /// held the recipient back. With no `code` it was not tried at all,
    /// and the attempt does not count.
    pub retry_at: Option<u64>,
}

impl Answer {
    pub fn new(status: Status, text: impl Into<String>) -> Answer {
        Answer {
            status,
            text: text.into(),
            code: None,
            class: ReplyClass::Other,
            action: Action::Nothing,
            retry_at: None,
        }
    }

    /// The same answer with the next hop's basic code.
    pub fn with_code(self, code: Option<u16>) -> Answer {
        Answer { code, ..self }
    }

    /// Our own site limits held the recipient back: nothing was tried.
    pub fn held_back(&self) -> bool {
        self.code.is_none() && self.retry_at.is_some()
    }

    /// `421 4.7.28`, or the enhanced code alone for a failure of ours.
    pub fn short(&self) -> String {
        match self.code {
            Some(c) => format!("{c} {}", self.status),
            None => self.status.to_string(),
        }
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// What became of one recipient in one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RcptOutcome {
    Delivered(Answer),
    /// Try again later (4xx, no connection, a full disk).
    Temporary(Answer),
    /// Will never work: the sender gets a bounce.
    Permanent(Answer),
}

impl RcptOutcome {
    pub fn answer(&self) -> &Answer {
        match self {
            RcptOutcome::Delivered(a) | RcptOutcome::Temporary(a) | RcptOutcome::Permanent(a) => a,
        }
    }

    pub fn answer_mut(&mut self) -> &mut Answer {
        match self {
            RcptOutcome::Delivered(a) | RcptOutcome::Temporary(a) | RcptOutcome::Permanent(a) => a,
        }
    }

    /// `delivered`, `deferred` or `failed`: the word logs and metrics use.
    pub fn word(&self) -> &'static str {
        match self {
            RcptOutcome::Delivered(_) => "delivered",
            RcptOutcome::Temporary(_) => "deferred",
            RcptOutcome::Permanent(_) => "failed",
        }
    }

    /// The same answer for every recipient of a failed attempt.
    pub fn of_failure(f: &HostFailure) -> RcptOutcome {
        let a = Answer::new(f.status, f.reason.clone()).with_code(f.code);
        if f.permanent {
            RcptOutcome::Permanent(a)
        } else {
            RcptOutcome::Temporary(a)
        }
    }
}

/// Why a whole attempt failed before any recipient was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFailure {
    pub permanent: bool,
    pub status: Status,
    pub reason: String,
    pub kind: FailureKind,
    /// The next hop's basic reply code, when it answered.
    pub code: Option<u16>,
}

impl HostFailure {
    /// A temporary failure with a status of its own.
    pub fn temporary(status: Status, reason: impl Into<String>) -> HostFailure {
        HostFailure {
            permanent: false,
            status,
            reason: reason.into(),
            kind: FailureKind::Other,
            code: None,
        }
    }

    pub fn permanent(status: Status, reason: impl Into<String>) -> HostFailure {
        HostFailure {
            permanent: true,
            ..HostFailure::temporary(status, reason)
        }
    }

    pub fn with_kind(self, kind: FailureKind) -> HostFailure {
        HostFailure { kind, ..self }
    }
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
