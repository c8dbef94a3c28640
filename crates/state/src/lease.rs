//! Concurrency slots counted by every node: a lease in a Redis sorted
//! set, scored by when it lapses. Its node's heartbeat pushes that time
//! on; a node that dies stops beating and its leases lapse within the
//! node timeout (issue 18, item 5). A lease is given back, without
//! waiting for the answer, when the connection or session ends.

use crate::redis::RedisBackend;
use std::sync::Arc;

/// A concurrency slot held in Redis; given back when dropped.
pub struct Lease {
    pub(crate) redis: Arc<RedisBackend>,
    /// This node's registry entry (what its heartbeat renews).
    pub(crate) id: u64,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("id", &self.id).finish()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some((set, member)) = self.redis.forget_lease(self.id) else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return; // shutting down: the lease lapses on its own
        };
        let redis = self.redis.clone();
        rt.spawn(async move { redis.release(set, member).await });
    }
}
