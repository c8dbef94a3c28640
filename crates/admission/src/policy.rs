//! From identity and reputation to a class of service, and from a class
//! to the budgets each stage of a session draws on. Limits are checked at
//! the earliest stage that knows them (issue 11, item 2): connect
//! (concurrency, connection rate), MAIL FROM (messages), RCPT
//! (recipients), end of data (bytes).

use crate::{Identity, Reputation};
use portcullis_config::{Admission, Cidr, ClassLimits, Config, IdentityPolicy, ReputationRules};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
pub struct Policy {
    pub classes: BTreeMap<String, ClassLimits>,
    pub rules: ReputationRules,
    pub admission: Admission,
    pub identity: IdentityPolicy,
}

/// The class a sender is served in, and whose budget it draws on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SenderClass {
    pub identity: Identity,
    /// `default`, or the name of a reputation level.
    pub class: String,
    pub limits: ClassLimits,
    /// A budget other than the identity's own: a range that several
    /// domains vouch for draws, at connect, on one budget for the range
    /// with the sum of their limits.
    pub pool: Option<String>,
}

impl SenderClass {
    /// Unknown senders all share the one `default` budget; an identified
    /// sender has its own.
    pub fn budget(&self) -> String {
        if let Some(pool) = &self.pool {
            return pool.clone();
        }
        match &self.identity {
            Identity::Unknown => "class:default".to_owned(),
            id => format!("id:{}", id.key()),
        }
    }

    pub fn is_default(&self) -> bool {
        self.identity == Identity::Unknown
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Connect,
    Mail,
    Rcpt,
    Data,
}

impl Stage {
    /// 421 at connect (the connection closes), 451 later (the paper: a
    /// 4xx, so the sender retries).
    fn deferral_code(self) -> (u16, (u8, u16, u16)) {
        match self {
            Stage::Connect => (421, (4, 7, 0)),
            _ => (451, (4, 7, 1)),
        }
    }
}

/// One rate-limited bucket to draw `cost` units from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charge {
    pub key: String,
    /// The budget the bucket belongs to (`class:default`, `id:…`,
    /// `range:…`): with Redis Cluster, its hash tag, so that one
    /// budget's buckets and slots live in one slot.
    pub budget: String,
    pub per_minute: u64,
    pub cost: u64,
    /// What the limit is, for the deferral text and metrics.
    pub limit: &'static str,
    /// The class whose limit it is, or `range` for the limits every range
    /// has whatever its class.
    pub class: String,
}

/// Why a stage was deferred: the reply and what to count it under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deferral {
    pub code: u16,
    pub status: (u8, u16, u16),
    pub text: String,
    pub class: String,
    pub limit: &'static str,
}

impl Policy {
    pub fn from_config(c: &Config) -> Policy {
        Policy {
            classes: c.classes.clone(),
            rules: c.reputation.clone(),
            admission: c.admission.clone(),
            identity: c.identity.clone(),
        }
    }

    /// The class an identity's reputation record stands for: its level's
    /// name, or `default` for an unidentified range (tracked for quality,
    /// served in the shared pool).
    pub fn class_name(&self, key: &str, rep: &Reputation) -> String {
        if key.starts_with("range:") {
            return "default".to_owned();
        }
        let levels = &self.rules.levels;
        levels
            .get(rep.level as usize)
            .or(levels.last())
            .cloned()
            .unwrap_or_default()
    }

    /// The state key an operator means, as the server stores it: an
    /// address or range (`127.0.0.1`, `2001:db8::/48`) is the reputation of
    /// the identity range that holds it (`range:127.0.0.1/32` with the
    /// default /32 for IPv4, the /64 for IPv6); anything else as
    /// [`Identity::key_of`] reads it.
    pub fn key_of(&self, s: &str) -> String {
        let bare = s.strip_prefix("range:").unwrap_or(s);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return format!("range:{}", self.range_of(ip));
        }
        if let Ok(cidr) = bare.parse::<Cidr>() {
            let p = if cidr.is_ipv4() {
                self.identity.ipv4_prefix
            } else {
                self.identity.ipv6_prefix
            };
            return format!("range:{}", cidr.widened(p));
        }
        Identity::key_of(s)
    }

    /// The range address-based state aggregates by (/64, /32 by default).
    pub fn range_of(&self, ip: IpAddr) -> Cidr {
        Cidr::enclosing(ip, self.identity.ipv4_prefix, self.identity.ipv6_prefix)
    }

    /// The class for an identity at its reputation's level.
    pub fn class_for(&self, identity: &Identity, rep: Option<&Reputation>) -> SenderClass {
        let class = match identity {
            Identity::Unknown => "default".to_owned(),
            _ => {
                let top = self.rules.levels.len().saturating_sub(1);
                let level = rep.map_or(0, |r| r.level as usize).min(top);
                self.rules.levels.get(level).cloned().unwrap_or_default()
            }
        };
        SenderClass {
            identity: identity.clone(),
            limits: self.classes.get(&class).cloned().unwrap_or_default(),
            class,
            pool: None,
        }
    }

    /// The class a range that several domains vouch for is served in at
    /// connect: the paper ("Adjusting Class of Service") sets the
    /// connect-stage limit of a domain-based identity to the sum of the
    /// rates of the domains associated with the prefix. `classes` are the
    /// domains' own classes; the first names the result.
    pub fn shared_range_class(&self, range: Cidr, classes: &[SenderClass]) -> Option<SenderClass> {
        let first = classes.first()?;
        if classes.len() == 1 {
            return Some(first.clone());
        }
        let sum = |f: fn(&ClassLimits) -> Option<u32>| -> Option<u32> {
            // One unlimited domain (no limit, or 0) makes the range unlimited.
            classes
                .iter()
                .map(|c| f(&c.limits).filter(|n| *n > 0))
                .try_fold(0u32, |acc, v| Some(acc.saturating_add(v?)))
        };
        Some(SenderClass {
            limits: ClassLimits {
                max_connections: sum(|l| l.max_connections),
                connections_per_minute: sum(|l| l.connections_per_minute),
                ..first.limits.clone()
            },
            pool: Some(format!("range:{range}")),
            ..first.clone()
        })
    }

    fn charge(
        sc: &SenderClass,
        what: &'static str,
        per_minute: Option<u64>,
        cost: u64,
    ) -> Option<Charge> {
        let per_minute = per_minute.filter(|n| *n > 0)?;
        let budget = sc.budget();
        Some(Charge {
            key: format!("rl:{what}:{budget}"),
            budget,
            per_minute,
            cost,
            limit: what,
            class: sc.class.clone(),
        })
    }

    /// Connect: the class's connections per minute, and for an
    /// unidentified client the generic per-range frequency too. An
    /// identified range (known sender, allocation, domain range) is served
    /// by its class alone: the stranger's per-range limit would cap a good
    /// sender that opens a connection per message.
    pub fn connect_charges(&self, sc: &SenderClass, range: Cidr) -> Vec<Charge> {
        let mut out = Vec::new();
        let per_range = u64::from(self.admission.per_range_connections_per_minute);
        if per_range > 0 && sc.is_default() {
            out.push(Charge {
                key: format!("rl:connections_per_minute:range:{range}"),
                budget: format!("range:{range}"),
                per_minute: per_range,
                cost: 1,
                limit: "connections_per_minute",
                class: "range".to_owned(),
            });
        }
        let cpm = sc.limits.connections_per_minute.map(u64::from);
        out.extend(Self::charge(sc, "connections_per_minute", cpm, 1));
        out
    }

    pub fn message_charges(&self, sc: &SenderClass) -> Vec<Charge> {
        let mpm = sc.limits.messages_per_minute.map(u64::from);
        Self::charge(sc, "messages_per_minute", mpm, 1)
            .into_iter()
            .collect()
    }

    pub fn recipient_charges(&self, sc: &SenderClass) -> Vec<Charge> {
        let rpm = sc.limits.recipients_per_minute.map(u64::from);
        Self::charge(sc, "recipients_per_minute", rpm, 1)
            .into_iter()
            .collect()
    }

    pub fn data_charges(&self, sc: &SenderClass, bytes: u64) -> Vec<Charge> {
        Self::charge(
            sc,
            "bytes_per_minute",
            sc.limits.bytes_per_minute,
            bytes.max(1),
        )
        .into_iter()
        .collect()
    }

    /// Recipients per message: a count, not a rate.
    pub fn recipients_exceeded(&self, sc: &SenderClass, already: usize) -> Option<Deferral> {
        let max = sc.limits.recipients_per_message.filter(|n| *n > 0)?;
        (already >= max as usize).then(|| Deferral {
            // RFC 5321 §4.5.3.1.10: 452 asks for the rest in another
            // transaction.
            code: 452,
            status: (4, 5, 3),
            text: self.text(
                sc,
                &format!("at most {max} recipients per message"),
                "recipients_per_message",
            ),
            class: sc.class.clone(),
            limit: "recipients_per_message",
        })
    }

    /// The 4xx for a full bucket: 421 at connect (the connection closes),
    /// 451 later. The text names the class and the limit, and says how
    /// to get out of the default pool (the paper: "a text payload
    /// indicating the nature of the issue and instructions for
    /// remediation, such as a URI").
    pub fn deferral(&self, stage: Stage, sc: &SenderClass, c: &Charge, retry_us: u64) -> Deferral {
        let secs = retry_us.div_ceil(1_000_000).max(1);
        let what = if c.class == "range" {
            format!(
                "{} {} from your address range; retry in {secs}s",
                c.per_minute,
                c.limit.replace('_', " ")
            )
        } else {
            format!(
                "limit {} {}; retry in {secs}s",
                c.per_minute,
                c.limit.replace('_', " ")
            )
        };
        let (code, status) = stage.deferral_code();
        Deferral {
            code,
            status,
            text: self.text(sc, &what, c.limit),
            class: c.class.clone(),
            limit: c.limit,
        }
    }

    /// Deferral for a full concurrency slot.
    pub fn busy(&self, stage: Stage, sc: &SenderClass, range_wide: bool, max: u32) -> Deferral {
        let (class, what) = if range_wide {
            (
                "range".to_owned(),
                format!("{max} concurrent connections from your address range"),
            )
        } else {
            (
                sc.class.clone(),
                format!("limit {max} concurrent connections"),
            )
        };
        let (code, status) = stage.deferral_code();
        Deferral {
            code,
            status,
            text: self.text(sc, &what, "max_connections"),
            class,
            limit: "max_connections",
        }
    }

    fn text(&self, sc: &SenderClass, what: &str, _limit: &str) -> String {
        let who = if sc.is_default() {
            "class default (shared by all unidentified senders; authenticate with SPF or DKIM to get your own)".to_owned()
        } else {
            format!("class {} for {}", sc.class, sc.identity.key())
        };
        let url = &self.admission.remediation_url;
        if url.is_empty() {
            format!("{who}: {what}")
        } else {
            format!("{who}: {what}; see {url}")
        }
    }
}

/// Concurrent connections per key, on this node. A [`Slot`] holds one
/// until dropped, so a connection task that ends for any reason gives
/// its slot back.
#[derive(Clone, Debug, Default)]
pub struct Concurrency {
    counts: Arc<Mutex<HashMap<String, u32>>>,
}

#[derive(Debug)]
pub struct Slot {
    key: String,
    counts: Arc<Mutex<HashMap<String, u32>>>,
}

impl Concurrency {
    /// Take a slot under `key` if fewer than `max` are held (0: no limit).
    pub fn try_acquire(&self, key: &str, max: u32) -> Option<Slot> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(key.to_owned()).or_insert(0);
        if max > 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            key: key.to_owned(),
            counts: self.counts.clone(),
        })
    }

    /// Count one more under `key` with no limit (a census: the limit is
    /// kept elsewhere, e.g. by leases every node counts).
    pub fn count(&self, key: &str) -> Slot {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry(key.to_owned()).or_insert(0) += 1;
        Slot {
            key: key.to_owned(),
            counts: self.counts.clone(),
        }
    }

    /// Every key held now and how many: for the dashboard.
    pub fn snapshot(&self) -> Vec<(String, u32)> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = counts.iter().map(|(k, n)| (k.clone(), *n)).collect();
        v.sort();
        v
    }

    pub fn held(&self, key: &str) -> u32 {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(key).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}
