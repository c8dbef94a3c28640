//! Repeat offenders (issue 28): a range refused again and again while its
//! pool is full is a client that ignores 4xx replies (RFC 5321 §4.5.4.1
//! asks a client to wait before it tries again; a flood reconnects at
//! once). Past `after` refusals within `window_secs` the range gets a
//! short block on the temporal blocklist, so its next SYNs are dropped in
//! the kernel (where that is on) instead of costing an accept each. The
//! block doubles each time the range comes back, up to `max_block_secs`,
//! and a range that stays quiet for a while starts again from the first
//! length. Decisions only: the caller writes the block.

use portcullis_config::Cidr;
use std::collections::HashMap;

/// `[admission] repeat_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepeatRules {
    /// Refusals within the window that earn a block (0: never).
    pub after: u32,
    pub window_secs: u64,
    /// The first block's length; each later one doubles, up to the max.
    pub block_secs: u64,
    pub max_block_secs: u64,
}

/// Most ranges remembered at once: a flood spread over many ranges costs
/// memory per range, so the stalest are forgotten first.
const MAX_RANGES: usize = 65_536;

#[derive(Clone, Copy, Debug)]
struct Record {
    /// Refusals in the window that began at `since`.
    count: u32,
    since: u64,
    /// Blocks given so far, and when the last one ends.
    strikes: u32,
    blocked_until: u64,
}

#[derive(Debug, Default)]
pub struct RepeatOffenders {
    ranges: HashMap<Cidr, Record>,
}

impl RepeatRules {
    /// The block after `strikes` earlier ones: the first length doubled
    /// per strike, never past the max.
    pub fn block_for(&self, strikes: u32) -> u64 {
        let doubled = self.block_secs.saturating_mul(1u64 << strikes.min(20));
        doubled.min(self.max_block_secs.max(self.block_secs))
    }
}

impl RepeatOffenders {
    /// `range` was refused at `now`; Some(seconds) when it is to be
    /// blocked for that long.
    pub fn refused(&mut self, rules: &RepeatRules, range: Cidr, now: u64) -> Option<u64> {
        if rules.after == 0 {
            return None;
        }
        if self.ranges.len() >= MAX_RANGES && !self.ranges.contains_key(&range) {
            self.forget_stale(rules, now);
        }
        let r = self.ranges.entry(range).or_insert(Record {
            count: 0,
            since: now,
            strikes: 0,
            blocked_until: 0,
        });
        // Quiet for longer than the longest block: a fresh start.
        if now > r.blocked_until.max(r.since) + rules.max_block_secs.max(rules.window_secs) {
            r.strikes = 0;
        }
        if now >= r.since + rules.window_secs {
            (r.count, r.since) = (0, now);
        }
        r.count += 1;
        if r.count < rules.after {
            return None;
        }
        let secs = rules.block_for(r.strikes);
        r.strikes += 1;
        (r.count, r.since, r.blocked_until) = (0, now, now + secs);
        Some(secs)
    }

    /// Full: keep the ranges still counting or blocked; if that frees
    /// less than half, forget them all (a flood over more ranges than
    /// this holds is the kernel's and escalation's to stop). Either way
    /// the next half of the table fills without another pass.
    fn forget_stale(&mut self, rules: &RepeatRules, now: u64) {
        let keep = rules.window_secs.max(rules.max_block_secs);
        self.ranges
            .retain(|_, r| now < r.since.max(r.blocked_until) + keep);
        if self.ranges.len() > MAX_RANGES / 2 {
            self.ranges.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: RepeatRules = RepeatRules {
        after: 5,
        window_secs: 10,
        block_secs: 30,
        max_block_secs: 600,
    };

    fn range(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn a_range_refused_past_the_threshold_within_the_window_is_blocked() {
        let mut r = RepeatOffenders::default();
        let net = range("2001:db8:1:2::/64");
        for t in 0..4 {
            assert_eq!(r.refused(&RULES, net, 100 + t), None);
        }
        assert_eq!(r.refused(&RULES, net, 104), Some(30));
    }

    #[test]
    fn refusals_spread_wider_than_the_window_are_not_repeats() {
        let mut r = RepeatOffenders::default();
        let net = range("192.0.2.7/32");
        for t in 0..20 {
            assert_eq!(
                r.refused(&RULES, net, t * 3),
                None,
                "a client waiting 3 s each time"
            );
        }
    }

    #[test]
    fn a_range_that_comes_back_gets_twice_as_long_up_to_the_max() {
        let mut r = RepeatOffenders::default();
        let net = range("2001:db8:1:2::/64");
        let mut blocks = Vec::new();
        let mut t = 0;
        for _ in 0..7 {
            let got = (0..5).filter_map(|_| r.refused(&RULES, net, t)).last();
            blocks.push(got.unwrap());
            t += got.unwrap();
        }
        assert_eq!(blocks, [30, 60, 120, 240, 480, 600, 600]);
    }

    #[test]
    fn a_range_quiet_for_longer_than_the_longest_block_starts_again() {
        let mut r = RepeatOffenders::default();
        let net = range("2001:db8:1:2::/64");
        let first = (0..5).filter_map(|_| r.refused(&RULES, net, 0)).last();
        assert_eq!(first, Some(30));
        let later = (0..5).filter_map(|_| r.refused(&RULES, net, 5_000)).last();
        assert_eq!(later, Some(30));
    }

    #[test]
    fn off_when_after_is_zero() {
        let mut r = RepeatOffenders::default();
        let rules = RepeatRules { after: 0, ..RULES };
        let net = range("192.0.2.7/32");
        assert!((0..100).all(|_| r.refused(&rules, net, 0).is_none()));
    }

    #[test]
    fn memory_stays_bounded_under_a_rotating_flood() {
        let mut r = RepeatOffenders::default();
        for i in 0..(MAX_RANGES as u32 + 10) {
            let net = Cidr::enclosing(std::net::Ipv4Addr::from(i).into(), 32, 128);
            r.refused(&RULES, net, u64::from(i));
        }
        assert!(r.ranges.len() <= MAX_RANGES);
    }
}
