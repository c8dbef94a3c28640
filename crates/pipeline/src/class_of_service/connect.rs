//! The class of service at connect, before any session exists: the
//! blocklist, then the class the address earns (a range some domains
//! vouch for, a known sender, an allocation holder, or the default pool),
//! its concurrency and connection rate. Unidentified clients also meet
//! the generic per-range limits; identified ranges are served by their
//! class alone (issue 17: a good sender opening a connection per message
//! must not be capped like a stranger).

use super::{ClassOfService, Gate};
use portcullis_admission::{BlockEntry, Identity, Policy, SenderClass, Stage};
use portcullis_config::Cidr;
use portcullis_metrics::Counter;
use portcullis_smtp::{Reply, Status};
use portcullis_state::{Claim, Outcome, SlotClaim};
use std::net::IpAddr;

/// What a class claims at connect: (a stranger) the range's slot, then
/// the class's, last; the range's and the class's connection rates.
fn connect_claim(
    policy: &Policy,
    class: &SenderClass,
    range: Cidr,
    take_slots: bool,
    charge: bool,
) -> Claim {
    let mut slots = Vec::new();
    if take_slots {
        if class.is_default() {
            slots.push(SlotClaim {
                budget: format!("range:{range}"),
                max: policy.admission.per_range_max_connections,
            });
        }
        slots.push(SlotClaim {
            budget: class.budget(),
            max: class.limits.max_connections.unwrap_or(0),
        });
    }
    Claim {
        slots,
        charges: if charge {
            policy.connect_charges(class, range)
        } else {
            Vec::new()
        },
    }
}

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
    /// The listener's `max_sessions`: the server is full.
    MaxSessions,
}

impl RefusalCause {
    /// The `outcome` label of `portcullis_connections_total`.
    pub fn outcome(self) -> &'static str {
        match self {
            RefusalCause::Blocklist => "refused_blocklist",
            RefusalCause::Class => "refused_class",
            RefusalCause::Range => "refused_range",
            RefusalCause::MaxSessions => "refused_max_sessions",
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
        self.admit(ip, true, true).await
    }

    /// The blocklist alone, from memory and without waiting: what the
    /// accept loop asks before it makes a task for a connection, so that
    /// a blocked client costs one write and a close.
    pub fn refuse_listed(&self, ip: IpAddr) -> Option<Refusal> {
        let (at, entry) = self.state.listed(ip).blocked?;
        Some(self.blocked(self.policy().range_of(ip), at, &entry))
    }

    /// The server is full (`max_sessions`): the refusal the accept loop
    /// writes, counted and summed up in the refusal log like the others
    /// rather than logged one line per connection (a flood fills the
    /// sessions first).
    pub fn refuse_busy(&self, ip: IpAddr) -> Refusal {
        Refusal {
            reply: Reply::new(
                421,
                Status(4, 7, 0),
                "Too many connections, try again later",
            ),
            cause: RefusalCause::MaxSessions,
            class: "max_sessions".to_owned(),
            range: self.policy().range_of(ip),
        }
    }

    /// The connect stage for the policy service: the blocklist and the
    /// class, and (`charge_rate`) the class's connection rate, but no
    /// concurrency slot: Postfix never says when a connection ends, so
    /// concurrency stays with Postfix's own limits.
    pub async fn classify(&self, ip: IpAddr, charge_rate: bool) -> Result<Gate, Refusal> {
        self.admit(ip, false, charge_rate).await
    }

    /// The lists come from memory; the class the address earns by itself
    /// (a stranger's costs no round trip) is then claimed in one decision
    /// with the range's facts. Only when domains vouch for the range does
    /// their class decide instead, in a second decision (issue 18).
    async fn admit(&self, ip: IpAddr, take_slots: bool, charge: bool) -> Result<Gate, Refusal> {
        let policy = self.policy();
        let range = policy.range_of(ip);
        let listed = self.state.listed(ip);
        if let Some((at, entry)) = &listed.blocked {
            return Err(self.blocked(range, *at, entry));
        }
        let mut class = self.class_by_address(ip, listed.known).await;
        let mut claim = connect_claim(&policy, &class, range, take_slots, charge);
        let mut admitted = self.state.admit(range, &claim, true).await;
        if matches!(admitted.outcome, Outcome::Vouched) {
            if let Some(c) = self.class_by_domains(range, &admitted.facts.domains).await {
                class = c;
            }
            claim = connect_claim(&policy, &class, range, take_slots, charge);
            admitted = self.state.admit(range, &claim, false).await;
        }
        let refused = |reply, cause| Refusal {
            reply,
            cause,
            class: class.class.clone(),
            range,
        };
        let slots = match admitted.outcome {
            Outcome::Granted(slots) => slots,
            Outcome::SlotFull(i) => {
                let max = claim.slots[i].max;
                let (cause, d) = if claim.slots[i].budget == class.budget() {
                    self.pool_exhausted(&class, range).await;
                    (
                        RefusalCause::Class,
                        policy.busy(Stage::Connect, &class, false, max),
                    )
                } else {
                    (
                        RefusalCause::Range,
                        policy.busy(Stage::Connect, &class, true, max),
                    )
                };
                self.refused_again(&class, range).await;
                return Err(refused(self.deferred(Stage::Connect, &d), cause));
            }
            Outcome::BucketFull(i, retry) => {
                let c = &claim.charges[i];
                let d = policy.deferral(Stage::Connect, &class, c, retry);
                let cause = if c.class == "range" {
                    RefusalCause::Range
                } else {
                    self.pool_exhausted(&class, range).await;
                    RefusalCause::Class
                };
                self.refused_again(&class, range).await;
                return Err(refused(self.deferred(Stage::Connect, &d), cause));
            }
            // A second decision never stops for vouching domains.
            Outcome::Vouched => Vec::new(),
        };
        if take_slots {
            self.metrics
                .inc(Counter::Admissions, &[("class", &class.class)]);
        }
        let mut slots = slots.into_iter();
        Ok(Gate {
            census: take_slots.then(|| self.by_class.count(&class.class)),
            unknown_users: admitted.facts.unknown_users,
            vouching_domains: admitted.facts.domains,
            class_slot: slots.next_back(),
            _range_slot: slots.next(),
            class,
            range,
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

    /// The class the address earns by itself: a known-sender range, then
    /// allocation data, else the default pool (no round trip).
    async fn class_by_address(&self, ip: IpAddr, known: Option<String>) -> SenderClass {
        let identity = match (known, self.allocations.holder(ip)) {
            (Some(name), _) => Identity::Known(name),
            (None, Some(holder)) => Identity::Allocation(holder.to_owned()),
            (None, None) => Identity::Unknown,
        };
        self.class_of(identity).await
    }

    /// A range that delivered authenticated mail for domains is served by
    /// their classes, summed when several share it (the paper,
    /// "Adjusting Class of Service"); it outranks the address's own.
    async fn class_by_domains(&self, range: Cidr, domains: &[String]) -> Option<SenderClass> {
        if domains.is_empty() {
            return None;
        }
        let mut classes = Vec::with_capacity(domains.len());
        for d in domains {
            classes.push(self.class_of(Identity::Domain(d.clone())).await);
        }
        self.policy().shared_range_class(range, &classes)
    }

    /// A stranger found the default pool full: its range counts toward
    /// blocking the wider prefix.
    async fn pool_exhausted(&self, class: &SenderClass, range: Cidr) {
        if class.is_default() {
            self.escalate(range).await;
        }
    }
}
