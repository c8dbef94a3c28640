//! The server's housekeeping of its state: drained buckets and ended
//! blocks forgotten every second, the embedded snapshot written at most
//! every five seconds when something changed.

use crate::Store;
use std::time::Duration;
use tracing::warn;

/// Run until the task is dropped; the server takes a last snapshot when it
/// stops.
pub async fn maintain(store: Store) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        if let Err(e) = store.maintain() {
            warn!(event = "state_snapshot_failed", error = %e);
        }
    }
}
