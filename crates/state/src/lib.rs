//! Where admission and submission state lives: in this process (`backend = "embedded"`,
//! snapshotted to `DATA/state/embedded.json` so it survives a restart) or
//! in Redis (`backend = "redis"`, shared by every node in real time, as
//! the paper asks of the blocklist and the domain ranges). When Redis
//! cannot be reached the node keeps deciding on its local state, says so
//! once in the log and counts it in `/metrics`, and goes back to Redis as
//! soon as it answers again.
//!
//! The arithmetic is the admission crate's: the Redis side runs the same
//! GCRA in one Lua script per decision, and reputation level changes are
//! decided by the same `Reputation::decide`.
//!
//! One type, [`Store`], answers every question; the rule "ask Redis, and
//! when it does not answer decide on local state" is written once, in
//! `Store::decide`.
//!
//! With Redis, a stranger's connect costs one round trip (issue 18): the
//! operator's lists are mirrored in memory (`redis::mirror`), and the
//! range's facts, leases and charges are one script (`Store::admit`).

mod changes;
mod containment;
mod decision;
mod housekeeping;
mod lease;
mod redis;
mod scripts;
mod sites;
mod snapshot;
mod suppression;

pub use decision::{Admitted, Claim, Outcome, Slot, SlotClaim};
pub use housekeeping::maintain;
pub use lease::Lease;
pub use snapshot::{load_snapshot, snapshot_path, write_atomically};

pub use crate::redis::AuthCounts;
use crate::redis::{Asked, RedisBackend, SharedOutcome};
use portcullis_accounts::{QuotaExceeded, QuotaLimits};
use portcullis_admission::{
    BlockEntry, Charge, Concurrency, EmbeddedState, Exemption, LevelChange, Reputation,
    StateCommand, Verdict,
};
use portcullis_config::clock::{now_secs, now_us};
use portcullis_config::{Cidr, Config, ReputationRules, StateBackend};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What the operator's lists say of an address.
#[derive(Clone, Debug, Default)]
pub struct Listed {
    pub blocked: Option<(Cidr, BlockEntry)>,
    /// The known-sender name of the most specific listed range.
    pub known: Option<String>,
}

/// How a node takes part in ending a report period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeriodRole {
    /// No shared state: the node reports what it saw.
    Alone,
    /// This node claimed the period: it merges every node's and sends.
    Sender,
    /// Another node claimed it; this node's rows went to it.
    Contributor,
}

/// Admission and submission state, embedded or in Redis. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    local: Arc<Mutex<EmbeddedState>>,
    redis: Option<Arc<RedisBackend>>,
    /// Concurrency on this node: the limit itself without Redis (or while
    /// it is down), a census beside the leases with it.
    concurrency: Concurrency,
    rules: ReputationRules,
    /// Embedded backend only: where the snapshot goes.
    snapshot: Option<PathBuf>,
    /// Bumped whenever the blocklist changes, here or (with Redis) on any
    /// node: what mirrors of it (the kernel's set) wait on.
    changes: Arc<tokio::sync::watch::Sender<u64>>,
    /// Containment facts kept in this process (issue 29).
    accounts: Arc<containment::Accounts>,
    /// The suppression list: the embedded backend's own, and the answer
    /// while Redis does not give one.
    suppression: suppression::LocalList,
}

impl Store {
    /// The state the config names. For the embedded backend, the last
    /// snapshot is loaded.
    pub fn open(config: &Config) -> anyhow::Result<Store> {
        let (local, snapshot) = match config.state_backend {
            StateBackend::Embedded => {
                let path = snapshot_path(&config.data_dir);
                (load_snapshot(&path)?, Some(path))
            }
            StateBackend::Redis => (EmbeddedState::default(), None),
        };
        let accounts = containment::Accounts::load(match config.state_backend {
            StateBackend::Embedded => Some(containment::containment_path(&config.data_dir)),
            StateBackend::Redis => None,
        })?;
        let redis = match (&config.state_backend, &config.redis) {
            (StateBackend::Redis, Some(settings)) => {
                let node = format!("{}-{}-{}", config.hostname, std::process::id(), now_us());
                Some(Arc::new(RedisBackend::new(settings, node)?))
            }
            _ => None,
        };
        let suppression = match snapshot {
            Some(_) => suppression::LocalList::load(suppression::list_path(&config.data_dir))?,
            None => suppression::LocalList::default(),
        };
        Ok(Store {
            local: Arc::new(Mutex::new(local)),
            redis,
            concurrency: Concurrency::default(),
            rules: config.reputation.clone(),
            snapshot,
            changes: Arc::default(),
            accounts,
            suppression,
        })
    }

    /// A store in memory only: no snapshot, no Redis (tests, and tools
    /// that need the arithmetic without a data directory).
    pub fn in_memory(rules: ReputationRules) -> Store {
        Store {
            local: Arc::default(),
            redis: None,
            concurrency: Concurrency::default(),
            rules,
            snapshot: None,
            changes: Arc::default(),
            accounts: Arc::default(),
            suppression: suppression::LocalList::default(),
        }
    }

    fn local(&self) -> std::sync::MutexGuard<'_, EmbeddedState> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The one rule of this crate: ask Redis when there is one, and when it
    /// does not answer (None), decide on this node's state instead.
    async fn decide<T, F, Fut>(&self, shared: F, local: impl FnOnce(&mut EmbeddedState) -> T) -> T
    where
        F: FnOnce(Arc<RedisBackend>) -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        if let Some(r) = &self.redis
            && let Some(v) = shared(r.clone()).await
        {
            return v;
        }
        local(&mut self.local())
    }

    pub fn backend_name(&self) -> &'static str {
        if self.redis.is_some() {
            "redis"
        } else {
            "embedded"
        }
    }

    /// Whether Redis answers (None when it is not used), for `/metrics`.
    pub fn redis_up(&self) -> Option<bool> {
        self.redis.as_ref().map(|r| r.is_up())
    }

    /// Nodes whose heartbeat was fresh at this node's last beat (None
    /// without Redis), for `/metrics`.
    pub fn live_nodes(&self) -> Option<u64> {
        self.redis.as_ref().map(|r| r.live_nodes())
    }

    pub fn redis_errors(&self) -> u64 {
        self.redis.as_ref().map_or(0, |r| r.errors())
    }

    pub fn sizes(&self) -> [(&'static str, usize); 5] {
        self.local().sizes()
    }

    /// At connect, before anything else: the blocklist and the known
    /// senders, from memory (with Redis, a mirror every node keeps).
    pub fn listed(&self, ip: IpAddr) -> Listed {
        let (blocked, known) = self.local().listed(ip, now_secs());
        Listed { blocked, known }
    }

    /// The connect decision: the range's facts and the claim's slots and
    /// charges, all or none; one round trip to Redis (see `redis::admit`
    /// for a Redis Cluster). With `stop_if_vouched`, a range that domains
    /// vouch for takes nothing and answers `Outcome::Vouched`.
    pub async fn admit(&self, range: Cidr, claim: &Claim, stop_if_vouched: bool) -> Admitted {
        if let Some(r) = &self.redis {
            let asked = Asked {
                range,
                stop_if_vouched,
            };
            if let Some((facts, shared)) =
                RedisBackend::admit(r, Some(asked), &claim.slots, &claim.charges).await
            {
                let outcome = self.with_census(&claim.slots, shared);
                return Admitted { facts, outcome };
            }
        }
        self.admit_locally(range, claim, stop_if_vouched)
    }

    fn with_census(&self, slots: &[SlotClaim], shared: SharedOutcome) -> Outcome {
        match shared {
            SharedOutcome::Vouched => Outcome::Vouched,
            SharedOutcome::SlotFull(i) => Outcome::SlotFull(i),
            SharedOutcome::BucketFull(i, retry) => Outcome::BucketFull(i, retry),
            SharedOutcome::Granted(leases) => {
                let mut leases = leases.into_iter();
                let slots = slots
                    .iter()
                    .map(|s| Slot {
                        _local: self.concurrency.count(&s.budget),
                        _shared: if s.max > 0 { leases.next() } else { None },
                    })
                    .collect();
                Outcome::Granted(slots)
            }
        }
    }

    fn admit_locally(&self, range: Cidr, claim: &Claim, stop_if_vouched: bool) -> Admitted {
        let facts = self.local().range_facts(range, now_secs());
        let outcome = if stop_if_vouched && !facts.domains.is_empty() {
            Outcome::Vouched
        } else {
            self.claim_locally(claim)
        };
        Admitted { facts, outcome }
    }

    fn claim_locally(&self, claim: &Claim) -> Outcome {
        let mut slots = Vec::with_capacity(claim.slots.len());
        for (i, s) in claim.slots.iter().enumerate() {
            match self.concurrency.try_acquire(&s.budget, s.max) {
                Some(l) => slots.push(Slot {
                    _local: l,
                    _shared: None,
                }),
                None => return Outcome::SlotFull(i),
            }
        }
        match self.local().charge(&claim.charges, now_us()) {
            Ok(()) => Outcome::Granted(slots),
            Err((i, retry)) => Outcome::BucketFull(i, retry),
        }
    }

    /// One concurrency slot under `budget` if fewer than `max` are held
    /// (0: no limit), counted by every node with Redis: None when full.
    pub async fn slot(&self, budget: &str, max: u32) -> Option<Slot> {
        let claim = Claim {
            slots: vec![SlotClaim {
                budget: budget.to_owned(),
                max,
            }],
            charges: Vec::new(),
        };
        let outcome = match &self.redis {
            Some(r) if max > 0 => match RedisBackend::admit(r, None, &claim.slots, &[]).await {
                Some((_, shared)) => self.with_census(&claim.slots, shared),
                None => self.claim_locally(&claim),
            },
            _ => self.claim_locally(&claim),
        };
        match outcome {
            Outcome::Granted(mut slots) => slots.pop(),
            _ => None,
        }
    }

    /// How many slots this node holds under `budget` (the dashboard).
    pub fn held(&self, budget: &str) -> u32 {
        self.concurrency.held(budget)
    }

    /// Draw from every bucket or none: Err is (index, µs until it fits).
    /// With Redis this is the connect decision's script without slots.
    pub async fn charge(&self, charges: &[Charge]) -> Result<(), (usize, u64)> {
        if charges.is_empty() {
            return Ok(());
        }
        if let Some(r) = &self.redis
            && let Some((_, shared)) = RedisBackend::admit(r, None, &[], charges).await
        {
            return match shared {
                SharedOutcome::BucketFull(i, retry) => Err((i, retry)),
                _ => Ok(()),
            };
        }
        self.local().charge(charges, now_us())
    }

    /// Take `n` from a submission quota shared through Redis. None when
    /// there is no Redis or it did not answer: the caller counts locally.
    pub async fn take_quota(
        &self,
        key: &str,
        limits: QuotaLimits,
        n: u32,
        now: u64,
    ) -> Option<Result<(), QuotaExceeded>> {
        self.redis.as_ref()?.take_quota(key, limits, n, now).await
    }

    /// The cluster's AUTH failures for this attempt; None without Redis.
    pub async fn auth_counts(&self, ip: IpAddr, account: &str) -> Option<AuthCounts> {
        self.redis.as_ref()?.auth_counts(ip, account).await
    }

    /// Record a failed or successful login for every node to see.
    pub async fn auth_outcome(
        &self,
        ip: IpAddr,
        account: &str,
        ok: bool,
        throttle: &portcullis_accounts::ThrottleConfig,
    ) {
        if let Some(r) = &self.redis {
            r.auth_outcome(ip, account, ok, throttle).await;
        }
    }

    pub async fn reputation(&self, key: &str) -> Option<Reputation> {
        self.decide(
            |r| async move { r.reputation(key).await },
            |l| l.reputation(key).cloned(),
        )
        .await
    }

    /// Count a message and/or verdict for an identity; the level change.
    pub async fn record(
        &self,
        key: &str,
        verdict: Option<Verdict>,
        counts_message: bool,
    ) -> Option<LevelChange> {
        let (now, rules) = (now_secs(), &self.rules);
        self.decide(
            |r| async move { r.record(key, verdict, counts_message, rules, now).await },
            |l| l.record(key, verdict, counts_message, rules, now).1,
        )
        .await
    }

    /// A "user unknown" answer counts against the client's range.
    pub async fn penalize(&self, range: Cidr) {
        let now = now_secs();
        self.decide(
            |r| async move { r.penalize(range).await },
            |l| l.penalize(range, now),
        )
        .await
    }

    /// Remember that `range` delivered mail authenticated for `domain`.
    pub async fn remember_range(&self, range: Cidr, domain: &str) {
        let now = now_secs();
        self.decide(
            |r| async move { r.remember_range(range, domain, now).await },
            |l| l.remember_range(range, domain, now),
        )
        .await
    }

    /// An operator's change (CLI) or the server's own (auto-block). With
    /// Redis an unreachable Redis is an error: an operator's change must
    /// reach every node or none.
    pub async fn apply(&self, cmd: &StateCommand) -> Result<(), String> {
        let now = now_secs();
        let applied = match &self.redis {
            Some(r) => r.apply(cmd, &self.rules, now).await,
            None => self.local().apply(cmd, &self.rules, now),
        };
        if applied.is_ok() {
            if self.redis.is_some() {
                // The change moved the lists' version: mirror it here now,
                // the other nodes within their next poll.
                self.reload_lists().await;
            } else if matches!(
                cmd,
                StateCommand::Block { .. } | StateCommand::Unblock { .. }
            ) {
                self.changes.send_modify(|n| *n += 1);
            }
        }
        applied
    }

    /// At a report period's end: hand this node's period in (with Redis)
    /// and learn whether it sends the merged reports, leaves them to the
    /// node that claimed them, or (no Redis, or Redis not answering)
    /// reports alone.
    pub async fn hand_in_period(&self, kind: &str, end: u64, period: &[u8]) -> PeriodRole {
        let Some(r) = &self.redis else {
            return PeriodRole::Alone;
        };
        match r.hand_in_period(kind, end, period).await {
            Some(true) => PeriodRole::Sender,
            Some(false) => PeriodRole::Contributor,
            None => PeriodRole::Alone,
        }
    }

    /// The periods every node handed in for (`kind`, `end`) (empty
    /// without Redis).
    pub async fn handed_in_periods(&self, kind: &str, end: u64) -> Vec<Vec<u8>> {
        match &self.redis {
            Some(r) => r.handed_in_periods(kind, end).await.unwrap_or_default(),
            None => Vec::new(),
        }
    }

    pub async fn blocklist(&self) -> Vec<(Cidr, BlockEntry)> {
        let now = now_secs();
        self.decide(
            |r| async move { r.blocklist(now).await },
            |l| l.blocklist(now),
        )
        .await
    }

    /// Whether a greylisting triplet passes now (issue 21).
    pub async fn greylist(
        &self,
        key: &str,
        rules: portcullis_admission::GreylistRules,
    ) -> portcullis_admission::Greyed {
        let now = now_secs();
        self.decide(
            |r| async move { r.greylist(key, rules, now).await },
            |l| l.greylist(key, &rules, now),
        )
        .await
    }

    /// Why escalation must leave `prefix` alone, if it must: a
    /// known-sender range, a domain range or a range whose client logged
    /// in lies inside it or holds it (allocations are the caller's).
    pub async fn exemption_within(&self, prefix: Cidr) -> Option<Exemption> {
        let now = now_secs();
        self.decide(
            |r| async move { r.exemption_within(prefix, now).await },
            |l| l.exemption_within(&prefix, now),
        )
        .await
    }

    /// A client in `range` logged in (SMTP AUTH): escalation leaves
    /// prefixes holding the range alone for
    /// `AUTHENTICATED_RANGE_TTL_SECS`.
    pub async fn remember_authenticated(&self, range: Cidr) {
        let now = now_secs();
        self.decide(
            |r| async move { r.remember_authenticated(range, now).await },
            |l| l.remember_authenticated(range, now),
        )
        .await
    }

    /// With Redis: drop the shared blocklist's ended entries (one script,
    /// so a block renewed meanwhile stays) and the logins past their
    /// memory. The number of blocklist entries removed; None without Redis
    /// or when it did not answer.
    pub async fn sweep_shared(&self) -> Option<u64> {
        self.redis.as_ref()?.sweep(now_secs()).await
    }

    pub async fn known(&self) -> Vec<(Cidr, String)> {
        self.decide(|r| async move { r.known().await }, |l| l.known())
            .await
    }

    pub async fn reputations(&self) -> Vec<(String, Reputation)> {
        self.decide(
            |r| async move { r.reputations().await },
            |l| {
                l.reputations()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            },
        )
        .await
    }

    /// Embedded backend: forget drained state and write the snapshot when
    /// something changed. Called every second by the server.
    pub fn maintain(&self) -> std::io::Result<()> {
        // Containment buckets are at most an hour wide; the history's
        // longest window is what the config allows (60 days).
        self.accounts.maintain(now_secs(), 60)?;
        let mut st = self.local();
        st.sweep(now_us());
        let Some(path) = &self.snapshot else {
            return Ok(());
        };
        if !st.take_dirty() {
            return Ok(());
        }
        let json = serde_json::to_vec(&*st).map_err(std::io::Error::other)?;
        drop(st);
        write_atomically(path, &json)
    }
}
