//! The rules of the cache of idle SMTP sessions, as plain logic with the
//! clock passed in (milliseconds from any fixed start): which session a
//! transaction may take again, which one is kept after its transaction,
//! and when an idle one is closed. Postfix's connection cache is the
//! model: a session waits at most `smtp_connection_cache_time_limit` (2 s)
//! for its next transaction, is reused for at most
//! `smtp_connection_reuse_time_limit` (300 s) from its start, and carries
//! at most its site's `messages_per_connection`.
//!
//! A session is taken only under the key it was made with: what makes two
//! connections equivalent (the address, our source address and HELO name,
//! the TLS rules it was opened under) is the key's business, not this
//! file's. The cache is bounded; a full cache gives up the session that
//! would expire first.

/// How long sessions live in the cache, and how many it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CacheSettings {
    /// A session waits this long for its next transaction (0: no reuse).
    pub idle_ms: u64,
    /// No session is reused this long after it was opened.
    pub max_age_ms: u64,
    /// Idle sessions at most, over every key.
    pub capacity: usize,
}

/// Idle sessions kept at most, over every destination: each holds a
/// socket, and a busy destination needs no more than its site's
/// connections.
const IDLE_SESSIONS: usize = 256;

impl CacheSettings {
    /// How long sessions are kept (`[delivery] connection_cache_secs`,
    /// `connection_reuse_secs`).
    pub(crate) fn of(d: &portcullis_config::Delivery) -> CacheSettings {
        CacheSettings {
            idle_ms: d.connection_cache_secs.saturating_mul(1000),
            max_age_ms: d.connection_reuse_secs.saturating_mul(1000),
            capacity: IDLE_SESSIONS,
        }
    }
}

/// A session between transactions, with what the rules need of it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Used<C> {
    pub conn: C,
    /// When it was opened.
    pub opened: u64,
    /// Transactions it has carried.
    pub transactions: u32,
}

/// Why a session is not kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Reuse is off (`connection_cache_secs = 0`).
    Off,
    /// It carried its site's `messages_per_connection`.
    Spent,
    /// It is older than the reuse time.
    TooOld,
}

/// What became of a session given back.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Put<C> {
    /// Kept; to make room, the cache gave up this one (to be closed).
    Kept { evicted: Option<C> },
    /// Not kept: to be closed.
    Refused { conn: C, why: Refusal },
}

struct Idle<K, C> {
    key: K,
    used: Used<C>,
    /// When it was given back.
    since: u64,
}

/// Idle sessions by key.
pub(crate) struct ConnectionCache<K, C> {
    settings: CacheSettings,
    idle: Vec<Idle<K, C>>,
}

impl<K: PartialEq, C> ConnectionCache<K, C> {
    pub fn new(settings: CacheSettings) -> Self {
        ConnectionCache {
            settings,
            idle: Vec::new(),
        }
    }

    /// When an idle session must be closed: after the idle time, or at
    /// the end of its reuse time if that comes first.
    fn deadline(&self, i: &Idle<K, C>) -> u64 {
        (i.since.saturating_add(self.settings.idle_ms))
            .min(i.used.opened.saturating_add(self.settings.max_age_ms))
    }

    /// A session made under `key` that may carry a transaction now: the
    /// one given back last (the likeliest to be still open).
    pub fn take(&mut self, key: &K, now: u64) -> Option<Used<C>> {
        let at = self
            .idle
            .iter()
            .enumerate()
            .filter(|(_, i)| i.key == *key && self.deadline(i) > now)
            .max_by_key(|(_, i)| i.since)
            .map(|(at, _)| at)?;
        Some(self.idle.swap_remove(at).used)
    }

    /// A session whose transaction ended healthy, given back under `key`;
    /// `per_connection` is its site's `messages_per_connection` (0: no
    /// limit).
    pub fn put(&mut self, key: K, used: Used<C>, per_connection: u32, now: u64) -> Put<C> {
        let why = if self.settings.idle_ms == 0 || self.settings.capacity == 0 {
            Some(Refusal::Off)
        } else if per_connection > 0 && used.transactions >= per_connection {
            Some(Refusal::Spent)
        } else if now >= used.opened.saturating_add(self.settings.max_age_ms) {
            Some(Refusal::TooOld)
        } else {
            None
        };
        if let Some(why) = why {
            return Put::Refused {
                conn: used.conn,
                why,
            };
        }
        let evicted = if self.idle.len() >= self.settings.capacity {
            self.idle
                .iter()
                .enumerate()
                .min_by_key(|(_, i)| self.deadline(i))
                .map(|(at, _)| at)
                .map(|at| self.idle.swap_remove(at).used.conn)
        } else {
            None
        };
        self.idle.push(Idle {
            key,
            used,
            since: now,
        });
        Put::Kept { evicted }
    }

    /// The idle sessions whose time is up, out of the cache (to be closed).
    pub fn expired(&mut self, now: u64) -> Vec<C> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < self.idle.len() {
            if self.deadline(&self.idle[at]) <= now {
                out.push(self.idle.swap_remove(at).used.conn);
            } else {
                at += 1;
            }
        }
        out
    }

    /// When the next idle session's time is up.
    pub fn next_expiry(&self) -> Option<u64> {
        self.idle.iter().map(|i| self.deadline(i)).min()
    }

    /// Every idle session, out of the cache (to be closed).
    pub fn drain(&mut self) -> Vec<C> {
        self.idle.drain(..).map(|i| i.used.conn).collect()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.idle.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: CacheSettings = CacheSettings {
        idle_ms: 2_000,
        max_age_ms: 300_000,
        capacity: 3,
    };

    fn used(conn: u32, opened: u64, transactions: u32) -> Used<u32> {
        Used {
            conn,
            opened,
            transactions,
        }
    }

    fn kept(p: Put<u32>) -> Option<u32> {
        match p {
            Put::Kept { evicted } => evicted,
            Put::Refused { why, .. } => panic!("refused: {why:?}"),
        }
    }

    #[test]
    fn a_session_given_back_is_taken_again_within_the_idle_time() {
        let mut c = ConnectionCache::new(SETTINGS);
        kept(c.put("mx", used(1, 0, 1), 0, 1_000));
        assert_eq!(c.take(&"mx", 2_999), Some(used(1, 0, 1)));
        // Taken means gone: one transaction at a time per session.
        assert_eq!(c.take(&"mx", 2_999), None);
    }

    #[test]
    fn a_session_is_taken_only_under_its_own_key() {
        let mut c = ConnectionCache::new(SETTINGS);
        kept(c.put(("mx", "opportunistic"), used(1, 0, 1), 0, 0));
        // The same host under stricter TLS rules needs its own session.
        assert_eq!(c.take(&("mx", "dane"), 10), None);
        assert_eq!(c.take(&("mx2", "opportunistic"), 10), None);
        assert_eq!(
            c.take(&("mx", "opportunistic"), 10).map(|u| u.conn),
            Some(1)
        );
    }

    #[test]
    fn a_session_idle_for_the_idle_time_is_not_taken_and_expires() {
        let mut c = ConnectionCache::new(SETTINGS);
        kept(c.put("mx", used(1, 0, 1), 0, 1_000));
        assert_eq!(c.next_expiry(), Some(3_000));
        assert_eq!(c.take(&"mx", 3_000), None);
        assert_eq!(c.expired(2_999), Vec::<u32>::new());
        assert_eq!(c.expired(3_000), vec![1]);
        assert_eq!(c.len(), 0);
        assert_eq!(c.next_expiry(), None);
    }

    #[test]
    fn a_session_that_carried_its_sites_messages_per_connection_is_not_kept() {
        let mut c = ConnectionCache::new(SETTINGS);
        assert_eq!(
            c.put("mx", used(1, 0, 5), 5, 10),
            Put::Refused {
                conn: 1,
                why: Refusal::Spent
            }
        );
        // One message a connection: never kept.
        assert!(matches!(
            c.put("mx", used(2, 0, 1), 1, 10),
            Put::Refused {
                why: Refusal::Spent,
                ..
            }
        ));
        kept(c.put("mx", used(3, 0, 4), 5, 10));
    }

    #[test]
    fn no_messages_per_connection_means_no_limit_on_transactions() {
        let mut c = ConnectionCache::new(SETTINGS);
        kept(c.put("mx", used(1, 0, 10_000), 0, 10));
    }

    #[test]
    fn a_session_past_its_reuse_time_is_neither_kept_nor_taken() {
        let mut c = ConnectionCache::new(SETTINGS);
        assert!(matches!(
            c.put("mx", used(1, 0, 1), 0, 300_000),
            Put::Refused {
                why: Refusal::TooOld,
                ..
            }
        ));
        // Given back a second before its reuse time ends: it expires
        // then, before its idle time would.
        kept(c.put("mx", used(2, 0, 1), 0, 299_000));
        assert_eq!(c.next_expiry(), Some(300_000));
        assert_eq!(c.take(&"mx", 300_000), None);
    }

    #[test]
    fn an_idle_time_of_zero_keeps_nothing() {
        let mut c = ConnectionCache::new(CacheSettings {
            idle_ms: 0,
            ..SETTINGS
        });
        assert!(matches!(
            c.put("mx", used(1, 0, 1), 0, 0),
            Put::Refused {
                why: Refusal::Off,
                ..
            }
        ));
    }

    #[test]
    fn a_full_cache_gives_up_the_session_that_would_expire_first() {
        let mut c = ConnectionCache::new(SETTINGS);
        kept(c.put("a", used(1, 0, 1), 0, 100));
        kept(c.put("b", used(2, 0, 1), 0, 50));
        kept(c.put("c", used(3, 0, 1), 0, 200));
        assert_eq!(kept(c.put("d", used(4, 0, 1), 0, 300)), Some(2));
        assert_eq!(c.len(), 3);
        assert_eq!(c.take(&"b", 300), None);
    }

    #[test]
    fn of_two_idle_sessions_the_one_given_back_last_is_taken_first() {
        let mut c = ConnectionCache::new(SETTINGS);
        kept(c.put("mx", used(1, 0, 1), 0, 100));
        kept(c.put("mx", used(2, 0, 1), 0, 200));
        assert_eq!(c.take(&"mx", 300).map(|u| u.conn), Some(2));
        assert_eq!(c.take(&"mx", 300).map(|u| u.conn), Some(1));
    }
}
