//! Quotas counted per accepted recipient (OP25B draft §4.4.3: a spammer
//! sends few messages with many recipients each, so counting messages
//! misses them). Fixed windows on UTC hour and day boundaries, so the
//! reply can say exactly when the quota resets.
//!
//! Plain logic: the caller passes the time in seconds since the epoch.

use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaLimits {
    pub per_hour: u32,
    pub per_day: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    Hour,
    Day,
}

impl Window {
    pub const BOTH: [Window; 2] = [Window::Hour, Window::Day];

    pub fn seconds(self) -> u64 {
        match self {
            Window::Hour => 3600,
            Window::Day => 86400,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Window::Hour => "hour",
            Window::Day => "day",
        }
    }
}

impl QuotaLimits {
    /// Each window with its limit.
    pub fn windows(self) -> [(Window, u32); 2] {
        [(Window::Hour, self.per_hour), (Window::Day, self.per_day)]
    }
}

impl QuotaExceeded {
    /// `window` is full at `now`: it resets at the window's end.
    pub fn at(window: Window, limit: u32, now: u64) -> QuotaExceeded {
        QuotaExceeded {
            window,
            limit,
            resets_at: window_start(window, now) + window.seconds(),
        }
    }
}

/// The start of the UTC hour or day holding `now`.
pub fn window_start(window: Window, now: u64) -> u64 {
    now - now % window.seconds()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaExceeded {
    pub window: Window,
    pub limit: u32,
    /// Seconds since the epoch when the window ends.
    pub resets_at: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Count {
    window_start: u64,
    used: u32,
}

impl Count {
    fn current(&mut self, window: Window, now: u64) -> &mut u32 {
        let start = window_start(window, now);
        if self.window_start != start {
            *self = Count {
                window_start: start,
                used: 0,
            };
        }
        &mut self.used
    }
}

/// Hour and day counters per key (an account).
#[derive(Debug, Default)]
pub struct RecipientQuota {
    counts: HashMap<String, [Count; 2]>,
}

impl RecipientQuota {
    /// Take `n` units for `key` if both windows have room; otherwise take
    /// nothing and say which window is full.
    pub fn try_take(
        &mut self,
        key: &str,
        limits: QuotaLimits,
        n: u32,
        now: u64,
    ) -> Result<(), QuotaExceeded> {
        let counts = self.counts.entry(key.to_owned()).or_default();
        let windows = limits.windows();
        for (i, (w, limit)) in windows.iter().enumerate() {
            let used = *counts[i].current(*w, now);
            if used.saturating_add(n) > *limit {
                return Err(QuotaExceeded::at(*w, *limit, now));
            }
        }
        for (i, (w, _)) in windows.iter().enumerate() {
            *counts[i].current(*w, now) += n;
        }
        Ok(())
    }

    /// Drop counters whose day is over.
    pub fn prune(&mut self, now: u64) {
        let today = window_start(Window::Day, now);
        self.counts.retain(|_, c| c[1].window_start >= today);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: QuotaLimits = QuotaLimits {
        per_hour: 100,
        per_day: 150,
    };
    const T0: u64 = 1_795_520_000; // 2026-11-24 11:33:20 UTC

    #[test]
    fn the_hundred_and_first_recipient_in_an_hour_is_refused_with_reset_time() {
        let mut q = RecipientQuota::default();
        for _ in 0..100 {
            q.try_take("a", LIMITS, 1, T0).unwrap();
        }
        let e = q.try_take("a", LIMITS, 1, T0).unwrap_err();
        assert_eq!(e.window, Window::Hour);
        assert_eq!(e.resets_at, T0 - T0 % 3600 + 3600);
    }

    #[test]
    fn the_next_hour_has_room_until_the_day_is_full() {
        let mut q = RecipientQuota::default();
        for _ in 0..100 {
            q.try_take("a", LIMITS, 1, T0).unwrap();
        }
        let next_hour = T0 - T0 % 3600 + 3600;
        for _ in 0..50 {
            q.try_take("a", LIMITS, 1, next_hour).unwrap();
        }
        assert_eq!(
            q.try_take("a", LIMITS, 1, next_hour).unwrap_err().window,
            Window::Day
        );
    }

    #[test]
    fn accounts_are_counted_apart() {
        let mut q = RecipientQuota::default();
        for _ in 0..100 {
            q.try_take("a", LIMITS, 1, T0).unwrap();
        }
        assert!(q.try_take("b", LIMITS, 1, T0).is_ok());
    }

    #[test]
    fn a_refused_take_uses_nothing() {
        let mut q = RecipientQuota::default();
        q.try_take("a", LIMITS, 99, T0).unwrap();
        assert!(q.try_take("a", LIMITS, 5, T0).is_err());
        assert!(q.try_take("a", LIMITS, 1, T0).is_ok());
    }
}
