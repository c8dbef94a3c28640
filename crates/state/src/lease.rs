//! Concurrency slots counted by every node: a lease in a Redis sorted set,
//! given back when the connection or session that holds it ends.

use crate::redis::RedisBackend;
use std::sync::Arc;
use std::time::Duration;

/// How long a shared concurrency slot lives without its connection
/// ending: a node that dies frees its slots after this. A session that
/// runs longer stops counting (the limit errs toward admitting).
pub(crate) const LEASE: Duration = Duration::from_secs(15 * 60);

/// A concurrency slot held in Redis; given back when dropped.
pub struct Lease {
    pub(crate) redis: Arc<RedisBackend>,
    pub(crate) key: String,
    pub(crate) member: String,
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
        rt.spawn(async move { redis.release(key, member).await });
    }
}
