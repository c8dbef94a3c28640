//! Brute-force throttling of SMTP AUTH, per client address and per
//! account. Each failure from an address doubles the delay before the next
//! answer to it; enough failures lock that address out for a while. An
//! account that collects failures from many addresses (a botnet with a
//! stolen list) is locked for every address that has not logged in to it
//! successfully before, so its owner, on a known address, still gets in
//! and a stranger on a fresh address does not.
//!
//! Plain logic: the caller passes `now`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct ThrottleConfig {
    /// Delay after the first failure; doubles with each further one.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Failures from one address (IPv6: one /64) before it is locked.
    pub address_lock_after: u32,
    /// Failures on one account, from any addresses, before it is locked
    /// for addresses it has not been used from.
    pub account_lock_after: u32,
    /// How long a lock lasts, and how long failures are remembered.
    pub lock_for: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            address_lock_after: 10,
            account_lock_after: 30,
            lock_for: Duration::from_secs(900),
        }
    }
}

impl ThrottleConfig {
    /// How long an address an account logged in from stays "known" (and
    /// so passes an account lock): about a day with the default lock.
    pub fn known_for(&self) -> Duration {
        self.lock_for * 96
    }
}

/// What to do with an authentication attempt before checking it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthGate {
    /// Check the password; if it is wrong, wait `delay_on_failure` before
    /// answering.
    Check { delay_on_failure: Duration },
    /// Refuse without checking until `until`.
    Locked { until: Instant },
}

#[derive(Clone, Debug)]
struct Failures {
    count: u32,
    last: Instant,
}

#[derive(Debug, Default)]
pub struct AuthThrottle {
    config: ThrottleConfig,
    by_address: HashMap<IpAddr, Failures>,
    by_account: HashMap<String, Failures>,
    /// Account → addresses it has logged in from, with when.
    known: HashMap<String, HashMap<IpAddr, Instant>>,
}

/// IPv6 clients rotate through their /64 at will: count them as one.
pub fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

/// The gate from the failures still remembered, as (count, when they
/// are forgotten) for the client's address and for the account, and
/// whether the account has logged in from this address before. The same
/// rule whether the counts are this node's or a cluster's.
pub fn decide(
    c: &ThrottleConfig,
    address: Option<(u32, Instant)>,
    account: Option<(u32, Instant)>,
    known: bool,
) -> AuthGate {
    if let Some((_, until)) = address.filter(|(n, _)| *n >= c.address_lock_after) {
        return AuthGate::Locked { until };
    }
    if let Some((_, until)) = account.filter(|(n, _)| *n >= c.account_lock_after && !known) {
        return AuthGate::Locked { until };
    }
    let n = address.map_or(0, |(n, _)| n);
    AuthGate::Check {
        delay_on_failure: c
            .base_delay
            .saturating_mul(1u32 << n.min(20))
            .min(c.max_delay),
    }
}

impl AuthThrottle {
    pub fn config(&self) -> &ThrottleConfig {
        &self.config
    }

    pub fn new(config: ThrottleConfig) -> AuthThrottle {
        AuthThrottle {
            config,
            ..Default::default()
        }
    }

    fn live<'a>(&self, f: Option<&'a Failures>, now: Instant) -> Option<&'a Failures> {
        f.filter(|f| now.saturating_duration_since(f.last) < self.config.lock_for)
    }

    pub fn gate(&self, ip: IpAddr, account: &str, now: Instant) -> AuthGate {
        let lock_for = self.config.lock_for;
        let ip = key(ip);
        let counts = |f: Option<&Failures>| self.live(f, now).map(|f| (f.count, f.last + lock_for));
        let known = self
            .known
            .get(&account.to_ascii_lowercase())
            .is_some_and(|m| m.contains_key(&ip));
        decide(
            &self.config,
            counts(self.by_address.get(&ip)),
            counts(self.by_account.get(&account.to_ascii_lowercase())),
            known,
        )
    }

    pub fn record_failure(&mut self, ip: IpAddr, account: &str, now: Instant) {
        let lock_for = self.config.lock_for;
        for f in [
            self.by_address.entry(key(ip)).or_insert(Failures {
                count: 0,
                last: now,
            }),
            self.by_account
                .entry(account.to_ascii_lowercase())
                .or_insert(Failures {
                    count: 0,
                    last: now,
                }),
        ] {
            if now.saturating_duration_since(f.last) >= lock_for {
                f.count = 0;
            }
            f.count += 1;
            f.last = now;
        }
    }

    pub fn record_success(&mut self, ip: IpAddr, account: &str, now: Instant) {
        let ip = key(ip);
        self.by_address.remove(&ip);
        self.known
            .entry(account.to_ascii_lowercase())
            .or_default()
            .insert(ip, now);
    }

    /// Forget what has expired; call now and then to bound memory.
    pub fn prune(&mut self, now: Instant) {
        let keep = self.config.lock_for;
        self.by_address
            .retain(|_, f| now.saturating_duration_since(f.last) < keep);
        self.by_account
            .retain(|_, f| now.saturating_duration_since(f.last) < keep);
        let known_for = self.config.known_for();
        for m in self.known.values_mut() {
            m.retain(|_, t| now.saturating_duration_since(*t) < known_for);
        }
        self.known.retain(|_, m| !m.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn delay_doubles_with_each_failure_up_to_the_cap() {
        let mut t = AuthThrottle::new(ThrottleConfig::default());
        let now = Instant::now();
        let mut delays = Vec::new();
        for _ in 0..6 {
            if let AuthGate::Check { delay_on_failure } = t.gate(ip("192.0.2.1"), "a@x.test", now) {
                delays.push(delay_on_failure.as_millis());
            }
            t.record_failure(ip("192.0.2.1"), "a@x.test", now);
        }
        assert_eq!(delays, vec![100, 200, 400, 800, 1600, 2000]);
    }

    #[test]
    fn an_address_is_locked_after_repeated_failures_and_others_are_not() {
        let mut t = AuthThrottle::new(ThrottleConfig::default());
        let now = Instant::now();
        for _ in 0..10 {
            t.record_failure(ip("192.0.2.1"), "a@x.test", now);
        }
        assert!(matches!(
            t.gate(ip("192.0.2.1"), "a@x.test", now),
            AuthGate::Locked { .. }
        ));
        assert!(matches!(
            t.gate(ip("198.51.100.9"), "a@x.test", now),
            AuthGate::Check { .. }
        ));
    }

    #[test]
    fn an_ipv6_slash_64_counts_as_one_address() {
        let mut t = AuthThrottle::new(ThrottleConfig::default());
        let now = Instant::now();
        for i in 0..10 {
            t.record_failure(ip(&format!("2001:db8:1:2::{i:x}")), "a@x.test", now);
        }
        assert!(matches!(
            t.gate(ip("2001:db8:1:2::ffff"), "b@x.test", now),
            AuthGate::Locked { .. }
        ));
    }

    #[test]
    fn a_botnet_locks_the_account_for_strangers_but_not_its_owner() {
        let mut t = AuthThrottle::new(ThrottleConfig::default());
        let now = Instant::now();
        t.record_success(ip("203.0.113.5"), "a@x.test", now);
        for i in 0..30 {
            t.record_failure(ip(&format!("198.51.100.{i}")), "a@x.test", now);
        }
        assert!(matches!(
            t.gate(ip("192.0.2.200"), "a@x.test", now),
            AuthGate::Locked { .. }
        ));
        assert!(matches!(
            t.gate(ip("203.0.113.5"), "a@x.test", now),
            AuthGate::Check { .. }
        ));
    }

    #[test]
    fn locks_expire() {
        let mut t = AuthThrottle::new(ThrottleConfig::default());
        let now = Instant::now();
        for _ in 0..10 {
            t.record_failure(ip("192.0.2.1"), "a@x.test", now);
        }
        let later = now + Duration::from_secs(901);
        assert!(matches!(
            t.gate(ip("192.0.2.1"), "a@x.test", later),
            AuthGate::Check { .. }
        ));
        t.prune(later);
        assert!(t.by_address.is_empty());
    }
}
