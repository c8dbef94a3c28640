//! When a message is tried again, when the sender hears it is late, and
//! when we give up: pure functions of the attempt count and the message's
//! age, so the schedule is tested with numbers (chasquid's `nextDelay`).

use std::time::Duration;

/// The schedule's knobs, from `[delivery]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// The first retry waits this long; each further one twice as long ...
    pub retry_base: Duration,
    /// ... up to this.
    pub retry_max: Duration,
    /// After this long in the queue, give up and bounce (RFC 5321 §4.5.4.1
    /// suggests 4–5 days).
    pub max_lifetime: Duration,
    /// After this long still undelivered, one "delayed" DSN (RFC 3464).
    pub delay_notice: Duration,
}

impl Schedule {
    pub fn from_config(d: &portcullis_config::Delivery) -> Schedule {
        Schedule {
            retry_base: Duration::from_secs(d.retry_base_secs),
            retry_max: Duration::from_secs(d.retry_max_secs),
            max_lifetime: Duration::from_secs(d.max_lifetime_secs),
            delay_notice: Duration::from_secs(d.delay_notice_secs),
        }
    }

    /// How long to wait after the `attempts`-th failed attempt (1 for the
    /// first): base, 2×base, 4×base, … capped at `retry_max`.
    pub fn retry_delay(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(20);
        self.retry_base
            .saturating_mul(1u32 << doublings)
            .min(self.retry_max)
    }

    /// Whether a message this old has been tried long enough.
    pub fn expired(&self, age: Duration) -> bool {
        age >= self.max_lifetime
    }

    /// Whether a still-waiting message of this age should tell its sender
    /// now (once: `already` says a notice went out).
    pub fn delay_notice_due(&self, age: Duration, already: bool) -> bool {
        !already && age >= self.delay_notice
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> Schedule {
        Schedule {
            retry_base: Duration::from_secs(300),
            retry_max: Duration::from_secs(3600),
            max_lifetime: Duration::from_secs(5 * 86400),
            delay_notice: Duration::from_secs(4 * 3600),
        }
    }

    #[test]
    fn retries_double_from_the_base_up_to_the_cap() {
        let s = schedule();
        let delays: Vec<u64> = (1..=6).map(|n| s.retry_delay(n).as_secs()).collect();
        assert_eq!(delays, vec![300, 600, 1200, 2400, 3600, 3600]);
    }

    #[test]
    fn a_huge_attempt_count_does_not_overflow() {
        assert_eq!(schedule().retry_delay(u32::MAX).as_secs(), 3600);
        let s = Schedule {
            retry_max: Duration::MAX,
            ..schedule()
        };
        assert_eq!(
            s.retry_delay(u32::MAX),
            Duration::from_secs(300) * (1 << 20)
        );
    }

    #[test]
    fn a_message_expires_at_its_lifetime() {
        let s = schedule();
        assert!(!s.expired(Duration::from_secs(5 * 86400 - 1)));
        assert!(s.expired(Duration::from_secs(5 * 86400)));
    }

    #[test]
    fn the_delay_notice_goes_out_once_after_its_age() {
        let s = schedule();
        let four_hours = Duration::from_secs(4 * 3600);
        assert!(!s.delay_notice_due(four_hours - Duration::from_secs(1), false));
        assert!(s.delay_notice_due(four_hours, false));
        assert!(!s.delay_notice_due(four_hours * 2, true));
    }
}
