//! Milters (`[[milter]]`): the filters every message of the listed roles
//! passes, in the order of the file.

use crate::ListenerRole;
use serde::Deserialize;
use std::path::PathBuf;

/// One milter as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Milter {
    /// For the log and the metrics' `milter` label (default: the socket).
    pub name: String,
    pub socket: MilterSocket,
    /// The listener roles whose mail it sees.
    pub roles: Vec<ListenerRole>,
    /// The longest wait for the milter at any step (connect, each answer);
    /// a progress message starts it again.
    pub timeout_ms: u64,
    pub on_failure: MilterFailure,
    /// Steps never sent to it (besides those it declines itself).
    pub skip: Vec<MilterStep>,
    /// Macros sent with the connect step beside ours, as given.
    pub macros: Vec<(String, String)>,
    /// Connections open to it at once (one per SMTP session using it).
    pub max_connections: usize,
}

impl Milter {
    pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
    pub const DEFAULT_MAX_CONNECTIONS: usize = 128;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MilterSocket {
    Unix(PathBuf),
    Inet { host: String, port: u16 },
}

impl std::fmt::Display for MilterSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MilterSocket::Unix(p) => write!(f, "unix:{}", p.display()),
            MilterSocket::Inet { host, port } if host.contains(':') => {
                write!(f, "inet:[{host}]:{port}")
            }
            MilterSocket::Inet { host, port } => write!(f, "inet:{host}:{port}"),
        }
    }
}

/// What a milter that cannot be reached, times out or breaks the
/// protocol costs the message (Postfix's `milter_default_action`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MilterFailure {
    /// `451 4.7.1` for the rest of the session.
    #[default]
    Tempfail,
    /// Go on without this milter for the rest of the session.
    Accept,
    /// `550 5.7.1` for the rest of the session.
    Reject,
}

/// A protocol step that can be left out.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MilterStep {
    Connect,
    Helo,
    Mail,
    Rcpt,
    Data,
    Headers,
    Eoh,
    Body,
}
