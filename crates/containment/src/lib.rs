//! Containment of compromised accounts (the way out's accountability,
//! draft-hutzler-spamops §4): per-account abuse signals over sliding
//! windows, and the decision to throttle or hold the account. A stolen
//! password used by a bot shows in what the account does (unknown
//! recipients, bounces, spam verdicts, traps, complaints, logins from
//! many networks, volume beyond its own history) long before a quota
//! runs out; this crate turns those facts into a decision.
//!
//! Decisions only: no socket, no file, no clock (`now` is passed in, in
//! seconds). The facts are kept by `portcullis-state` (embedded or in
//! Redis, so every node sees one account) as the [`Change`]s this crate
//! names, and read back as a [`Tally`]; [`assess`] says what they mean.
//! It must never bounce or drop mail: its strongest answer is
//! [`Action::Hold`], which the queue turns into held messages.

mod alert;
mod assess;
pub mod observe;
mod record;

pub use alert::{ALERT_TRIES, Alert, SIGNATURE_HEADER, retry_delay, sign};
pub use assess::{Action, Assessment, Contained, Finding, Signal, assess, refusal_text};
pub use record::{
    ALL_COUNTERS, Change, Counter, Record, SAMPLES, Tally, expired, history_window_secs,
    parse_field,
};

use portcullis_config::Cidr;
use std::net::IpAddr;

/// The network a login came from, as the spread signal counts it: the
/// client's /64 (IPv6) or /24 (IPv4).
pub fn client_network(ip: IpAddr) -> Cidr {
    Cidr::enclosing(ip, 24, 64)
}

/// Whether `address` is one of the operator's spam traps (an address,
/// or `@domain` for a whole domain), compared without case.
pub fn is_spam_trap(traps: &[String], address: &str) -> bool {
    let address = address.to_ascii_lowercase();
    traps.iter().any(|t| {
        let t = t.to_ascii_lowercase();
        match t.strip_prefix('@') {
            Some(domain) => address.rsplit_once('@').is_some_and(|(_, d)| d == domain),
            None => t == address,
        }
    })
}

/// Whether a remote answer's enhanced status says the recipient does
/// not exist (RFC 3463 5.1.x: bad mailbox, bad system, bad syntax...).
pub fn is_unknown_recipient(status: (u8, u16, u16)) -> bool {
    status.0 == 5 && status.1 == 1
}

#[cfg(test)]
mod tests;
