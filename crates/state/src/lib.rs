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

mod changes;
mod housekeeping;
mod lease;
mod lock;
mod redis;
mod scripts;
mod snapshot;

pub use housekeeping::maintain;
pub use lease::Lease;
pub use lock::{lock_or_share, server_running};
pub use snapshot::{load_snapshot, snapshot_path, write_atomically};

pub use crate::redis::AuthCounts;
use crate::redis::RedisBackend;
use portcullis_accounts::{QuotaExceeded, QuotaLimits};
use portcullis_admission::{
    BlockEntry, Charge, EmbeddedState, LevelChange, Lookup, Reputation, StateCommand, Verdict,
};
use portcullis_config::clock::{now_secs, now_us};
use portcullis_config::{Cidr, Config, ReputationRules, StateBackend};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Admission and submission state, embedded or in Redis. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    local: Arc<Mutex<EmbeddedState>>,
    redis: Option<Arc<RedisBackend>>,
    rules: ReputationRules,
    /// Embedded backend only: where the snapshot goes.
    snapshot: Option<PathBuf>,
    /// Bumped whenever the blocklist changes, here or (with Redis) on any
    /// node: what mirrors of it (the kernel's set) wait on.
    changes: Arc<tokio::sync::watch::Sender<u64>>,
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
        let redis = match (&config.state_backend, &config.redis_url) {
            (StateBackend::Redis, Some(url)) => Some(Arc::new(RedisBackend::new(url)?)),
            _ => None,
        };
        Ok(Store {
            local: Arc::new(Mutex::new(local)),
            redis,
            rules: config.reputation.clone(),
            snapshot,
            changes: Arc::default(),
        })
    }

    /// A store in memory only: no snapshot, no Redis (tests, and tools
    /// that need the arithmetic without a data directory).
    pub fn in_memory(rules: ReputationRules) -> Store {
        Store {
            local: Arc::default(),
            redis: None,
            rules,
            snapshot: None,
            changes: Arc::default(),
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

    pub fn redis_errors(&self) -> u64 {
        self.redis.as_ref().map_or(0, |r| r.errors())
    }

    pub fn sizes(&self) -> [(&'static str, usize); 5] {
        self.local().sizes()
    }

    /// At connect: the blocklist, known senders, domain ranges and recent
    /// "user unknown" answers for the client.
    pub async fn lookup(&self, ip: IpAddr, range: Cidr) -> Lookup {
        let now = now_secs();
        self.decide(
            |r| async move { r.lookup(ip, range, now).await },
            |l| l.lookup(ip, range, now),
        )
        .await
    }

    /// Draw from every bucket or none: Err is (index, µs until it fits).
    pub async fn charge(&self, charges: &[Charge]) -> Result<(), (usize, u64)> {
        if charges.is_empty() {
            return Ok(());
        }
        let now = now_us();
        self.decide(
            |r| async move { r.charge(charges, now).await },
            |l| l.charge(charges, now),
        )
        .await
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

    /// A slot under `key` counted by every node, if fewer than `max` are
    /// held: Some(None) when full, None without Redis (count locally).
    pub async fn lease(&self, key: &str, max: u32) -> Option<Option<Lease>> {
        RedisBackend::lease(self.redis.as_ref()?, key, max).await
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
        if applied.is_ok()
            && matches!(
                cmd,
                StateCommand::Block { .. } | StateCommand::Unblock { .. }
            )
        {
            self.blocklist_changed().await;
        }
        applied
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

    /// Whether a known-sender range or a range that delivered
    /// authenticated mail lies inside `prefix` (escalation never blocks
    /// those).
    pub async fn identified_within(&self, prefix: Cidr) -> bool {
        self.decide(
            |r| async move { r.identified_within(prefix).await },
            |l| l.identified_within(&prefix),
        )
        .await
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
