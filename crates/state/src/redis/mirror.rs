//! What a node keeps of the cluster between decisions: the operator's
//! lists (blocklist, known senders), reloaded whenever their version in
//! `{global}:version` moves, so a connect reads them from memory; and
//! the node's heartbeat, which renews its leases and notices nodes that
//! stopped beating.

use super::{RedisBackend, keys};
use portcullis_admission::BlockEntry;
use portcullis_config::Cidr;
use portcullis_config::clock::now_us;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use tracing::{info, warn};

/// The operator's lists as Redis holds them.
pub(crate) struct Lists {
    pub blocklist: HashMap<Cidr, BlockEntry>,
    pub known: HashMap<Cidr, String>,
}

impl RedisBackend {
    /// The lists, if their version moved since the last load (or this is
    /// the first); None when unchanged or Redis did not answer.
    pub(crate) async fn lists_if_changed(&self) -> Option<Lists> {
        let version: Option<u64> = self
            .command(redis::cmd("GET").arg(keys::global("version")).to_owned())
            .await?;
        let version = version.unwrap_or(0);
        if self.mirrored.load(Ordering::Relaxed) == version {
            return None;
        }
        let mut pipe = redis::pipe();
        pipe.hgetall(keys::global("blocklist"))
            .hgetall(keys::global("known"));
        type Raw = (Vec<(String, String)>, Vec<(String, String)>);
        let (bl, known): Raw = self.pipeline(pipe).await?;
        self.mirrored.store(version, Ordering::Relaxed);
        Some(Lists {
            blocklist: bl
                .into_iter()
                .filter_map(|(k, v)| Some((k.parse().ok()?, serde_json::from_str(&v).ok()?)))
                .collect(),
            known: known
                .into_iter()
                .filter_map(|(k, v)| Some((k.parse().ok()?, v)))
                .collect(),
        })
    }

    /// One heartbeat: renew every lease this node holds, record that it
    /// lives, and forget nodes that stopped beating (their leases have
    /// lapsed by then).
    pub(crate) async fn heartbeat(&self) {
        let now_ms = now_us() / 1000;
        let timeout_ms = self.node_timeout.as_millis() as u64;
        let mut by_set: HashMap<String, Vec<String>> = HashMap::new();
        for (set, member) in self.held.lock().unwrap_or_else(|e| e.into_inner()).values() {
            by_set.entry(set.clone()).or_default().push(member.clone());
        }
        // One call per set: on a cluster the sets live on different slots.
        let renewals = by_set.into_iter().map(|(set, members)| {
            let mut inv = self.scripts.renew.prepare_invoke();
            inv.key(set).arg(now_ms + timeout_ms).arg(timeout_ms);
            for m in members {
                inv.arg(m);
            }
            async move {
                let _: Option<i64> = self.invoke(inv).await;
            }
        });
        futures_util::future::join_all(renewals).await;
        let nodes = keys::global("nodes");
        let mut pipe = redis::pipe();
        pipe.hset(&nodes, &self.node, now_ms)
            .ignore()
            .hgetall(&nodes);
        let Some((seen,)): Option<(Vec<(String, u64)>,)> = self.pipeline(pipe).await else {
            return;
        };
        let (live, gone): (Vec<_>, Vec<_>) = seen
            .into_iter()
            .partition(|(_, at)| at + timeout_ms > now_ms);
        self.live_nodes.store(live.len() as u64, Ordering::Relaxed);
        for (node, at) in gone {
            let removed: Option<i64> = self
                .command(redis::cmd("HDEL").arg(&nodes).arg(&node).to_owned())
                .await;
            if removed == Some(1) {
                warn!(
                    event = "redis_node_gone",
                    node = %node,
                    silent_ms = now_ms.saturating_sub(at),
                    "a node stopped beating: its concurrency leases have lapsed"
                );
            }
        }
    }

    pub(crate) fn node_timeout(&self) -> std::time::Duration {
        self.node_timeout
    }

    pub(crate) fn announce(&self) {
        info!(event = "redis_node", node = %self.node, cluster = self.is_cluster(), "sharing state through Redis");
    }
}
