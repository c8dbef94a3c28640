//! The class of service at connect, before any session exists: the
//! blocklist, then the class the address earns (a range some domains
//! vouch for, a known sender, an allocation holder, or the default pool),
//! its concurrency and connection rate. Unidentified clients also meet
//! the generic per-range limits; identified ranges are served by their
//! class alone (issue 17: a good sender opening a connection per message
//! must not be capped like a stranger).

use super::{ClassOfService, Gate};
use portcullis_admission::{BlockEntry, Identity, Lookup, SenderClass, Stage};
use portcullis_config::Cidr;
use portcullis_metrics::Counter;
use portcullis_smtp::{Reply, Status};
use std::net::IpAddr;

/// Why a client was refused before its session, for metrics and the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalCause {
    /// The temporal blocklist holds the range.
    Blocklist,
    /// The class's concurrency or connection rate (the default pool for
    /// strangers).
    Class,
    /// The generic per-range limits of an unidentified range.
    Range,
}

impl RefusalCause {
    /// The `outcome` label of `portcullis_connections_total`.
    pub fn outcome(self) -> &'static str {
        match self {
            RefusalCause::Blocklist => "refused_blocklist",
            RefusalCause::Class => "refused_class",
            RefusalCause::Range => "refused_range",
        }
    }
}

/// A refusal at connect: the reply to write before closing, and what to
/// count it under.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub reply: Reply,
    pub cause: RefusalCause,
    /// The class the client would have been served in (`blocklist` when
    /// it never got that far).
    pub class: String,
    pub range: Cidr,
}

impl ClassOfService {
    /// Before the greeting: the blocklist, the range's limits, the class.
    pub async fn connect(&self, ip: IpAddr) -> Result<Gate, Refusal> {
        let policy = self.policy();
        let range = policy.range_of(ip);
        let found = self.state.lookup(ip, range).await;
        if let Some((listed, entry)) = &found.blocked {
            return Err(self.blocked(range, *listed, entry));
        }
        let class = self.connect_class(ip, range, &found).await;
        let refused = |reply, cause| Refusal {
            reply,
            cause,
            class: class.class.clone(),
            range,
        };
        let range_slot = if class.is_default() {
            let max = policy.admission.per_range_max_connections;
            match self.slot(&format!("range:{range}"), max).await {
                Some(s) => Some(s),
                None => {
                    let d = policy.busy(Stage::Connect, &class, true, max);
                    return Err(refused(
                        self.deferred(Stage::Connect, &d),
                        RefusalCause::Range,
                    ));
                }
            }
        } else {
            None
        };
        let class_slot = match self.class_slot(Stage::Connect, &class).await {
            Ok(s) => s,
            Err(r) => {
                self.pool_exhausted(&class, range).await;
                return Err(refused(r, RefusalCause::Class));
            }
        };
        let charges = policy.connect_charges(&class, range);
        if let Err((i, retry)) = self.state.charge(&charges).await {
            let d = policy.deferral(Stage::Connect, &class, &charges[i], retry);
            let cause = if charges[i].class == "range" {
                RefusalCause::Range
            } else {
                self.pool_exhausted(&class, range).await;
                RefusalCause::Class
            };
            return Err(refused(self.deferred(Stage::Connect, &d), cause));
        }
        self.metrics
            .inc(Counter::Admissions, &[("class", &class.class)]);
        Ok(Gate {
            census: self.by_class.try_acquire(&class.class, 0),
            unknown_users: found.unknown_users,
            vouching_domains: found.domains,
            class,
            range,
            _range_slot: range_slot,
            class_slot: Some(class_slot),
        })
    }

    /// The connect stage for the policy service: the blocklist and the
    /// class, and (`charge_rate`) the class's connection rate, but no
    /// concurrency slot: Postfix never says when a connection ends, so
    /// concurrency stays with Postfix's own limits.
    pub async fn classify(&self, ip: IpAddr, charge_rate: bool) -> Result<Gate, Refusal> {
        let policy = self.policy();
        let range = policy.range_of(ip);
        let found = self.state.lookup(ip, range).await;
        if let Some((listed, entry)) = &found.blocked {
            return Err(self.blocked(range, *listed, entry));
        }
        let class = self.connect_class(ip, range, &found).await;
        if charge_rate {
            let charges = policy.connect_charges(&class, range);
            if let Err((i, retry)) = self.state.charge(&charges).await {
                let d = policy.deferral(Stage::Connect, &class, &charges[i], retry);
                let cause = if charges[i].class == "range" {
                    RefusalCause::Range
                } else {
                    RefusalCause::Class
                };
                return Err(Refusal {
                    reply: self.deferred(Stage::Connect, &d),
                    cause,
                    class: class.class.clone(),
                    range,
                });
            }
        }
        Ok(Gate {
            census: None,
            unknown_users: found.unknown_users,
            vouching_domains: found.domains,
            class,
            range,
            _range_slot: None,
            class_slot: None,
        })
    }

    fn blocked(&self, range: Cidr, listed: Cidr, entry: &BlockEntry) -> Refusal {
        let labels = [
            ("class", "blocklist"),
            ("limit", "blocklist"),
            ("stage", "connect"),
        ];
        self.metrics.inc(Counter::Deferrals, &labels);
        let left = entry
            .until
            .saturating_sub(portcullis_config::clock::now_secs());
        let text = format!("{listed} is blocked for another {left}s: {}", entry.reason);
        Refusal {
            reply: Reply::new(421, Status(4, 7, 0), text),
            cause: RefusalCause::Blocklist,
            class: "blocklist".to_owned(),
            range,
        }
    }

    /// The class the address earns before it says anything: a range that
    /// delivered authenticated mail for domains is served by their
    /// classes, summed when several share it (the paper, "Adjusting Class
    /// of Service"); then a known-sender range; then allocation data.
    async fn connect_class(&self, ip: IpAddr, range: Cidr, found: &Lookup) -> SenderClass {
        if !found.domains.is_empty() {
            let mut classes = Vec::with_capacity(found.domains.len());
            for d in &found.domains {
                classes.push(self.class_of(Identity::Domain(d.clone())).await);
            }
            if let Some(c) = self.policy().shared_range_class(range, &classes) {
                return c;
            }
        }
        let identity = match (&found.known, self.allocations.holder(ip)) {
            (Some(name), _) => Identity::Known(name.clone()),
            (None, Some(holder)) => Identity::Allocation(holder.to_owned()),
            (None, None) => Identity::Unknown,
        };
        self.class_of(identity).await
    }

    /// A stranger found the default pool full: its range counts toward
    /// blocking the wider prefix.
    async fn pool_exhausted(&self, class: &SenderClass, range: Cidr) {
        if class.is_default() {
            self.escalate(range).await;
        }
    }
}
