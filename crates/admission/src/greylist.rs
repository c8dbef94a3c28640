//! Greylisting for the default pool (issue 21): whether a triplet (the
//! sender's range, its domain, the recipient) passes now. The first try
//! waits `delay`; a retry between `delay` and `expiry` passes, and the
//! triplet then passes for `pass` (refreshed at every use). Only unknown
//! senders are asked: identified ones never wait.
//!
//! Plain logic with the clock passed in; `GREYLIST_LUA` is the same rule
//! for the Redis backend (the state crate's suite runs both).

use portcullis_config::Cidr;
use serde::{Deserialize, Serialize};

/// The rule's times, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GreylistRules {
    pub delay: u64,
    pub expiry: u64,
    pub pass: u64,
}

impl GreylistRules {
    pub fn from_config(g: &portcullis_config::Greylist) -> GreylistRules {
        GreylistRules {
            delay: g.delay_secs,
            expiry: g.expiry_secs,
            pass: g.pass_days * 86_400,
        }
    }
}

/// What is remembered of a triplet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Triplet {
    pub first_seen: u64,
    pub passed: bool,
    /// Forgotten after this.
    pub until: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Greyed {
    Pass,
    /// Try again in this many seconds.
    Wait(u64),
}

/// The key of a triplet: the sender's range, its domain (`<>` for the
/// null sender), the recipient, lower-cased.
pub fn triplet_key(range: Cidr, sender: Option<&str>, recipient: &str) -> String {
    let domain = sender
        .map(|s| s.rsplit_once('@').map_or(s, |(_, d)| d))
        .unwrap_or("<>");
    format!(
        "{range}|{}|{}",
        domain.to_ascii_lowercase(),
        recipient.to_ascii_lowercase()
    )
}

impl GreylistRules {
    /// The answer for a triplet last seen as `seen`, and what to remember.
    pub fn decide(&self, seen: Option<Triplet>, now: u64) -> (Greyed, Triplet) {
        let passed = |first_seen| Triplet {
            first_seen,
            passed: true,
            until: now + self.pass,
        };
        match seen.filter(|t| t.until > now) {
            Some(t) if t.passed => (Greyed::Pass, passed(t.first_seen)),
            Some(t) if now >= t.first_seen + self.delay => (Greyed::Pass, passed(t.first_seen)),
            Some(t) => (Greyed::Wait(t.first_seen + self.delay - now), t),
            None => {
                let first = Triplet {
                    first_seen: now,
                    passed: false,
                    until: now + self.expiry,
                };
                (Greyed::Wait(self.delay), first)
            }
        }
    }
}

/// `decide` for Redis, atomic on one hash. KEYS[1]: the triplet. ARGV:
/// now, delay, expiry, pass. Returns {1, 0} to pass, {0, seconds} to wait.
pub const GREYLIST_LUA: &str = r#"
local now = tonumber(ARGV[1])
local delay, expiry, pass = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local v = redis.call('HMGET', KEYS[1], 'first', 'passed')
if v[1] then
  local first = tonumber(v[1])
  if v[2] == '1' or now >= first + delay then
    redis.call('HSET', KEYS[1], 'passed', '1')
    redis.call('EXPIRE', KEYS[1], pass)
    return {1, 0}
  end
  return {0, first + delay - now}
end
redis.call('HSET', KEYS[1], 'first', now, 'passed', '0')
redis.call('EXPIRE', KEYS[1], expiry)
return {0, delay}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    const R: GreylistRules = GreylistRules {
        delay: 300,
        expiry: 4 * 3600,
        pass: 36 * 86_400,
    };

    #[test]
    fn the_first_try_waits_the_delay() {
        let (g, t) = R.decide(None, 1000);
        assert_eq!(g, Greyed::Wait(300));
        assert_eq!(
            (t.first_seen, t.passed, t.until),
            (1000, false, 1000 + 4 * 3600)
        );
    }

    #[test]
    fn a_retry_before_the_delay_still_waits_the_rest() {
        let (_, t) = R.decide(None, 1000);
        assert_eq!(R.decide(Some(t), 1100).0, Greyed::Wait(200));
    }

    #[test]
    fn a_retry_after_the_delay_passes_and_is_remembered() {
        let (_, t) = R.decide(None, 1000);
        let (g, t) = R.decide(Some(t), 1300);
        assert_eq!(g, Greyed::Pass);
        assert!(t.passed && t.until == 1300 + R.pass);
        assert_eq!(
            R.decide(Some(t), 1300 + 86_400).0,
            Greyed::Pass,
            "a day later"
        );
    }

    #[test]
    fn a_retry_after_the_expiry_starts_over() {
        let (_, t) = R.decide(None, 1000);
        assert_eq!(R.decide(Some(t), 1000 + 4 * 3600).0, Greyed::Wait(300));
    }

    #[test]
    fn the_triplet_is_range_domain_and_recipient() {
        let range: Cidr = "2001:db8:1:2::/64".parse().unwrap();
        assert_eq!(
            triplet_key(range, Some("Alice@Example.ORG"), "Bob@Local.Test"),
            "2001:db8:1:2::/64|example.org|bob@local.test"
        );
        assert_eq!(
            triplet_key(range, None, "b@l.test"),
            "2001:db8:1:2::/64|<>|b@l.test"
        );
    }
}
