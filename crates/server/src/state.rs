//! Where admission state lives: in this process (`backend = "embedded"`,
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

use portcullis_accounts::{QuotaExceeded, QuotaLimits, window_start};
use portcullis_admission::{
    BlockEntry, Charge, EmbeddedState, LevelChange, Lookup, Reputation, StateCommand, Verdict, gcra,
};
use portcullis_config::{Cidr, Config, ReputationRules, StateBackend};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

/// How long one Redis operation may take before the node decides alone.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// How often a node without Redis tries to reconnect.
const REDIS_RETRY: Duration = Duration::from_secs(1);
const P: &str = "pc:";

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

pub fn now_secs() -> u64 {
    now_us() / 1_000_000
}

#[derive(Clone)]
pub struct AdmissionState {
    local: Arc<Mutex<EmbeddedState>>,
    redis: Option<Arc<RedisBackend>>,
    rules: ReputationRules,
    /// Embedded backend only: where the snapshot goes.
    snapshot: Option<PathBuf>,
}

struct RedisBackend {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<redis::aio::ConnectionManager>>,
    last_attempt_us: AtomicU64,
    up: AtomicBool,
    errors: AtomicU64,
    gcra: redis::Script,
    lookup: redis::Script,
    record: redis::Script,
    level: redis::Script,
    quota: redis::Script,
    auth: redis::Script,
    lease: redis::Script,
    /// Tells this node's leases from every other node's.
    node: String,
    leases_taken: AtomicU64,
}

/// Lookup at connect, one round trip: the blocklist and the known-sender
/// list at every range holding the client, the domains seen from its
/// range, and its recent "user unknown" count.
const LOOKUP_LUA: &str = r#"
local bl = redis.call('HMGET', KEYS[1], unpack(ARGV))
local ks = redis.call('HMGET', KEYS[2], unpack(ARGV))
local dr = redis.call('HGETALL', KEYS[3])
local unk = tonumber(redis.call('GET', KEYS[4]) or '0')
return {bl, ks, dr, unk}
"#;

/// Count a message and a verdict; returns the reputation hash.
const RECORD_LUA: &str = r#"
local k = KEYS[1]
local now = ARGV[1]
if ARGV[2] == '1' then
  redis.call('HINCRBY', k, 'messages', 1)
  redis.call('HSETNX', k, 'first_seen', now)
end
if ARGV[3] == 'ham' then
  redis.call('HINCRBY', k, 'ham', 1)
  redis.call('HINCRBY', k, 'ham_at_level', 1)
elseif ARGV[3] == 'spam' then
  redis.call('HINCRBY', k, 'spam', 1)
  redis.call('HINCRBY', k, 'spam_at_level', 1)
end
redis.call('HSET', k, 'last_seen', now)
redis.call('SADD', KEYS[2], k)
return redis.call('HGETALL', k)
"#;

/// Apply a level change only if no other node applied one meanwhile.
const LEVEL_LUA: &str = r#"
local cur = tonumber(redis.call('HGET', KEYS[1], 'level') or '0')
if cur ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'level', ARGV[2], 'ham_at_level', 0, 'spam_at_level', 0, 'last_change', ARGV[3])
return 1
"#;

/// Submission quotas shared by every node: fixed-window counters, all
/// charged or none. KEYS: one counter per window; ARGV: n, then limit and
/// lifetime per key. Returns 0, or the 1-based index of the full window.
const QUOTA_LUA: &str = r#"
local n = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local used = tonumber(redis.call('GET', key) or '0')
  if used + n > tonumber(ARGV[2 * i]) then return i end
end
for i, key in ipairs(KEYS) do
  redis.call('INCRBY', key, n)
  redis.call('EXPIRE', key, tonumber(ARGV[2 * i + 1]))
end
return 0
"#;

/// A concurrency slot shared by every node: a sorted set of leases
/// scored by expiry. Expired leases (a node that died) are dropped first.
/// ARGV: now (ms), lease (ms), max, member. Returns 1 if taken.
const LEASE_LUA: &str = r#"
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#;

/// How long a shared concurrency slot lives without its connection
/// ending: a node that dies frees its slots after this. A session that
/// runs longer stops counting (the limit errs toward admitting).
const LEASE: Duration = Duration::from_secs(15 * 60);

/// A concurrency slot held in Redis; given back when dropped.
pub struct Lease {
    redis: Arc<RedisBackend>,
    key: String,
    member: String,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return; // shutting down: the lease expires on its own
        };
        let (redis, key, member) = (
            self.redis.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.member),
        );
        rt.spawn(async move {
            let _: Option<()> = redis
                .run(|mut c| async move {
                    redis::cmd("ZREM")
                        .arg(key)
                        .arg(member)
                        .query_async(&mut c)
                        .await
                })
                .await;
        });
    }
}

/// The AUTH throttle's view of one attempt: failures from the address
/// and on the account with seconds until each is forgotten, and whether
/// the account has logged in from the address before.
const AUTH_LUA: &str = r#"
local a = tonumber(redis.call('GET', KEYS[1]) or '0')
local c = tonumber(redis.call('GET', KEYS[2]) or '0')
return {a, redis.call('TTL', KEYS[1]), c, redis.call('TTL', KEYS[2]), redis.call('EXISTS', KEYS[3])}
"#;

/// Failures remembered by the cluster: (count, seconds left) for the
/// address and the account, and whether the address is known.
pub struct AuthCounts {
    pub address: (u32, u64),
    pub account: (u32, u64),
    pub known: bool,
}

fn auth_keys(ip: IpAddr, account: &str) -> [String; 3] {
    let ip = portcullis_accounts::throttle_key(ip);
    let account = account.to_ascii_lowercase();
    [
        format!("{P}auth:addr:{ip}"),
        format!("{P}auth:acct:{account}"),
        format!("{P}auth:known:{account}:{ip}"),
    ]
}

impl AdmissionState {
    /// The state the config names. For the embedded backend, the last
    /// snapshot is loaded.
    pub fn open(config: &Config) -> anyhow::Result<AdmissionState> {
        let (local, snapshot) = match config.state_backend {
            StateBackend::Embedded => {
                let path = snapshot_path(&config.data_dir);
                (load_snapshot(&path)?, Some(path))
            }
            StateBackend::Redis => (EmbeddedState::default(), None),
        };
        let redis = match (&config.state_backend, &config.redis_url) {
            (StateBackend::Redis, Some(url)) => Some(Arc::new(RedisBackend {
                client: redis::Client::open(url.as_str())
                    .map_err(|e| anyhow::anyhow!("[state] redis_url {url:?}: {e}"))?,
                conn: tokio::sync::Mutex::new(None),
                last_attempt_us: AtomicU64::new(0),
                up: AtomicBool::new(true),
                errors: AtomicU64::new(0),
                gcra: redis::Script::new(gcra::GCRA_LUA),
                lookup: redis::Script::new(LOOKUP_LUA),
                record: redis::Script::new(RECORD_LUA),
                level: redis::Script::new(LEVEL_LUA),
                quota: redis::Script::new(QUOTA_LUA),
                auth: redis::Script::new(AUTH_LUA),
                lease: redis::Script::new(LEASE_LUA),
                node: format!("{}-{}", std::process::id(), now_us()),
                leases_taken: AtomicU64::new(0),
            })),
            _ => None,
        };
        Ok(AdmissionState {
            local: Arc::new(Mutex::new(local)),
            redis,
            rules: config.reputation.clone(),
            snapshot,
        })
    }

    fn local(&self) -> std::sync::MutexGuard<'_, EmbeddedState> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn backend_name(&self) -> &'static str {
        if self.redis.is_some() {
            "redis"
        } else {
            "embedded"
        }
    }

    /// 1 while Redis answers (or when it is not used), for `/metrics`.
    pub fn redis_up(&self) -> Option<bool> {
        self.redis.as_ref().map(|r| r.up.load(Ordering::Relaxed))
    }

    pub fn redis_errors(&self) -> u64 {
        self.redis
            .as_ref()
            .map_or(0, |r| r.errors.load(Ordering::Relaxed))
    }

    pub fn sizes(&self) -> [(&'static str, usize); 5] {
        self.local().sizes()
    }

    pub async fn lookup(&self, ip: IpAddr, range: Cidr) -> Lookup {
        let now = now_secs();
        if let Some(r) = &self.redis
            && let Some(l) = r.lookup(ip, range, now).await
        {
            return l;
        }
        self.local().lookup(ip, range, now)
    }

    /// Draw from every bucket or none: Err is (index, µs until it fits).
    pub async fn charge(&self, charges: &[Charge]) -> Result<(), (usize, u64)> {
        if charges.is_empty() {
            return Ok(());
        }
        let now = now_us();
        if let Some(r) = &self.redis
            && let Some(out) = r.charge(charges, now).await
        {
            return out;
        }
        self.local().charge(charges, now)
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
        let r = self.redis.as_ref()?;
        let n = r.leases_taken.fetch_add(1, Ordering::Relaxed);
        let member = format!("{}-{n}", r.node);
        let zset = format!("{P}slots:{key}");
        let mut inv = r.lease.prepare_invoke();
        inv.key(&zset)
            .arg(now_us() / 1000)
            .arg(LEASE.as_millis() as u64)
            .arg(max)
            .arg(&member);
        let taken: u8 = r
            .run(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        Some((taken == 1).then(|| Lease {
            redis: r.clone(),
            key: zset,
            member,
        }))
    }

    /// The cluster's AUTH failures for this attempt; None without Redis.
    pub async fn auth_counts(&self, ip: IpAddr, account: &str) -> Option<AuthCounts> {
        let r = self.redis.as_ref()?;
        let mut inv = r.auth.prepare_invoke();
        for k in auth_keys(ip, account) {
            inv.key(k);
        }
        let v: (u32, i64, u32, i64, u8) = r
            .run(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        let left = |t: i64| u64::try_from(t).unwrap_or(0);
        Some(AuthCounts {
            address: (v.0, left(v.1)),
            account: (v.2, left(v.3)),
            known: v.4 == 1,
        })
    }

    /// Record a failed or successful login for every node to see.
    pub async fn auth_outcome(
        &self,
        ip: IpAddr,
        account: &str,
        ok: bool,
        throttle: &portcullis_accounts::ThrottleConfig,
    ) {
        let Some(r) = &self.redis else {
            return;
        };
        let [addr, acct, known] = auth_keys(ip, account);
        let secs = throttle.lock_for.as_secs().max(1);
        let mut pipe = redis::pipe();
        if ok {
            let known_secs = throttle.known_for().as_secs().max(1);
            pipe.del(&addr)
                .ignore()
                .set_ex(&known, 1, known_secs)
                .ignore();
        } else {
            pipe.incr(&addr, 1)
                .ignore()
                .expire(&addr, secs as i64)
                .ignore();
            pipe.incr(&acct, 1)
                .ignore()
                .expire(&acct, secs as i64)
                .ignore();
        }
        let _: Option<()> = r
            .run(|mut c| async move { pipe.query_async(&mut c).await })
            .await;
    }

    pub async fn reputation(&self, key: &str) -> Option<Reputation> {
        if let Some(r) = &self.redis
            && let Some(rep) = r.reputation(key).await
        {
            return rep;
        }
        self.local().reputation(key).cloned()
    }

    /// Count a message and/or verdict for an identity; the level change.
    pub async fn record(
        &self,
        key: &str,
        verdict: Option<Verdict>,
        counts_message: bool,
    ) -> Option<LevelChange> {
        let now = now_secs();
        if let Some(r) = &self.redis
            && let Some(change) = r
                .record(key, verdict, counts_message, &self.rules, now)
                .await
        {
            return change;
        }
        self.local()
            .record(key, verdict, counts_message, &self.rules, now)
            .1
    }

    /// A "user unknown" answer counts against the client's range.
    pub async fn penalize(&self, range: Cidr) {
        if let Some(r) = &self.redis {
            let key = format!("{P}unknown:{range}");
            let ttl = portcullis_admission::UNKNOWN_USER_MEMORY_SECS as i64;
            let mut pipe = redis::pipe();
            pipe.incr(&key, 1).ignore().expire(&key, ttl).ignore();
            let done = r.run(|mut c| async move { pipe.query_async::<()>(&mut c).await });
            if done.await.is_some() {
                return;
            }
        }
        self.local().penalize(range, now_secs());
    }

    pub async fn remember_range(&self, range: Cidr, domain: &str) {
        let now = now_secs();
        if let Some(r) = &self.redis {
            let key = format!("{P}dr:{range}");
            let ttl = portcullis_admission::DOMAIN_RANGE_TTL_SECS as i64;
            let mut pipe = redis::pipe();
            pipe.hset(&key, domain, now)
                .ignore()
                .expire(&key, ttl)
                .ignore();
            if r.run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
                .await
                .is_some()
            {
                return;
            }
        }
        self.local().remember_range(range, domain, now);
    }

    /// An operator's change (CLI) or the server's own (auto-block).
    pub async fn apply(&self, cmd: &StateCommand) -> Result<(), String> {
        let now = now_secs();
        if let Some(r) = &self.redis {
            return r.apply(cmd, &self.rules, now).await;
        }
        self.local().apply(cmd, &self.rules, now)
    }

    pub async fn blocklist(&self) -> Vec<(Cidr, BlockEntry)> {
        let now = now_secs();
        if let Some(r) = &self.redis
            && let Some(v) = r.hash_all(&format!("{P}blocklist")).await
        {
            let mut out: Vec<(Cidr, BlockEntry)> = v
                .into_iter()
                .filter_map(|(k, v)| Some((k.parse().ok()?, serde_json::from_str(&v).ok()?)))
                .filter(|(_, e): &(Cidr, BlockEntry)| e.until > now)
                .collect();
            out.sort_by_key(|(c, _)| c.to_string());
            return out;
        }
        self.local().blocklist(now)
    }

    pub async fn known(&self) -> Vec<(Cidr, String)> {
        if let Some(r) = &self.redis
            && let Some(v) = r.hash_all(&format!("{P}known")).await
        {
            let mut out: Vec<_> = v
                .into_iter()
                .filter_map(|(k, n)| Some((k.parse().ok()?, n)))
                .collect();
            out.sort_by_key(|(c, _): &(Cidr, String)| c.to_string());
            return out;
        }
        self.local().known()
    }

    pub async fn reputations(&self) -> Vec<(String, Reputation)> {
        if let Some(r) = &self.redis
            && let Some(v) = r.reputations().await
        {
            return v;
        }
        self.local()
            .reputations()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
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

pub fn snapshot_path(data_dir: &Path) -> PathBuf {
    data_dir.join("state").join("embedded.json")
}

pub fn load_snapshot(path: &Path) -> anyhow::Result<EmbeddedState> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| anyhow::anyhow!("{}: not a state snapshot: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(EmbeddedState::default()),
        Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
    }
}

pub fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

impl RedisBackend {
    /// A connection, reconnecting at most once per `REDIS_RETRY`.
    async fn connection(&self) -> Option<redis::aio::ConnectionManager> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = &*slot {
            return Some(c.clone());
        }
        let now = now_us();
        let last = self.last_attempt_us.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < REDIS_RETRY.as_micros() as u64 {
            return None;
        }
        self.last_attempt_us.store(now, Ordering::Relaxed);
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1);
        match tokio::time::timeout(
            REDIS_TIMEOUT * 2,
            self.client.get_connection_manager_with_config(cfg),
        )
        .await
        {
            Ok(Ok(c)) => {
                *slot = Some(c.clone());
                Some(c)
            }
            Ok(Err(e)) => {
                self.down(&e.to_string());
                None
            }
            Err(_) => {
                self.down("connect timed out");
                None
            }
        }
    }

    fn down(&self, why: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if self.up.swap(false, Ordering::Relaxed) {
            warn!(event = "redis_down", error = %why, "Redis unreachable: deciding on local state until it answers");
        }
    }

    /// Run one operation with a timeout; None (and local state) on failure.
    async fn run<T, F, Fut>(&self, op: F) -> Option<T>
    where
        F: FnOnce(redis::aio::ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.connection().await?;
        match tokio::time::timeout(REDIS_TIMEOUT, op(conn)).await {
            Ok(Ok(v)) => {
                if !self.up.swap(true, Ordering::Relaxed) {
                    info!(
                        event = "redis_up",
                        "Redis answers again: shared state resumed"
                    );
                }
                Some(v)
            }
            Ok(Err(e)) => {
                self.down(&e.to_string());
                None
            }
            Err(_) => {
                self.down("operation timed out");
                None
            }
        }
    }

    async fn lookup(&self, ip: IpAddr, range: Cidr, now: u64) -> Option<Lookup> {
        let cidrs: Vec<String> = Cidr::all_enclosing(ip)
            .iter()
            .map(ToString::to_string)
            .collect();
        let mut inv = self.lookup.prepare_invoke();
        inv.key(format!("{P}blocklist"))
            .key(format!("{P}known"))
            .key(format!("{P}dr:{range}"))
            .key(format!("{P}unknown:{range}"));
        for c in &cidrs {
            inv.arg(c);
        }
        type Found = (
            Vec<Option<String>>,
            Vec<Option<String>>,
            Vec<(String, u64)>,
            u32,
        );
        let (bl, ks, dr, unknown_users): Found = self
            .run(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        let blocked = cidrs.iter().zip(bl).find_map(|(c, e)| {
            let e: BlockEntry = serde_json::from_str(e.as_deref()?).ok()?;
            (e.until > now).then(|| Some((c.parse().ok()?, e)))?
        });
        let known = ks.into_iter().flatten().next();
        let ttl = portcullis_admission::DOMAIN_RANGE_TTL_SECS;
        let domains = dr
            .into_iter()
            .filter(|(_, seen)| seen + ttl > now)
            .map(|(d, _)| d)
            .collect();
        Some(Lookup {
            blocked,
            known,
            domains,
            unknown_users,
        })
    }

    async fn charge(&self, charges: &[Charge], now: u64) -> Option<Result<(), (usize, u64)>> {
        let mut inv = self.gcra.prepare_invoke();
        inv.arg(now);
        for c in charges {
            inv.key(format!("{P}{}", c.key))
                .arg(gcra::interval_us(c.per_minute))
                .arg(c.cost);
        }
        let (index, retry): (usize, u64) = self
            .run(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        Some(if index == 0 {
            Ok(())
        } else {
            Err((index - 1, retry))
        })
    }

    async fn take_quota(
        &self,
        key: &str,
        limits: QuotaLimits,
        n: u32,
        now: u64,
    ) -> Option<Result<(), QuotaExceeded>> {
        let windows = limits.windows();
        let mut inv = self.quota.prepare_invoke();
        inv.arg(n);
        for (w, limit) in windows {
            let start = window_start(w, now);
            inv.key(format!("{P}quota:{key}:{}:{start}", w.name()))
                .arg(limit)
                .arg(w.seconds() + 60);
        }
        let full: usize = self
            .run(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        Some(match full.checked_sub(1).and_then(|i| windows.get(i)) {
            Some((w, limit)) => Err(QuotaExceeded::at(*w, *limit, now)),
            None => Ok(()),
        })
    }

    async fn reputation(&self, key: &str) -> Option<Option<Reputation>> {
        let k = format!("{P}rep:{key}");
        let fields: Vec<(String, u64)> = self
            .run(|mut c| async move { redis::cmd("HGETALL").arg(k).query_async(&mut c).await })
            .await?;
        Some((!fields.is_empty()).then(|| reputation_from(&fields)))
    }

    async fn record(
        &self,
        key: &str,
        verdict: Option<Verdict>,
        counts_message: bool,
        rules: &ReputationRules,
        now: u64,
    ) -> Option<Option<LevelChange>> {
        let k = format!("{P}rep:{key}");
        let mut inv = self.record.prepare_invoke();
        inv.key(&k).key(format!("{P}reps"));
        inv.arg(now)
            .arg(if counts_message { "1" } else { "0" })
            .arg(verdict.map_or("", Verdict::as_str));
        let fields: Vec<(String, u64)> = self
            .run(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        let rep = reputation_from(&fields);
        let Some(change) = rep.decide(rules) else {
            return Some(None);
        };
        let (LevelChange::Promoted { from, to } | LevelChange::Demoted { from, to }) = change;
        let mut inv = self.level.prepare_invoke();
        inv.key(&k).arg(from).arg(to).arg(now);
        let applied: i64 = self
            .run(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        Some((applied == 1).then_some(change))
    }

    async fn hash_all(&self, key: &str) -> Option<Vec<(String, String)>> {
        let key = key.to_owned();
        self.run(|mut c| async move { redis::cmd("HGETALL").arg(key).query_async(&mut c).await })
            .await
    }

    async fn reputations(&self) -> Option<Vec<(String, Reputation)>> {
        let keys: Vec<String> = self
            .run(|mut c| async move {
                redis::cmd("SMEMBERS")
                    .arg(format!("{P}reps"))
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let mut out = Vec::new();
        for k in keys {
            let id = k.strip_prefix(&format!("{P}rep:")).unwrap_or(&k).to_owned();
            if let Some(Some(r)) = self.reputation(&id).await {
                out.push((id, r));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Some(out)
    }

    async fn apply(
        &self,
        cmd: &StateCommand,
        rules: &ReputationRules,
        now: u64,
    ) -> Result<(), String> {
        let unreachable = || "Redis is unreachable; nothing changed".to_owned();
        let (hash, field, value) = match cmd {
            StateCommand::Block {
                range,
                secs,
                reason,
            } => {
                let e = BlockEntry {
                    until: now + secs,
                    reason: reason.clone(),
                };
                (
                    "blocklist",
                    range,
                    Some(serde_json::to_string(&e).map_err(|e| e.to_string())?),
                )
            }
            StateCommand::Unblock { range } => ("blocklist", range, None),
            StateCommand::KnownAdd { range, name } => ("known", range, Some(name.clone())),
            StateCommand::KnownDel { range } => ("known", range, None),
            StateCommand::Report { identity, verdict } => {
                let v = Verdict::parse(verdict)
                    .ok_or(format!("verdict {verdict:?} is not ham or spam"))?;
                let key = portcullis_admission::Identity::parse(identity).key();
                self.record(&key, Some(v), false, rules, now)
                    .await
                    .ok_or_else(unreachable)?;
                return Ok(());
            }
            StateCommand::Snapshot => return Ok(()),
        };
        let hash = format!("{P}{hash}");
        let field = field.to_string();
        let changed: i64 = match value {
            Some(v) => {
                let f = field.clone();
                self.run(|mut c| async move {
                    redis::cmd("HSET")
                        .arg(hash)
                        .arg(f)
                        .arg(v)
                        .query_async::<()>(&mut c)
                        .await
                })
                .await
                .ok_or_else(unreachable)?;
                1
            }
            None => {
                let f = field.clone();
                self.run(|mut c| async move {
                    redis::cmd("HDEL")
                        .arg(hash)
                        .arg(f)
                        .query_async(&mut c)
                        .await
                })
                .await
                .ok_or_else(unreachable)?
            }
        };
        if changed == 0 {
            return Err(format!("{field} is not listed"));
        }
        Ok(())
    }
}

fn reputation_from(fields: &[(String, u64)]) -> Reputation {
    let mut r = Reputation::default();
    for (k, v) in fields {
        let v = *v;
        match k.as_str() {
            "level" => r.level = v as u32,
            "messages" => r.messages = v,
            "ham" => r.ham = v,
            "spam" => r.spam = v,
            "ham_at_level" => r.ham_at_level = v,
            "spam_at_level" => r.spam_at_level = v,
            "first_seen" => r.first_seen = v,
            "last_seen" => r.last_seen = v,
            "last_change" => r.last_change = v,
            _ => {}
        }
    }
    r
}

/// The embedded state belongs to one process. The server holds an
/// exclusive lock on `DATA/state/lock`; the CLI sees it and hands its
/// changes to the server through `DATA/state/commands/` instead of
/// editing a snapshot the server would overwrite.
pub fn lock_or_share(config: &Config) -> anyhow::Result<Option<std::fs::File>> {
    if config.state_backend != StateBackend::Embedded {
        return Ok(None);
    }
    let path = config.data_dir.join("state").join("lock");
    let file = open_lock(&path)?;
    if !try_flock(&file, libc::LOCK_EX) {
        anyhow::bail!(
            "{}: another portcullis already serves this data directory",
            path.display()
        );
    }
    Ok(Some(file))
}

fn open_lock(path: &Path) -> anyhow::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn try_flock(f: &std::fs::File, how: libc::c_int) -> bool {
    use std::os::fd::AsRawFd as _;
    // SAFETY: flock on a descriptor we own; no memory is shared.
    unsafe { libc::flock(f.as_raw_fd(), how | libc::LOCK_NB) == 0 }
}

/// Whether a running server owns the embedded state of `data_dir`.
pub fn server_running(data_dir: &Path) -> bool {
    let path = data_dir.join("state").join("lock");
    match std::fs::OpenOptions::new().read(true).open(&path) {
        Ok(f) => !try_flock(&f, libc::LOCK_SH),
        Err(_) => false,
    }
}

pub fn commands_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("state").join("commands")
}

/// The server's housekeeping, every second: operators' commands from the
/// CLI, the sweep, and (at most every 5 s, or at once after a command)
/// the snapshot.
pub async fn maintain(state: AdmissionState, data_dir: PathBuf) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut since_snapshot = 0u32;
    loop {
        tick.tick().await;
        let answers = apply_commands(&state, &commands_dir(&data_dir)).await;
        since_snapshot += 1;
        if !answers.is_empty() || since_snapshot >= 5 {
            since_snapshot = 0;
            if let Err(e) = state.maintain() {
                warn!(event = "state_snapshot_failed", error = %e);
            }
        }
        // Answered only now, so a CLI that reads the snapshot next sees
        // its change.
        for (path, text) in answers {
            let _ = std::fs::write(path.with_extension("done"), text);
            let _ = std::fs::remove_file(&path);
        }
    }
}

async fn apply_commands(state: &AdmissionState, dir: &Path) -> Vec<(PathBuf, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    let mut answers = Vec::new();
    for path in names {
        let outcome = match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<StateCommand>(&b).map_err(|e| e.to_string()))
        {
            Ok(cmd) => {
                info!(event = "state_command", command = ?cmd);
                state.apply(&cmd).await
            }
            Err(e) => Err(format!("unreadable command: {e}")),
        };
        let text = match outcome {
            Ok(()) => "ok".to_owned(),
            Err(e) => e,
        };
        answers.push((path, text));
    }
    answers
}
