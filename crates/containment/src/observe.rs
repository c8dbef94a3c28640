//! What each event on the message's path adds to the account's record:
//! the way in calls these and hands the changes to the state store.

use crate::record::{Change, Counter};
use std::net::IpAddr;

fn count(counter: Counter, n: u64, at: u64) -> Change {
    Change::Count { counter, n, at }
}

/// The account logged in from `ip`.
pub fn login(ip: IpAddr, now: u64) -> Vec<Change> {
    vec![Change::Network {
        network: crate::client_network(ip).to_string(),
        at: now,
    }]
}

/// RCPT named a local recipient that does not exist (550 5.1.1).
pub fn unknown_recipient(now: u64) -> Vec<Change> {
    vec![count(Counter::UnknownLocal, 1, now)]
}

/// RCPT named one of the operator's spam traps.
pub fn trap_hit(now: u64) -> Vec<Change> {
    vec![count(Counter::Traps, 1, now)]
}

/// A message was queued for `recipients`.
pub fn queued(queue_id: &str, recipients: &[String], now: u64) -> Vec<Change> {
    let n = recipients.len() as u64;
    let mut out = vec![
        count(Counter::Messages, 1, now),
        count(Counter::Recipients, n, now),
        count(Counter::HistoryMessages, 1, now),
        count(Counter::HistoryRecipients, n, now),
        Change::Sample {
            queue_id: queue_id.to_owned(),
        },
    ];
    out.extend(recipients.iter().map(|r| Change::Recipient {
        address: r.to_ascii_lowercase(),
        at: now,
    }));
    out
}

/// A remote next hop's answer for one recipient of the account's
/// message: delivered, or refused for good with this enhanced status
/// (a temporary failure says nothing yet).
pub fn outcome(permanent: Option<(u8, u16, u16)>, now: u64) -> Vec<Change> {
    match permanent {
        None => vec![count(Counter::Delivered, 1, now)],
        Some(status) => {
            let mut out = vec![count(Counter::Bounced, 1, now)];
            if crate::is_unknown_recipient(status) {
                out.push(count(Counter::UnknownRemote, 1, now));
            }
            out
        }
    }
}

/// The outbound spam scan called the message spam.
pub fn spam_strike(queue_id: &str, now: u64) -> Vec<Change> {
    vec![
        count(Counter::Strikes, 1, now),
        Change::Sample {
            queue_id: queue_id.to_owned(),
        },
    ]
}

/// An ARF complaint named one of the account's messages.
pub fn complaint(now: u64) -> Vec<Change> {
    vec![count(Counter::Complaints, 1, now)]
}
