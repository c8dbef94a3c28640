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
//! `&mut self`. Per-transaction state is one value, [`Txn`], made when
//! MAIL FROM is accepted and carried by the session's own transaction
//! ([`Transaction`]) to the end of data: there is no second copy to keep
//! in step. Every stage answers with one [`StageResult`]: go on (with the
//! header lines and folder it adds), or the reply that refuses or defers
//! (its enhanced status code included), which the driver hands to the
//! session unchanged. The services the stages consult are [`Inbound`]'s;
//! DNS and the queue are reached through the [`Checks`] and [`Intake`]
//! traits.
//!
//! This crate owns no socket and never writes the spool itself; the
//! driver in `portcullis-server` feeds it and writes its answers.

mod auth;
mod checks;
mod class_of_service;
mod cleanup;
mod connect;
pub mod containment;
mod data;
mod dnslists;
pub mod forwarding;
mod mail;
mod milter;
mod outcome;
mod rcpt;
mod reloading;
mod rspamd;
mod services;
mod submission;
pub mod trace;

pub use class_of_service::{ClassOfService, Gate, Refusal, RefusalCause, RefusalLog};
pub use containment::{AccountView, Containment, OutcomeListener};
pub use forwarding::Forwarding;
pub use outcome::{Accept, StageResult};
pub use portcullis_milter::Milters;
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
    /// Compromised accounts: signals, throttles, holds (issue 29).
    pub containment: Arc<Containment>,
    /// The configured milters (`[[milter]]`), with their connection bounds.
    pub milters: Arc<portcullis_milter::Milters>,
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
    /// What the label-only DNS lists about the client address add to
    /// every message of the connection.
    client_labels: Accept,
    /// The HELO name's own SPF result, kept for later transactions.
    helo_spf: Option<(String, Option<SpfOutput>)>,
    /// "User unknown" answers given so far: each makes every further reply
    /// wait longer (a tarpit for address harvesters).
    unknown_users: u32,
    /// The authenticated account's session slot, while authenticated.
    account: Option<AccountSession>,
    /// The account was put on hold during this connection: every
    /// further RCPT is deferred, and what is queued is held.
    held: bool,
    /// The SASL mechanism of the last AUTH, for the milters.
    auth_mechanism: &'static str,
    /// The client's confirmed reverse name (port 25), for the milters.
    ptr: Option<String>,
    /// The milters' side of this connection, from its first MAIL FROM.
    milter: Option<portcullis_milter::Session>,
}

/// What the way in learns at MAIL FROM (port 25) for the end of data.
/// The accepted MAIL FROM hands it to the session, whose transaction
/// carries it ([`Transaction`]): it lives and dies with that transaction
/// (RSET, a refused chunk) and comes back with the message.
#[derive(Clone, Debug, Default)]
pub struct Txn {
    spf: Option<SpfCheck>,
    /// What the sender's domain lists add (`X-DNSBL:` lines).
    sender_labels: Accept,
}

/// The session's transaction with the way in's [`Txn`] in it: the one
/// transaction value, from MAIL FROM to the end of data.
pub type Transaction = portcullis_smtp::Transaction<Txn>;

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
            client_labels: Accept::default(),
            helo_spf: None,
            unknown_users: 0,
            account: None,
            held: false,
            auth_mechanism: "",
            ptr: None,
            milter: None,
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
