//! The Redis backend: shared by every node in real time. Each operation
//! runs with a timeout; when Redis does not answer, the caller decides on
//! local state (see `Store`), and this backend says so once in the log and
//! counts it for `/metrics`.
//!
//! Rooms: `conn` reaches the Redis (single, Sentinel, Cluster), `keys`
//! names what is written there, `admit` is the connect decision and the
//! concurrency leases, `mirror` keeps the operator's lists and the node's
//! heartbeat, `sites` the outbound sites' ledger, `ops` holds every
//! other question.

mod admit;
mod conn;
mod containment;
pub(crate) mod keys;
mod mirror;
mod ops;
mod reports;
mod sites;

pub(crate) use admit::{Asked, Shared as SharedOutcome};
pub use ops::AuthCounts;

use crate::scripts::*;
use conn::{Dialer, Shared};
use portcullis_admission::gcra;
use portcullis_config::RedisSettings;
use portcullis_config::clock::now_us;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tracing::{info, warn};

/// How long one Redis operation may take before the node decides alone.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// How often a node without Redis tries to reconnect.
const REDIS_RETRY: Duration = Duration::from_secs(1);

pub(crate) struct RedisBackend {
    dialer: Dialer,
    /// The shared, multiplexed connection; None until dialled or after a
    /// failure (the next operation dials again, at most once a second).
    conn: std::sync::RwLock<Option<Shared>>,
    dialing: tokio::sync::Mutex<()>,
    last_attempt_us: AtomicU64,
    up: AtomicBool,
    errors: AtomicU64,
    scripts: Scripts,
    /// Tells this node's leases from every other node's, and names its
    /// heartbeat.
    node: String,
    node_timeout: Duration,
    leases_taken: AtomicU64,
    /// The leases this node holds, renewed by its heartbeat: a lease
    /// whose node stopped beating lapses within `node_timeout`.
    held: Mutex<HashMap<u64, (String, String)>>,
    /// The `{global}:version` the mirror last loaded.
    mirrored: AtomicU64,
    /// Nodes whose heartbeat was fresh at the last look (for /metrics).
    live_nodes: AtomicU64,
}

struct Scripts {
    admit: redis::Script,
    renew: redis::Script,
    refund: redis::Script,
    record: redis::Script,
    level: redis::Script,
    quota: redis::Script,
    greylist: redis::Script,
    sweep: redis::Script,
    site_take: redis::Script,
    site_pause: redis::Script,
}

impl RedisBackend {
    pub(crate) fn new(settings: &RedisSettings, node: String) -> anyhow::Result<RedisBackend> {
        let with_gcra = |main: &str| redis::Script::new(&format!("{}{main}", gcra::GCRA_FN));
        Ok(RedisBackend {
            dialer: Dialer::new(&settings.target, REDIS_TIMEOUT)?,
            conn: std::sync::RwLock::new(None),
            dialing: tokio::sync::Mutex::new(()),
            last_attempt_us: AtomicU64::new(0),
            up: AtomicBool::new(true),
            errors: AtomicU64::new(0),
            scripts: Scripts {
                admit: with_gcra(ADMIT_LUA),
                renew: redis::Script::new(RENEW_LUA),
                refund: redis::Script::new(REFUND_LUA),
                record: redis::Script::new(RECORD_LUA),
                level: redis::Script::new(LEVEL_LUA),
                quota: redis::Script::new(QUOTA_LUA),
                greylist: redis::Script::new(portcullis_admission::GREYLIST_LUA),
                sweep: redis::Script::new(SWEEP_LUA),
                site_take: redis::Script::new(&format!(
                    "{}{SITE_TAKE_LUA}",
                    portcullis_shaping::ledger::SITE_START_FN
                )),
                site_pause: redis::Script::new(SITE_PAUSE_LUA),
            },
            node,
            node_timeout: settings.node_timeout,
            leases_taken: AtomicU64::new(0),
            held: Mutex::default(),
            mirrored: AtomicU64::new(u64::MAX),
            live_nodes: AtomicU64::new(0),
        })
    }

    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub(crate) fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub(crate) fn live_nodes(&self) -> u64 {
        self.live_nodes.load(Ordering::Relaxed)
    }

    /// Whether keys of different budgets live on different servers, so
    /// that a decision spanning budgets must be split (Redis Cluster).
    pub(crate) fn is_cluster(&self) -> bool {
        self.dialer.is_cluster()
    }

    /// The shared connection, dialling at most once per `REDIS_RETRY`.
    async fn connection(&self) -> Option<Shared> {
        if let Some(c) = &*self.conn.read().unwrap_or_else(|e| e.into_inner()) {
            return Some(c.clone());
        }
        let _one_dialer = self.dialing.lock().await;
        if let Some(c) = &*self.conn.read().unwrap_or_else(|e| e.into_inner()) {
            return Some(c.clone());
        }
        let now = now_us();
        let last = self.last_attempt_us.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < REDIS_RETRY.as_micros() as u64 {
            return None;
        }
        self.last_attempt_us.store(now, Ordering::Relaxed);
        match tokio::time::timeout(REDIS_TIMEOUT * 2, self.dialer.dial(REDIS_TIMEOUT)).await {
            Ok(Ok(c)) => {
                *self.conn.write().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
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

    /// A failure: count it, say so once, and let the next operation dial
    /// again (after a failover, Sentinel names the new master then).
    fn down(&self, why: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.conn.write().unwrap_or_else(|e| e.into_inner()) = None;
        if self.up.swap(false, Ordering::Relaxed) {
            warn!(event = "redis_down", error = %why, "Redis unreachable: deciding on local state until it answers");
        }
    }

    /// Run one operation with a timeout; None (and local state) on failure.
    async fn run<T, F, Fut>(&self, op: F) -> Option<T>
    where
        F: FnOnce(Shared) -> Fut,
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

    /// Run a script invocation.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
    ) -> Option<T> {
        self.run(|mut c| async move { inv.invoke_async(&mut c).await })
            .await
    }

    /// Run a pipeline whose keys share one slot.
    async fn pipeline<T: redis::FromRedisValue>(&self, pipe: redis::Pipeline) -> Option<T> {
        self.run(|mut c| async move { pipe.query_async(&mut c).await })
            .await
    }

    /// Run one command.
    pub(crate) async fn command<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Option<T> {
        self.run(|mut c| async move { cmd.query_async(&mut c).await })
            .await
    }
}
