//! Changes to the blocklist, for whoever mirrors it outside this process
//! (the kernel's nftables set). A change made here bumps a counter at
//! once; with Redis it is also published on `pc:blocklist`, and every
//! node that follows the channel bumps its own counter, so a block made
//! on any node reaches every node's kernel within a round trip.

use crate::Store;
use crate::redis::P;
use futures_util::StreamExt as _;
use std::time::Duration;
use tracing::warn;

/// How long a node waits before subscribing again after Redis went away.
const RESUBSCRIBE: Duration = Duration::from_secs(1);

impl Store {
    /// A receiver that sees a new value on every blocklist change.
    pub fn blocklist_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub(crate) async fn blocklist_changed(&self) {
        self.changes.send_modify(|n| *n += 1);
        if let Some(r) = &self.redis {
            r.publish(&format!("{P}blocklist")).await;
        }
    }

    /// With Redis: follow the other nodes' blocklist changes until the
    /// task is dropped (subscribing again after an outage, and counting a
    /// change then, since some may have been missed). Without Redis:
    /// returns at once.
    pub async fn follow_cluster(self) {
        let Some(r) = self.redis.clone() else {
            return;
        };
        loop {
            match r.client().get_async_pubsub().await {
                Ok(mut sub) => {
                    if sub.subscribe(format!("{P}blocklist")).await.is_ok() {
                        self.changes.send_modify(|n| *n += 1);
                        let mut messages = sub.on_message();
                        while messages.next().await.is_some() {
                            self.changes.send_modify(|n| *n += 1);
                        }
                    }
                }
                Err(e) => warn!(event = "redis_subscribe_failed", error = %e),
            }
            tokio::time::sleep(RESUBSCRIBE).await;
        }
    }
}
