//! When to ask for a certificate: plain arithmetic on the certificate's
//! validity and the number of failures in a row, with `now` passed in.
//!
//! A certificate is renewed when a third of its life is left (Let's
//! Encrypt's advice for its 90-day certificates: day 60, leaving a month
//! for retries and for an operator to notice). A failure is retried after
//! a delay that doubles with each failure in a row, up to a cap: the CA
//! is not hammered, and the retries still come well before expiry.

use crate::Validity;
use std::time::{Duration, SystemTime};

/// Retry delays after failures in a row: `first`, then doubled each
/// time, never above `cap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// The wait after the `failures`-th failure in a row (1 for the
    /// first).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.first.saturating_mul(1u32 << doublings).min(self.cap)
    }
}

/// When a certificate valid over `v` is due for renewal: when a third of
/// its life is left.
pub fn renew_at(v: Validity) -> SystemTime {
    let life = v
        .not_after
        .duration_since(v.not_before)
        .unwrap_or(Duration::ZERO);
    v.not_after.checked_sub(life / 3).unwrap_or(v.not_before)
}

/// When the next attempt is due: at once without a certificate, after the
/// backoff delay following a failure, else at the renewal time (which may
/// already be past: then at once).
pub fn next_attempt(
    now: SystemTime,
    current: Option<Validity>,
    failures: u32,
    backoff: Backoff,
) -> SystemTime {
    if failures > 0 {
        return now + backoff.delay(failures);
    }
    match current {
        None => now,
        Some(v) => renew_at(v).max(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn valid(from: u64, days: u64) -> Validity {
        Validity {
            not_before: at(from),
            not_after: at(from + days * DAY),
        }
    }

    const BACKOFF: Backoff = Backoff {
        first: Duration::from_secs(300),
        cap: Duration::from_secs(6 * 3600),
    };

    #[test]
    fn a_ninety_day_certificate_is_renewed_on_day_sixty() {
        let issued = 1_800_000_000;
        assert_eq!(renew_at(valid(issued, 90)), at(issued + 60 * DAY));
    }

    #[test]
    fn a_thirty_second_certificate_is_renewed_after_twenty_seconds() {
        let v = Validity {
            not_before: at(1000),
            not_after: at(1030),
        };
        assert_eq!(renew_at(v), at(1020));
    }

    #[test]
    fn a_certificate_not_yet_due_waits_for_its_renewal_time() {
        let now = at(1_800_000_000 + DAY);
        let v = valid(1_800_000_000, 90);
        assert_eq!(next_attempt(now, Some(v), 0, BACKOFF), renew_at(v));
    }

    #[test]
    fn a_missing_or_overdue_certificate_is_asked_for_at_once() {
        let now = at(1_800_000_000);
        assert_eq!(next_attempt(now, None, 0, BACKOFF), now);
        let old = valid(1_700_000_000, 90);
        assert_eq!(next_attempt(now, Some(old), 0, BACKOFF), now);
    }

    #[test]
    fn failures_back_off_doubling_up_to_the_cap() {
        let delays: Vec<u64> = (1..=9).map(|f| BACKOFF.delay(f).as_secs()).collect();
        assert_eq!(
            delays,
            [300, 600, 1200, 2400, 4800, 9600, 19200, 21600, 21600]
        );
        assert_eq!(BACKOFF.delay(u32::MAX), BACKOFF.cap);
    }

    #[test]
    fn after_a_failure_the_retry_waits_even_when_renewal_is_overdue() {
        let now = at(1_800_000_000);
        let old = valid(1_700_000_000, 90);
        assert_eq!(
            next_attempt(now, Some(old), 2, BACKOFF),
            now + Duration::from_secs(600)
        );
    }
}
