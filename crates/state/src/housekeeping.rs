//! The server's housekeeping of its state: drained buckets and ended
//! blocks forgotten every second, the embedded snapshot written at most
//! every five seconds when something changed, and (with Redis) the shared
//! blocklist swept of ended blocks every minute, so a long flood of
//! blocks does not leave its hash growing for ever.

use crate::Store;
use std::time::Duration;
use tracing::{info, warn};

/// Ticks of five seconds between two sweeps of the shared state.
const SWEEP_EVERY: u32 = 12;

/// Run until the task is dropped; the server takes a last snapshot when it
/// stops.
pub async fn maintain(store: Store) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut ticks = 0u32;
    loop {
        tick.tick().await;
        if let Err(e) = store.maintain() {
            warn!(event = "state_snapshot_failed", error = %e);
        }
        ticks = (ticks + 1) % SWEEP_EVERY;
        if ticks == 1
            && let Some(removed) = store.sweep_shared().await
            && removed > 0
        {
            info!(
                event = "blocklist_swept",
                removed, "ended blocks removed from the shared blocklist"
            );
        }
    }
}
