//! The state admission decides on, held in memory: rate buckets, the
//! temporal blocklist, known senders, domain ranges and reputations. It
//! is the whole state of the embedded backend (snapshotted to disk by the
//! server so it survives a restart), and the local fallback of the Redis
//! backend when Redis cannot be reached.

use crate::identity::longest_match;
use crate::{Charge, LevelChange, Reputation, Verdict, gcra};
use portcullis_config::{Cidr, ReputationRules};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockEntry {
    /// Seconds since the epoch when the block ends.
    pub until: u64,
    pub reason: String,
}

/// What is known about a client address before the greeting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lookup {
    pub blocked: Option<(Cidr, BlockEntry)>,
    /// The known-sender name of the most specific listed range.
    pub known: Option<String>,
    /// Domains that authenticated mail from the client's range.
    pub domains: Vec<String>,
    /// "User unknown" answers the range caused lately: the slides' "taking
    /// a longer time to accept the next connection from the client".
    pub unknown_users: u32,
}

/// What a client's range earned on its own: the domains that vouch for
/// it and its recent "user unknown" answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeFacts {
    pub domains: Vec<String>,
    pub unknown_users: u32,
}

/// A change asked for by an operator (the CLI), applied by whichever
/// process owns the state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum StateCommand {
    Block {
        range: Cidr,
        secs: u64,
        reason: String,
    },
    Unblock {
        range: Cidr,
    },
    KnownAdd {
        range: Cidr,
        name: String,
    },
    KnownDel {
        range: Cidr,
    },
    Report {
        identity: String,
        verdict: String,
    },
}

/// How long a range's "user unknown" answers slow its next connections.
pub const UNKNOWN_USER_MEMORY_SECS: u64 = 600;

/// How long a domain's range is remembered after its last authenticated
/// message.
pub const DOMAIN_RANGE_TTL_SECS: u64 = 30 * 24 * 3600;

/// How long a range is remembered after a client in it last logged in
/// (SMTP AUTH): as long as a domain range, so a user who submits mail
/// monthly keeps their provider's prefix out of escalation.
pub const AUTHENTICATED_RANGE_TTL_SECS: u64 = DOMAIN_RANGE_TTL_SECS;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EmbeddedState {
    buckets: HashMap<String, u64>,
    blocklist: HashMap<Cidr, BlockEntry>,
    known: HashMap<Cidr, String>,
    domain_ranges: HashMap<Cidr, BTreeMap<String, u64>>,
    reputations: BTreeMap<String, Reputation>,
    /// Per range: "user unknown" answers, and until when they count.
    #[serde(default)]
    unknown_users: HashMap<Cidr, (u32, u64)>,
    /// Greylisting triplets (issue 21); older snapshots have none.
    #[serde(default)]
    greylist: HashMap<String, crate::Triplet>,
    /// Ranges whose clients logged in (SMTP AUTH), and when last; older
    /// snapshots have none.
    #[serde(default)]
    authenticated: HashMap<Cidr, u64>,
    #[serde(skip)]
    dirty: bool,
}

impl EmbeddedState {
    /// Blocklist, known senders and domain ranges for a client. `now` in
    /// seconds since the epoch.
    pub fn lookup(&self, ip: IpAddr, range: Cidr, now: u64) -> Lookup {
        let (blocked, known) = self.listed(ip, now);
        let RangeFacts {
            domains,
            unknown_users,
        } = self.range_facts(range, now);
        Lookup {
            blocked,
            known,
            domains,
            unknown_users,
        }
    }

    /// What the operator's lists say of an address: the block that holds
    /// it, and the known-sender name of the most specific listed range.
    /// These are the lists every node mirrors (issue 18), so this answer
    /// needs no round trip.
    pub fn listed(&self, ip: IpAddr, now: u64) -> (Option<(Cidr, BlockEntry)>, Option<String>) {
        let ranges = if self.blocklist.is_empty() {
            Vec::new()
        } else {
            Cidr::all_enclosing(ip)
        };
        let blocked = ranges.into_iter().find_map(|c| {
            self.blocklist
                .get(&c)
                .filter(|e| e.until > now)
                .map(|e| (c, e.clone()))
        });
        let known = longest_match(&self.known, ip).map(|(_, n)| n.clone());
        (blocked, known)
    }

    /// What the range itself earned: its vouching domains and its recent
    /// "user unknown" answers.
    pub fn range_facts(&self, range: Cidr, now: u64) -> RangeFacts {
        RangeFacts {
            unknown_users: self
                .unknown_users
                .get(&range)
                .filter(|(_, until)| *until > now)
                .map_or(0, |(n, _)| *n),
            domains: self
                .domain_ranges
                .get(&range)
                .map(|d| {
                    d.iter()
                        .filter(|(_, seen)| **seen + DOMAIN_RANGE_TTL_SECS > now)
                        .map(|(d, _)| d.clone())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Take the operator's lists as another holder of them has them (a
    /// node mirroring Redis). Whether the blocklist changed.
    pub fn replace_lists(
        &mut self,
        blocklist: HashMap<Cidr, BlockEntry>,
        known: HashMap<Cidr, String>,
    ) -> bool {
        let changed = self.blocklist != blocklist;
        self.blocklist = blocklist;
        self.known = known;
        changed
    }

    /// Draw from every bucket or from none. Err: the index of the first
    /// bucket that is full and the microseconds until it would fit.
    pub fn charge(&mut self, charges: &[Charge], now_us: u64) -> Result<(), (usize, u64)> {
        let mut new = Vec::with_capacity(charges.len());
        for (i, c) in charges.iter().enumerate() {
            let tat = self.buckets.get(&c.key).copied().unwrap_or(0);
            new.push(gcra::charge(tat, now_us, c.per_minute, c.cost).map_err(|r| (i, r))?);
        }
        for (c, tat) in charges.iter().zip(new) {
            self.buckets.insert(c.key.clone(), tat);
        }
        Ok(())
    }

    pub fn reputation(&self, key: &str) -> Option<&Reputation> {
        self.reputations.get(key)
    }

    pub fn reputations(&self) -> impl Iterator<Item = (&String, &Reputation)> {
        self.reputations.iter()
    }

    /// Count a message and/or a verdict for an identity; the level change
    /// it earned, if any.
    pub fn record(
        &mut self,
        key: &str,
        verdict: Option<Verdict>,
        counts_message: bool,
        rules: &ReputationRules,
        now: u64,
    ) -> (Reputation, Option<LevelChange>) {
        let rep = self.reputations.entry(key.to_owned()).or_default();
        let change = rep.update(verdict, counts_message, rules, now);
        self.dirty = true;
        (rep.clone(), change)
    }

    pub fn remember_range(&mut self, range: Cidr, domain: &str, now: u64) {
        let seen = self.domain_ranges.entry(range).or_default();
        if seen.insert(domain.to_owned(), now).is_none() {
            self.dirty = true;
        }
    }

    pub fn domain_ranges(&self) -> impl Iterator<Item = (&Cidr, &BTreeMap<String, u64>)> {
        self.domain_ranges.iter()
    }

    pub fn blocklist(&self, now: u64) -> Vec<(Cidr, BlockEntry)> {
        let mut v: Vec<_> = self
            .blocklist
            .iter()
            .filter(|(_, e)| e.until > now)
            .map(|(c, e)| (*c, e.clone()))
            .collect();
        v.sort_by_key(|(c, _)| c.to_string());
        v
    }

    /// A client in `range` logged in (SMTP AUTH) at `now`.
    pub fn remember_authenticated(&mut self, range: Cidr, now: u64) {
        // Into the snapshot when new, and then at most daily.
        let before = self.authenticated.insert(range, now);
        if before.is_none_or(|at| at + 24 * 3600 <= now) {
            self.dirty = true;
        }
    }

    /// Why escalation must leave `prefix` alone, if it must: a
    /// known-sender range, a domain range (one that delivered mail
    /// authenticated for a domain) or a range whose client logged in
    /// lately lies inside it, or holds it. Checked in that order.
    pub fn exemption_within(&self, prefix: &Cidr, now: u64) -> Option<crate::Exemption> {
        let near = |c: &Cidr| prefix.covers(c) || c.covers(prefix);
        if self.known.keys().any(near) {
            Some(crate::Exemption::Known)
        } else if self.domain_ranges.keys().any(near) {
            Some(crate::Exemption::Domain)
        } else if self
            .authenticated
            .iter()
            .any(|(c, at)| near(c) && at + AUTHENTICATED_RANGE_TTL_SECS > now)
        {
            Some(crate::Exemption::Authenticated)
        } else {
            None
        }
    }

    pub fn known(&self) -> Vec<(Cidr, String)> {
        let mut v: Vec<_> = self.known.iter().map(|(c, n)| (*c, n.clone())).collect();
        v.sort_by_key(|(c, _)| c.to_string());
        v
    }

    /// Apply an operator's change; `Err` says why it makes no sense.
    pub fn apply(
        &mut self,
        cmd: &StateCommand,
        rules: &ReputationRules,
        now: u64,
    ) -> Result<(), String> {
        self.dirty = true;
        match cmd {
            StateCommand::Block {
                range,
                secs,
                reason,
            } => {
                let entry = BlockEntry {
                    until: now + secs,
                    reason: reason.clone(),
                };
                self.blocklist.insert(*range, entry);
            }
            StateCommand::Unblock { range } => {
                self.blocklist
                    .remove(range)
                    .ok_or(format!("{range} is not on the blocklist"))?;
            }
            StateCommand::KnownAdd { range, name } => {
                self.known.insert(*range, name.clone());
            }
            StateCommand::KnownDel { range } => {
                self.known
                    .remove(range)
                    .ok_or(format!("{range} is not a known sender"))?;
            }
            StateCommand::Report { identity, verdict } => {
                let v = Verdict::parse(verdict)
                    .ok_or(format!("verdict {verdict:?} is not ham or spam"))?;
                let key = crate::Identity::parse(identity).key();
                self.record(&key, Some(v), false, rules, now);
            }
        }
        Ok(())
    }

    /// Forget what no longer matters: drained buckets, ended blocks, old
    /// domain ranges. This is what keeps memory proportional to active
    /// identities and ranges, not to every address ever seen.
    /// Whether a greylisting triplet passes now, remembering what it must.
    pub fn greylist(&mut self, key: &str, rules: &crate::GreylistRules, now: u64) -> crate::Greyed {
        let (answer, keep) = rules.decide(self.greylist.get(key).copied(), now);
        self.greylist.insert(key.to_owned(), keep);
        self.dirty = true;
        answer
    }

    /// Count a "user unknown" answer against a range.
    pub fn penalize(&mut self, range: Cidr, now: u64) {
        let e = self.unknown_users.entry(range).or_insert((0, 0));
        if e.1 <= now {
            e.0 = 0;
        }
        e.0 = e.0.saturating_add(1);
        e.1 = now + UNKNOWN_USER_MEMORY_SECS;
    }

    pub fn sweep(&mut self, now_us: u64) {
        let now = now_us / 1_000_000;
        self.unknown_users.retain(|_, (_, until)| *until > now);
        self.greylist.retain(|_, t| t.until > now);
        let before = (self.buckets.len(), self.blocklist.len());
        self.buckets.retain(|_, tat| *tat > now_us);
        self.blocklist.retain(|_, e| e.until > now);
        self.domain_ranges.retain(|_, d| {
            d.retain(|_, seen| *seen + DOMAIN_RANGE_TTL_SECS > now);
            !d.is_empty()
        });
        self.authenticated
            .retain(|_, at| *at + AUTHENTICATED_RANGE_TTL_SECS > now);
        if before != (self.buckets.len(), self.blocklist.len()) {
            self.dirty = true;
        }
    }

    /// Whether anything worth a snapshot changed since the last call.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Counts for metrics and the memory benchmark.
    pub fn sizes(&self) -> [(&'static str, usize); 5] {
        [
            ("buckets", self.buckets.len()),
            ("blocklist", self.blocklist.len()),
            ("known_senders", self.known.len()),
            ("domain_ranges", self.domain_ranges.len()),
            ("reputations", self.reputations.len()),
        ]
    }
}
