//! What is kept of an account: counters in time buckets, the networks
//! and recipients seen with when, a few sample queue ids, and the
//! containment in force. [`Change`] is the one vocabulary both backends
//! apply (the embedded [`Record`] here, Redis in `portcullis-state`: a
//! hash increment, a sorted-set add, a capped list push); [`Tally`] is
//! what both read back for [`crate::assess`].

use crate::assess::Contained;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// A counter: what is counted, and the bucket width that gives its
/// sliding window (minutes for an hour's window, hours for a day's or
/// the history's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Counter {
    /// Local 550 5.1.1 at RCPT.
    UnknownLocal,
    /// Remote 5.1.x answers for the account's messages.
    UnknownRemote,
    /// Remote recipients accepted by the next hop.
    Delivered,
    /// Remote recipients refused for good (any 5.x.x).
    Bounced,
    /// Messages and recipients queued (the last hour).
    Messages,
    Recipients,
    /// Outbound spam verdicts, trap hits, ARF complaints (the last day).
    Strikes,
    Traps,
    Complaints,
    /// The history: messages and recipients per hour, `history_days`.
    HistoryMessages,
    HistoryRecipients,
}

pub const ALL_COUNTERS: [Counter; 11] = [
    Counter::UnknownLocal,
    Counter::UnknownRemote,
    Counter::Delivered,
    Counter::Bounced,
    Counter::Messages,
    Counter::Recipients,
    Counter::Strikes,
    Counter::Traps,
    Counter::Complaints,
    Counter::HistoryMessages,
    Counter::HistoryRecipients,
];

impl Counter {
    pub fn name(self) -> &'static str {
        match self {
            Counter::UnknownLocal => "ul",
            Counter::UnknownRemote => "ur",
            Counter::Delivered => "dl",
            Counter::Bounced => "bo",
            Counter::Messages => "ms",
            Counter::Recipients => "rc",
            Counter::Strikes => "st",
            Counter::Traps => "tr",
            Counter::Complaints => "co",
            Counter::HistoryMessages => "hm",
            Counter::HistoryRecipients => "hr",
        }
    }

    pub fn from_name(s: &str) -> Option<Counter> {
        ALL_COUNTERS.into_iter().find(|c| c.name() == s)
    }

    /// Seconds per bucket.
    pub fn bucket_secs(self) -> u64 {
        match self {
            Counter::UnknownLocal
            | Counter::UnknownRemote
            | Counter::Delivered
            | Counter::Bounced
            | Counter::Messages
            | Counter::Recipients => 60,
            _ => 3600,
        }
    }

    /// How far back the counter is read.
    pub fn window_secs(self, history_days: u32) -> u64 {
        match self {
            Counter::HistoryMessages | Counter::HistoryRecipients => {
                history_window_secs(history_days)
            }
            Counter::Strikes | Counter::Traps | Counter::Complaints => 24 * 3600,
            _ => 3600,
        }
    }

    /// The hash field of the bucket holding `now`: `NAME:BUCKET`.
    pub fn field(self, now: u64) -> String {
        format!("{}:{}", self.name(), now / self.bucket_secs())
    }
}

/// How far back the history reaches (its buckets are hours).
pub fn history_window_secs(history_days: u32) -> u64 {
    u64::from(history_days) * 24 * 3600
}

/// One thing to remember about an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Add `n` to the counter's bucket holding `at`.
    Count { counter: Counter, n: u64, at: u64 },
    /// A client network logged in at `at` (kept an hour).
    Network { network: String, at: u64 },
    /// A recipient was written to at `at` (kept an hour, counted distinct).
    Recipient { address: String, at: u64 },
    /// One of the account's queue ids, as evidence (the last few kept).
    Sample { queue_id: String },
}

/// Sample queue ids kept per account.
pub const SAMPLES: usize = 10;

/// An account as read back: the counters' buckets within their windows,
/// the networks of the last hour, the distinct recipients of the last
/// hour, sample queue ids, and the containment in force.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    /// Field (`NAME:BUCKET`) to count.
    pub counts: BTreeMap<String, u64>,
    /// Network to when it was last seen.
    pub networks: BTreeMap<String, u64>,
    pub distinct_recipients: u64,
    pub samples: Vec<String>,
    pub contained: Option<Contained>,
}

impl Tally {
    /// The counter's sum over its window ending at `now`.
    pub fn sum(&self, counter: Counter, now: u64, history_days: u32) -> u64 {
        let (name, width) = (counter.name(), counter.bucket_secs());
        let first = now.saturating_sub(counter.window_secs(history_days)) / width;
        let last = now / width;
        self.counts
            .range(format!("{name}:")..format!("{name};"))
            .filter_map(|(k, v)| {
                let b: u64 = k.split_once(':')?.1.parse().ok()?;
                (b > first && b <= last).then_some(*v)
            })
            .sum()
    }

    /// The history's hourly values, oldest first, for the completed
    /// hours since the account's first recorded hour (at most
    /// `history_days` of them); empty for an account with no past.
    pub fn history(&self, counter: Counter, now: u64, history_days: u32) -> Vec<u64> {
        let name = counter.name();
        let this_hour = now / 3600;
        let first_allowed = this_hour.saturating_sub(u64::from(history_days) * 24);
        let hours: BTreeMap<u64, u64> = self
            .counts
            .range(format!("{name}:")..format!("{name};"))
            .filter_map(|(k, v)| {
                let b: u64 = k.split_once(':')?.1.parse().ok()?;
                (b >= first_allowed && b < this_hour).then_some((b, *v))
            })
            .collect();
        let Some(first) = hours.keys().next().copied() else {
            return Vec::new();
        };
        (first..this_hour)
            .map(|h| hours.get(&h).copied().unwrap_or(0))
            .collect()
    }

    /// Networks seen in the hour before `now`.
    pub fn networks_within_hour(&self, now: u64) -> Vec<String> {
        let since = now.saturating_sub(3600);
        self.networks
            .iter()
            .filter(|(_, at)| **at > since)
            .map(|(n, _)| n.clone())
            .collect()
    }
}

/// The embedded backend's account: the same facts as Redis keeps, in
/// memory (and in the state snapshot).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Record {
    counts: BTreeMap<String, u64>,
    networks: BTreeMap<String, u64>,
    recipients: BTreeMap<String, u64>,
    samples: VecDeque<String>,
    #[serde(default)]
    pub contained: Option<Contained>,
}

impl Record {
    pub fn apply(&mut self, changes: &[Change]) {
        for c in changes {
            match c {
                Change::Count { counter, n, at } => {
                    *self.counts.entry(counter.field(*at)).or_default() += n;
                }
                Change::Network { network, at } => {
                    self.networks.insert(network.clone(), *at);
                }
                Change::Recipient { address, at } => {
                    self.recipients.insert(address.clone(), *at);
                }
                Change::Sample { queue_id } => {
                    self.samples.push_front(queue_id.clone());
                    self.samples.truncate(SAMPLES);
                }
            }
        }
    }

    /// Forget what no window reaches any more.
    pub fn prune(&mut self, now: u64, history_days: u32) {
        self.counts.retain(|k, _| !expired(k, now, history_days));
        let hour_ago = now.saturating_sub(3600);
        self.networks.retain(|_, at| *at > hour_ago);
        self.recipients.retain(|_, at| *at > hour_ago);
    }

    /// Nothing kept: no counts, no containment (the record can go).
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
            && self.networks.is_empty()
            && self.recipients.is_empty()
            && self.contained.is_none()
    }

    pub fn tally(&self, now: u64) -> Tally {
        let hour_ago = now.saturating_sub(3600);
        Tally {
            counts: self.counts.clone(),
            networks: self.networks.clone(),
            distinct_recipients: self
                .recipients
                .values()
                .filter(|at| **at > hour_ago)
                .count() as u64,
            samples: self.samples.iter().cloned().collect(),
            contained: self.contained.clone(),
        }
    }
}

/// Whether a counter field (`NAME:BUCKET`) lies wholly outside its window.
pub fn expired(field: &str, now: u64, history_days: u32) -> bool {
    let Some((name, bucket)) = field.split_once(':') else {
        return true;
    };
    let (Some(counter), Ok(bucket)) = (Counter::from_name(name), bucket.parse::<u64>()) else {
        return true;
    };
    let first = now.saturating_sub(counter.window_secs(history_days)) / counter.bucket_secs();
    bucket <= first
}
