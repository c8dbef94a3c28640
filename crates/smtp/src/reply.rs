//! SMTP replies (RFC 5321 4.2) with enhanced status codes (RFC 2034/3463).

use std::fmt;

/// An enhanced status code `class.subject.detail` (RFC 3463).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status(pub u8, pub u16, pub u16);

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One reply, possibly of several lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// `None` only for the greeting and the EHLO/HELO reply, which RFC 2034
    /// leaves without one because the client has not yet seen the extension.
    pub status: Option<Status>,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, status: Status, text: impl Into<String>) -> Reply {
        Reply {
            code,
            status: Some(status),
            lines: vec![clean(text.into())],
        }
    }

    /// A reply without an enhanced status code (greeting, EHLO).
    pub fn bare(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            status: None,
            lines: vec![clean(text.into())],
        }
    }

    pub fn with_line(mut self, text: impl Into<String>) -> Reply {
        self.lines.push(clean(text.into()));
        self
    }

    pub fn is_success(&self) -> bool {
        self.code < 400
    }

    pub fn is_permanent_failure(&self) -> bool {
        self.code >= 500
    }

    /// The reply as it goes on the wire: every line but the last has `-`
    /// after the code, and each carries the enhanced code.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            let text = match self.status {
                Some(s) => format!("{}{sep}{s} {line}\r\n", self.code),
                None => format!("{}{sep}{line}\r\n", self.code),
            };
            out.extend_from_slice(text.as_bytes());
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_to(&mut v);
        v
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.lines.join(" / ");
        match self.status {
            Some(s) => write!(f, "{} {s} {text}", self.code),
            None => write!(f, "{} {text}", self.code),
        }
    }
}

/// Reply text echoes what clients sent (addresses, parameters); never let
/// it carry a line break or control byte back onto the wire.
fn clean(s: String) -> String {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return s;
    }
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The replies the session gives, in one place so their wording stays
/// consistent and each carries its enhanced code.
pub mod canned {
    use super::{Reply, Status};

    pub fn ok() -> Reply {
        Reply::new(250, Status(2, 0, 0), "Ok")
    }
    /// The end of data, once the message is on disk.
    pub fn queued(id: &str) -> Reply {
        Reply::new(250, Status(2, 0, 0), format!("Ok: queued as {id}"))
    }
    pub fn syntax(what: &str) -> Reply {
        Reply::new(501, Status(5, 5, 4), what)
    }
    pub fn bad_sequence(what: &str) -> Reply {
        Reply::new(503, Status(5, 5, 1), what)
    }
    pub fn unknown_command() -> Reply {
        Reply::new(500, Status(5, 5, 1), "Command unrecognized")
    }
    pub fn line_too_long(limit: usize) -> Reply {
        Reply::new(
            500,
            Status(5, 5, 2),
            format!("Line too long (limit {limit} octets including CRLF)"),
        )
    }
    pub fn bare_newline_in_command() -> Reply {
        Reply::new(
            500,
            Status(5, 5, 2),
            "Bare LF or CR in command line: lines must end with CRLF (RFC 5321 2.3.8); closing connection",
        )
    }
    pub fn bare_newline_in_data() -> Reply {
        Reply::new(
            554,
            Status(5, 6, 0),
            "Message refused: bare LF or CR in message content, lines must end with CRLF (RFC 5321 2.3.8); closing connection",
        )
    }
    pub fn too_many_errors() -> Reply {
        Reply::new(421, Status(4, 7, 0), "Too many errors, closing connection")
    }
    pub fn shutting_down() -> Reply {
        Reply::new(
            421,
            Status(4, 3, 2),
            "Service shutting down, try again later",
        )
    }
    pub fn timeout() -> Reply {
        Reply::new(421, Status(4, 4, 2), "Timeout exceeded, closing connection")
    }
    pub fn size_exceeded(limit: u64) -> Reply {
        Reply::new(
            552,
            Status(5, 3, 4),
            format!("Message size exceeds fixed limit of {limit} octets"),
        )
    }
}
