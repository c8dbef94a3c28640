//! Following the cluster: the operator's lists mirrored from Redis, a
//! counter that moves on every blocklist change (for whoever mirrors it
//! outside this process, the kernel's nftables set), and this node's
//! heartbeat. A change made on any node moves `{global}:version`; every
//! node polls it four times a second and reloads the lists when it moved,
//! so a block made on one node is enforced by every node within a
//! quarter of a second, on one Redis, a Sentinel pair or a Redis Cluster
//! alike (no pub/sub to route).

use crate::Store;
use std::time::Duration;

/// How often a node looks for list changes.
const POLL: Duration = Duration::from_millis(250);

impl Store {
    /// A receiver that sees a new value on every blocklist change.
    pub fn blocklist_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Load the lists from Redis if they changed; count a blocklist
    /// change for the kernel's mirror.
    pub(crate) async fn reload_lists(&self) {
        let Some(r) = &self.redis else {
            return;
        };
        if let Some(lists) = r.lists_if_changed().await
            && self.local().replace_lists(lists.blocklist, lists.known)
        {
            self.changes.send_modify(|n| *n += 1);
        }
    }

    /// With Redis: keep the lists' mirror and the heartbeat until the
    /// task is dropped. Without Redis: returns at once.
    pub async fn follow_cluster(self) {
        let Some(r) = self.redis.clone() else {
            return;
        };
        r.announce();
        let beat_every = (r.node_timeout() / 4).max(Duration::from_millis(250));
        let mut poll = tokio::time::interval(POLL);
        let mut beat = tokio::time::interval(beat_every);
        loop {
            tokio::select! {
                _ = poll.tick() => self.reload_lists().await,
                _ = beat.tick() => r.heartbeat().await,
            }
        }
    }
}
