//! The suppression list (addresses a remote receiver said do not exist):
//! in memory with a file beside the snapshot (`DATA/state/
//! suppression.json`, written on every change, which is rare), or one
//! Redis hash shared by every node (`pc:{global}:suppressed`, address →
//! entry). Which address goes on it and for how long is the shaping
//! crate's decision; ended entries are skipped when read and removed
//! when listed.

use crate::redis::RedisBackend;
use crate::{Store, write_atomically};
use portcullis_config::clock::now_secs;
use portcullis_shaping::suppress::BoxFuture;
use portcullis_shaping::{Suppression, SuppressionStore};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The embedded list and where it is saved.
#[derive(Clone, Default)]
pub(crate) struct LocalList {
    entries: Arc<Mutex<BTreeMap<String, Suppression>>>,
    path: Option<PathBuf>,
}

impl LocalList {
    /// The list saved at `path` (empty when there is none yet).
    pub(crate) fn load(path: PathBuf) -> anyhow::Result<LocalList> {
        let entries = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", path.display())),
        };
        Ok(LocalList {
            entries: Arc::new(Mutex::new(entries)),
            path: Some(path),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, Suppression>) -> (T, bool)) -> T {
        let mut m = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (v, changed) = f(&mut m);
        if changed && let Some(path) = &self.path {
            match serde_json::to_vec(&*m) {
                Ok(json) => {
                    if let Err(e) = write_atomically(path, &json) {
                        tracing::warn!(event = "suppression_save_failed", error = %e);
                    }
                }
                Err(e) => tracing::warn!(event = "suppression_save_failed", error = %e),
            }
        }
        v
    }
}

/// Where the embedded list lives in the data directory.
pub(crate) fn list_path(data_dir: &Path) -> PathBuf {
    data_dir.join("state").join("suppression.json")
}

fn key() -> String {
    crate::redis::keys::global("suppressed")
}

impl RedisBackend {
    async fn suppress(&self, e: &Suppression) -> Option<()> {
        let json = serde_json::to_string(e).ok()?;
        self.command::<i64>(
            redis::cmd("HSET")
                .arg(key())
                .arg(&e.address)
                .arg(json)
                .to_owned(),
        )
        .await
        .map(|_| ())
    }

    async fn suppressed(&self, address: &str) -> Option<Option<Suppression>> {
        let v: Option<String> = self
            .command(redis::cmd("HGET").arg(key()).arg(address).to_owned())
            .await?;
        Some(v.and_then(|j| serde_json::from_str(&j).ok()))
    }

    async fn unsuppress(&self, address: &str) -> Option<bool> {
        let n: i64 = self
            .command(redis::cmd("HDEL").arg(key()).arg(address).to_owned())
            .await?;
        Some(n > 0)
    }

    async fn suppressions(&self, now: u64) -> Option<Vec<Suppression>> {
        let all: Vec<(String, String)> = self
            .command(redis::cmd("HGETALL").arg(key()).to_owned())
            .await?;
        let mut live = Vec::new();
        let mut ended = Vec::new();
        for (address, json) in all {
            match serde_json::from_str::<Suppression>(&json) {
                Ok(e) if e.active(now) => live.push(e),
                _ => ended.push(address),
            }
        }
        if !ended.is_empty() {
            let _: Option<i64> = self
                .command(redis::cmd("HDEL").arg(key()).arg(ended).to_owned())
                .await;
        }
        Some(live)
    }
}

impl Store {
    /// Put an address on the suppression list (or renew it there).
    pub async fn suppress(&self, entry: Suppression) {
        let e = entry.clone();
        self.decide(|r| async move { r.suppress(&e).await }, |_| ())
            .await;
        // Kept locally too: the answer when Redis does not.
        self.suppression.with(|m| {
            m.insert(entry.address.clone(), entry);
            ((), self.redis.is_none())
        });
    }

    /// The address's entry, if it is suppressed now.
    pub async fn suppressed(&self, address: &str) -> Option<Suppression> {
        let address = address.to_ascii_lowercase();
        let now = now_secs();
        let a = address.clone();
        let found = match &self.redis {
            Some(r) => match r.suppressed(&a).await {
                Some(v) => v,
                None => self.local_entry(&address),
            },
            None => self.local_entry(&address),
        };
        found.filter(|e| e.active(now))
    }

    fn local_entry(&self, address: &str) -> Option<Suppression> {
        self.suppression.with(|m| (m.get(address).cloned(), false))
    }

    /// Take an address off the list; whether it was on it.
    pub async fn unsuppress(&self, address: &str) -> bool {
        let address = address.to_ascii_lowercase();
        let local = self
            .suppression
            .with(|m| (m.remove(&address).is_some(), self.redis.is_none()));
        match &self.redis {
            Some(r) => r.unsuppress(&address).await.unwrap_or(local),
            None => local,
        }
    }

    /// Every address suppressed now, the ended ones dropped.
    pub async fn suppressions(&self) -> Vec<Suppression> {
        let now = now_secs();
        if let Some(r) = &self.redis
            && let Some(v) = r.suppressions(now).await
        {
            return v;
        }
        self.suppression.with(|m| {
            let before = m.len();
            m.retain(|_, e| e.active(now));
            let changed = m.len() != before && self.redis.is_none();
            (m.values().cloned().collect(), changed)
        })
    }
}

impl SuppressionStore for Store {
    fn suppress(&self, entry: Suppression) -> BoxFuture<'_, ()> {
        Box::pin(Store::suppress(self, entry))
    }
}
