//! The wall clock, read at the edge only. Plain logic (admission, the
//! retry schedule, quotas) takes `now` as an argument; the rooms that own
//! sockets and files read it here, so there is one definition of "now in
//! Unix seconds" in the workspace.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch (0 if the clock is before it).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now_secs() -> u64 {
    now_us() / 1_000_000
}
