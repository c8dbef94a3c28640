//! The Redis backend: shared by every node in real time. Each operation
//! runs with a timeout; when Redis does not answer, the caller decides on
//! local state (see `Store`), and this backend says so once in the log and
//! counts it for `/metrics`.

use crate::lease::{LEASE, Lease};
use crate::scripts::*;
use portcullis_accounts::{QuotaExceeded, QuotaLimits, window_start};
use portcullis_admission::{
    BlockEntry, Charge, LevelChange, Lookup, Reputation, StateCommand, Verdict, gcra,
};
use portcullis_config::clock::now_us;
use portcullis_config::{Cidr, ReputationRules};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tracing::{info, warn};

/// How long one Redis operation may take before the node decides alone.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// How often a node without Redis tries to reconnect.
const REDIS_RETRY: Duration = Duration::from_secs(1);
/// Every key portcullis writes starts with this.
pub(crate) const P: &str = "pc:";

pub(crate) struct RedisBackend {
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
    greylist: redis::Script,
    /// Tells this node's leases from every other node's.
    node: String,
    leases_taken: AtomicU64,
}

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

impl RedisBackend {
    pub(crate) fn new(url: &str) -> anyhow::Result<RedisBackend> {
        Ok(RedisBackend {
            client: redis::Client::open(url)
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
            greylist: redis::Script::new(portcullis_admission::GREYLIST_LUA),
            node: format!("{}-{}", std::process::id(), now_us()),
            leases_taken: AtomicU64::new(0),
        })
    }

    pub(crate) fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Tell every node that follows `channel` that something changed.
    pub(crate) async fn publish(&self, channel: &str) {
        let channel = channel.to_owned();
        let _: Option<i64> = self
            .run(|mut c| async move {
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg("changed")
                    .query_async(&mut c)
                    .await
            })
            .await;
    }

    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub(crate) fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Take a lease under `key` if fewer than `max` are held: Some(None)
    /// when full, None when Redis did not answer.
    pub(crate) async fn lease(this: &Arc<Self>, key: &str, max: u32) -> Option<Option<Lease>> {
        let n = this.leases_taken.fetch_add(1, Ordering::Relaxed);
        let member = format!("{}-{n}", this.node);
        let zset = format!("{P}slots:{key}");
        let mut inv = this.lease.prepare_invoke();
        inv.key(&zset)
            .arg(now_us() / 1000)
            .arg(LEASE.as_millis() as u64)
            .arg(max)
            .arg(&member);
        let taken: u8 = this
            .run(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        Some((taken == 1).then(|| Lease {
            redis: this.clone(),
            key: zset,
            member,
        }))
    }

    /// Give a lease back (its holder ended).
    pub(crate) async fn release(&self, key: String, member: String) {
        let _: Option<()> = self
            .run(|mut c| async move {
                redis::cmd("ZREM")
                    .arg(key)
                    .arg(member)
                    .query_async(&mut c)
                    .await
            })
            .await;
    }

    pub(crate) async fn auth_counts(&self, ip: IpAddr, account: &str) -> Option<AuthCounts> {
        let mut inv = self.auth.prepare_invoke();
        for k in auth_keys(ip, account) {
            inv.key(k);
        }
        let v: (u32, i64, u32, i64, u8) = self
            .run(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        let left = |t: i64| u64::try_from(t).unwrap_or(0);
        Some(AuthCounts {
            address: (v.0, left(v.1)),
            account: (v.2, left(v.3)),
            known: v.4 == 1,
        })
    }

    pub(crate) async fn auth_outcome(
        &self,
        ip: IpAddr,
        account: &str,
        ok: bool,
        throttle: &portcullis_accounts::ThrottleConfig,
    ) {
        let [addr, acct, known] = auth_keys(ip, account);
        let secs = throttle.lock_for.as_secs().max(1) as i64;
        let mut pipe = redis::pipe();
        if ok {
            let known_secs = throttle.known_for().as_secs().max(1);
            pipe.del(&addr).ignore();
            pipe.set_ex(&known, 1, known_secs).ignore();
        } else {
            pipe.incr(&addr, 1).ignore().expire(&addr, secs).ignore();
            pipe.incr(&acct, 1).ignore().expire(&acct, secs).ignore();
        }
        let _: Option<()> = self
            .run(|mut c| async move { pipe.query_async(&mut c).await })
            .await;
    }

    pub(crate) async fn penalize(&self, range: Cidr) -> Option<()> {
        let key = format!("{P}unknown:{range}");
        let ttl = portcullis_admission::UNKNOWN_USER_MEMORY_SECS as i64;
        let mut pipe = redis::pipe();
        pipe.incr(&key, 1).ignore().expire(&key, ttl).ignore();
        self.run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await
    }

    pub(crate) async fn remember_range(&self, range: Cidr, domain: &str, now: u64) -> Option<()> {
        let key = format!("{P}dr:{range}");
        let ttl = portcullis_admission::DOMAIN_RANGE_TTL_SECS as i64;
        let mut pipe = redis::pipe();
        pipe.hset(&key, domain, now)
            .ignore()
            .expire(&key, ttl)
            .ignore();
        // The set of such ranges, for escalation's "never cover an
        // identified range" (a set member may outlive its hash: that errs
        // toward not blocking).
        pipe.sadd(format!("{P}drs"), range.to_string()).ignore();
        self.run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await
    }

    pub(crate) async fn blocklist(&self, now: u64) -> Option<Vec<(Cidr, BlockEntry)>> {
        let v = self.hash_all(&format!("{P}blocklist")).await?;
        let mut out: Vec<(Cidr, BlockEntry)> = v
            .into_iter()
            .filter_map(|(k, v)| Some((k.parse().ok()?, serde_json::from_str(&v).ok()?)))
            .filter(|(_, e): &(Cidr, BlockEntry)| e.until > now)
            .collect();
        out.sort_by_key(|(c, _)| c.to_string());
        Some(out)
    }

    pub(crate) async fn greylist(
        &self,
        key: &str,
        rules: portcullis_admission::GreylistRules,
        now: u64,
    ) -> Option<portcullis_admission::Greyed> {
        let mut inv = self.greylist.prepare_invoke();
        inv.key(format!("{P}grey:{key}"))
            .arg(now)
            .arg(rules.delay)
            .arg(rules.expiry)
            .arg(rules.pass);
        let (pass, wait): (u8, u64) = self
            .run(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        Some(if pass == 1 {
            portcullis_admission::Greyed::Pass
        } else {
            portcullis_admission::Greyed::Wait(wait)
        })
    }

    pub(crate) async fn identified_within(&self, prefix: Cidr) -> Option<bool> {
        let known = self.hash_all(&format!("{P}known")).await?;
        let drs: Vec<String> = self
            .run(|mut c| async move {
                redis::cmd("SMEMBERS")
                    .arg(format!("{P}drs"))
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let near = |c: &Cidr| prefix.covers(c) || c.covers(&prefix);
        Some(
            known
                .iter()
                .map(|(k, _)| k.as_str())
                .chain(drs.iter().map(String::as_str))
                .filter_map(|k| k.parse::<Cidr>().ok())
                .any(|c| near(&c)),
        )
    }

    pub(crate) async fn known(&self) -> Option<Vec<(Cidr, String)>> {
        let v = self.hash_all(&format!("{P}known")).await?;
        let mut out: Vec<(Cidr, String)> = v
            .into_iter()
            .filter_map(|(k, n)| Some((k.parse().ok()?, n)))
            .collect();
        out.sort_by_key(|(c, _)| c.to_string());
        Some(out)
    }
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

    pub(crate) async fn lookup(&self, ip: IpAddr, range: Cidr, now: u64) -> Option<Lookup> {
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

    pub(crate) async fn charge(
        &self,
        charges: &[Charge],
        now: u64,
    ) -> Option<Result<(), (usize, u64)>> {
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

    pub(crate) async fn take_quota(
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

    pub(crate) async fn reputation(&self, key: &str) -> Option<Option<Reputation>> {
        let k = format!("{P}rep:{key}");
        let fields: Vec<(String, u64)> = self
            .run(|mut c| async move { redis::cmd("HGETALL").arg(k).query_async(&mut c).await })
            .await?;
        Some((!fields.is_empty()).then(|| reputation_from(&fields)))
    }

    pub(crate) async fn record(
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

    pub(crate) async fn reputations(&self) -> Option<Vec<(String, Reputation)>> {
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

    pub(crate) async fn apply(
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
