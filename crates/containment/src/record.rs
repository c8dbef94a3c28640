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

/// An account as read back at one moment (`at`): each counter's sum
/// over its window, the usual hour from the history (its 99th
/// percentile), the networks and distinct recipients of the last hour,
/// sample queue ids, and the containment in force. A summary, so
/// reading it costs the same whatever the account's history.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub at: u64,
    pub sums: BTreeMap<String, u64>,
    /// The 99th percentile of the history's messages and recipients per
    /// hour (0 for an account with no past).
    pub usual_messages: u64,
    pub usual_recipients: u64,
    pub networks: Vec<String>,
    pub distinct_recipients: u64,
    pub samples: Vec<String>,
    pub contained: Option<Contained>,
}

impl Tally {
    /// Summarise counter buckets `(counter, bucket, count)` at `now`.
    pub fn summarise(
        buckets: impl IntoIterator<Item = (Counter, u64, u64)>,
        now: u64,
        history_days: u32,
    ) -> Tally {
        let mut sums = BTreeMap::new();
        let this_hour = now / 3600;
        let first_hour = this_hour.saturating_sub(u64::from(history_days) * 24);
        let mut hours: [BTreeMap<u64, u64>; 2] = Default::default();
        for (counter, bucket, n) in buckets {
            match counter {
                Counter::HistoryMessages | Counter::HistoryRecipients => {
                    if bucket >= first_hour && bucket < this_hour {
                        let i = usize::from(counter == Counter::HistoryRecipients);
                        *hours[i].entry(bucket).or_default() += n;
                    }
                }
                _ => {
                    let width = counter.bucket_secs();
                    let first = now.saturating_sub(counter.window_secs(history_days)) / width;
                    if bucket > first && bucket <= now / width {
                        *sums.entry(counter.name().to_owned()).or_default() += n;
                    }
                }
            }
        }
        // Every completed hour since the account's first, quiet ones too.
        let usual = |h: &BTreeMap<u64, u64>| {
            let Some(first) = h.keys().next().copied() else {
                return 0;
            };
            let all: Vec<u64> = (first..this_hour)
                .map(|b| h.get(&b).copied().unwrap_or(0))
                .collect();
            crate::assess::p99(&all)
        };
        Tally {
            at: now,
            sums,
            usual_messages: usual(&hours[0]),
            usual_recipients: usual(&hours[1]),
            ..Tally::default()
        }
    }

    /// The counter's sum over its window.
    pub fn sum(&self, counter: Counter) -> u64 {
        self.sums.get(counter.name()).copied().unwrap_or(0)
    }
}

/// `NAME:BUCKET` back to its counter and bucket.
pub fn parse_field(field: &str) -> Option<(Counter, u64)> {
    let (name, bucket) = field.split_once(':')?;
    Some((Counter::from_name(name)?, bucket.parse().ok()?))
}

/// The embedded backend's account: the same facts as Redis keeps, in
/// memory (and in the state snapshot).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Record {
    /// `NAME:BUCKET` to count, as Redis keeps them.
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

    pub fn tally(&self, now: u64, history_days: u32) -> Tally {
        let hour_ago = now.saturating_sub(3600);
        let buckets = self
            .counts
            .iter()
            .filter_map(|(f, n)| parse_field(f).map(|(c, b)| (c, b, *n)));
        Tally {
            networks: self
                .networks
                .iter()
                .filter(|(_, at)| **at > hour_ago)
                .map(|(n, _)| n.clone())
                .collect(),
            distinct_recipients: self
                .recipients
                .values()
                .filter(|at| **at > hour_ago)
                .count() as u64,
            samples: self.samples.iter().cloned().collect(),
            contained: self.contained.clone(),
            ..Tally::summarise(buckets, now, history_days)
        }
    }
}

/// Whether a counter field (`NAME:BUCKET`) lies wholly outside its window.
pub fn expired(field: &str, now: u64, history_days: u32) -> bool {
    let Some((counter, bucket)) = parse_field(field) else {
        return true;
    };
    let first = now.saturating_sub(counter.window_secs(history_days)) / counter.bucket_secs();
    bucket <= first
}
