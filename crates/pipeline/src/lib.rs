//! The way in: what portcullis decides about a client, its senders,
//! recipients and messages, one file per SMTP stage, in the order a
//! message meets them (see `docs/flow.md`):
//!
//! * `connect.rs` — the class of service before the greeting (blocklist,
//!   concurrency, connection rate), then reverse DNS and address lists;
//! * `mail.rs` — MAIL FROM: who may use the sender (submission), or
//!   sender lists, SPF and the class's message budget (transfer);
//! * `rcpt.rs` — RCPT TO: never a relay, mailboxes and aliases, quotas;
//! * `data.rs` — end of data: DKIM/ARC/DMARC and the domain's policy,
//!   spam verdicts, or the submission rules and DKIM signing;
//! * `cleanup.rs` — the message as queued: trace headers, alias copies,
//!   bounces for unknown users, the queue, the submission log.
//!
//! Per-connection state is plain fields of [`Connection`], taken by
//! `&mut self`; per-transaction state is a value made at MAIL and
//! consumed at end of data. Every stage answers with the reply the
//! session sends (a refusal or deferral carries its enhanced status
//! code). The services the stages consult are [`Inbound`]'s; DNS and the
//! queue are reached through the [`Checks`] and [`Intake`] traits.
//!
//! This crate owns no socket and never writes the spool itself; the
//! driver in `portcullis-server` feeds it and writes its answers.

mod auth;
mod checks;
mod class_of_service;
mod cleanup;
mod connect;
mod data;
mod dnslists;
pub mod forwarding;
mod mail;
mod rcpt;
mod reloading;
mod rspamd;
mod services;
mod submission;
pub mod trace;

pub use class_of_service::{ClassOfService, Gate, Refusal, RefusalCause, RefusalLog};
pub use forwarding::Forwarding;
pub use services::{Checks, DmarcObservations, Intake};
pub use submission::{AccountSession, Submission};

use portcullis_authn::{AuthResult, SpfCheck, SpfOutput};
use portcullis_config::{Config, ListenerRole};
use portcullis_metrics::Metrics;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What every connection shares: the services the stages consult.
pub struct Inbound {
    pub checks: Arc<dyn Checks>,
    pub queue: Arc<dyn Intake>,
    pub admission: ClassOfService,
    pub submission: Submission,
    pub forwarding: Forwarding,
    pub metrics: Arc<Metrics>,
    /// The DMARC aggregate reports' store; None where none are sent.
    pub dmarc_observations: Option<Arc<dyn DmarcObservations>>,
}

/// One connection's way in.
pub struct Connection {
    inbound: Arc<Inbound>,
    /// The configuration in force when the connection arrived.
    config: Arc<Config>,
    /// The session id, for the log.
    id: String,
    role: ListenerRole,
    peer: SocketAddr,
    /// The class of service of a port-25 client.
    gate: Option<Gate>,
    /// The client's reverse-DNS result (iprev), found at connect on port 25.
    iprev: Option<AuthResult>,
    /// Header lines from label-only DNS lists about the client address,
    /// for every message of the connection.
    client_labels: Vec<String>,
    /// The HELO name's own SPF result, kept for later transactions.
    helo_spf: Option<(String, Option<SpfOutput>)>,
    /// "User unknown" answers given so far: each makes every further reply
    /// wait longer (a tarpit for address harvesters).
    unknown_users: u32,
    /// The authenticated account's session slot, while authenticated.
    account: Option<AccountSession>,
    /// The current transaction, from MAIL FROM to the end of its data.
    txn: Option<Txn>,
}

/// What the way in learns during one transaction (port 25): made at
/// MAIL FROM, consumed at the end of data, replaced by the next MAIL.
#[derive(Default)]
struct Txn {
    /// MAIL FROM's address (None for `<>`).
    sender: Option<String>,
    spf: Option<SpfCheck>,
    /// `X-DNSBL:` lines about the sender's domains.
    labels: Vec<String>,
}

impl Connection {
    pub fn new(
        inbound: Arc<Inbound>,
        config: Arc<Config>,
        id: String,
        role: ListenerRole,
        peer: SocketAddr,
        gate: Option<Gate>,
    ) -> Connection {
        Connection {
            inbound,
            config,
            id,
            role,
            peer,
            gate,
            iprev: None,
            client_labels: Vec::new(),
            helo_spf: None,
            unknown_users: 0,
            account: None,
            txn: None,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// How long every reply waits: the tarpit after "user unknown".
    pub fn reply_delay(&self) -> Duration {
        tarpit_delay(&self.config.limits, self.unknown_users)
    }
}

/// The slides' tarpit: each "user unknown" adds a step, up to a cap.
pub(crate) fn tarpit_delay(l: &portcullis_config::Limits, unknown: u32) -> Duration {
    let ms = l
        .tarpit_step_ms
        .saturating_mul(u64::from(unknown))
        .min(l.tarpit_max_ms);
    Duration::from_millis(ms)
}

#[cfg(any(test, feature = "fakes"))]
pub mod fakes;
#[cfg(test)]
mod tests;
