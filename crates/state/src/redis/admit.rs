//! The connect decision in Redis and the leases it takes. With one Redis
//! (or a Sentinel-watched master) the range's facts, its slot and bucket
//! and the class's slot and buckets are one script call: one round trip.
//! On a Redis Cluster the range's keys and a class's keys hash to
//! different slots, so the decision is one call per budget, the range's
//! first (it carries the lookup); a later call that refuses gives back
//! the leases the earlier ones took and refunds their charges, so the
//! decision is still all or none, though for the moment between the
//! calls another node may see the earlier charges.

use super::RedisBackend;
use super::keys;
use crate::decision::SlotClaim;
use crate::lease::Lease;
use portcullis_admission::{Charge, DOMAIN_RANGE_TTL_SECS, RangeFacts, gcra};
use portcullis_config::Cidr;
use portcullis_config::clock::now_us;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// What the caller asks besides the claim: read the range's facts, and
/// whether to stop before taking anything when domains vouch for it.
#[derive(Clone, Copy)]
pub(crate) struct Asked {
    pub range: Cidr,
    pub stop_if_vouched: bool,
}

/// Redis's answer, before local slots are added to the leases.
pub(crate) enum Shared {
    Vouched,
    /// One lease per claimed slot with a limit (others are local only),
    /// in claim order.
    Granted(Vec<Lease>),
    SlotFull(usize),
    BucketFull(usize, u64),
}

/// One script call's share of a decision: indices into the claim.
struct Part<'a> {
    lookup: bool,
    slots: Vec<(usize, &'a SlotClaim)>,
    charges: Vec<(usize, &'a Charge)>,
}

impl RedisBackend {
    /// Decide a connect: None when Redis did not answer (decide locally).
    /// Without `asked`, no range is looked up (a slot taken mid-session).
    pub(crate) async fn admit(
        this: &Arc<Self>,
        asked: Option<Asked>,
        slots: &[SlotClaim],
        charges: &[Charge],
    ) -> Option<(RangeFacts, Shared)> {
        let mut facts = RangeFacts::default();
        let mut leases = Vec::new();
        let mut charged: Vec<&Charge> = Vec::new();
        for part in this.parts(asked.map(|a| a.range), slots, charges) {
            let Some(answer) = this.call(asked, &part).await else {
                this.refund(&charged).await;
                return None;
            };
            if part.lookup {
                facts = answer.facts;
            }
            let refused = match answer.status {
                1 => Some(Shared::Vouched),
                2 => Some(Shared::SlotFull(part.slots[answer.index - 1].0)),
                3 => Some(Shared::BucketFull(
                    part.charges[answer.index - 1].0,
                    answer.retry,
                )),
                _ => None,
            };
            if let Some(r) = refused {
                this.refund(&charged).await;
                return Some((facts, r)); // `leases` are given back on drop
            }
            leases.extend(answer.leases);
            charged.extend(part.charges.iter().map(|(_, c)| *c));
        }
        leases.sort_by_key(|(i, _)| *i);
        Some((
            facts,
            Shared::Granted(leases.into_iter().map(|(_, l)| l).collect()),
        ))
    }

    /// The calls a decision takes: one, or on a cluster one per budget
    /// (hash tag), the range's first.
    fn parts<'a>(
        &self,
        range: Option<Cidr>,
        slots: &'a [SlotClaim],
        charges: &'a [Charge],
    ) -> Vec<Part<'a>> {
        let limited = slots.iter().enumerate().filter(|(_, s)| s.max > 0);
        if !self.is_cluster() {
            return vec![Part {
                lookup: range.is_some(),
                slots: limited.collect(),
                charges: charges.iter().enumerate().collect(),
            }];
        }
        let mut budgets: Vec<String> = range.map(|r| format!("range:{r}")).into_iter().collect();
        for b in limited
            .clone()
            .map(|(_, s)| &s.budget)
            .chain(charges.iter().map(|c| &c.budget))
        {
            if !budgets.contains(b) {
                budgets.push(b.clone());
            }
        }
        budgets
            .iter()
            .enumerate()
            .map(|(n, b)| Part {
                lookup: n == 0 && range.is_some(),
                slots: limited.clone().filter(|(_, s)| &s.budget == b).collect(),
                charges: charges
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| &c.budget == b)
                    .collect(),
            })
            .filter(|p| p.lookup || !p.slots.is_empty() || !p.charges.is_empty())
            .collect()
    }

    async fn call(self: &Arc<Self>, asked: Option<Asked>, part: &Part<'_>) -> Option<Answer> {
        let now = now_us();
        let now_ms = now / 1000;
        let expiry = now_ms + self.node_timeout.as_millis() as u64;
        let member = format!(
            "{}:{}",
            self.node,
            self.leases_taken.fetch_add(1, Ordering::Relaxed)
        );
        let mut inv = self.scripts.admit.prepare_invoke();
        let lookup = asked.filter(|_| part.lookup);
        if let Some(a) = lookup {
            inv.key(keys::range(a.range, "dr"))
                .key(keys::range(a.range, "unknown"));
        }
        let sets: Vec<String> = part
            .slots
            .iter()
            .map(|(_, s)| keys::slots(&s.budget))
            .collect();
        for s in &sets {
            inv.key(s);
        }
        for (_, c) in &part.charges {
            inv.key(keys::bucket(c));
        }
        let mode = match lookup {
            None => "0",
            Some(a) if a.stop_if_vouched => "2",
            Some(_) => "1",
        };
        inv.arg(now)
            .arg(mode)
            .arg(part.slots.len())
            .arg(part.charges.len())
            .arg(now_ms)
            .arg(expiry)
            .arg(&member);
        for (_, s) in &part.slots {
            inv.arg(s.max);
        }
        for (_, c) in &part.charges {
            inv.arg(gcra::interval_us(c.per_minute)).arg(c.cost);
        }
        type Raw = (u8, usize, u64, Vec<(String, u64)>, u32);
        let (status, index, retry, dr, unknown_users): Raw = self.invoke(inv).await?;
        let leases = if status == 0 {
            part.slots
                .iter()
                .zip(sets)
                .map(|((i, _), set)| (*i, self.remember_lease(set, member.clone())))
                .collect()
        } else {
            Vec::new()
        };
        Some(Answer {
            status,
            index,
            retry,
            facts: facts(dr, unknown_users),
            leases,
        })
    }

    /// Undo charges of earlier calls of a decision that then refused.
    async fn refund(&self, charged: &[&Charge]) {
        if charged.is_empty() {
            return;
        }
        let now = now_us();
        let mut by_budget: Vec<(&str, Vec<&Charge>)> = Vec::new();
        for c in charged {
            match by_budget.iter_mut().find(|(b, _)| *b == c.budget) {
                Some((_, v)) => v.push(c),
                None => by_budget.push((&c.budget, vec![c])),
            }
        }
        for (_, group) in by_budget {
            let mut inv = self.scripts.refund.prepare_invoke();
            inv.arg(now);
            for c in group {
                inv.key(keys::bucket(c))
                    .arg(gcra::interval_us(c.per_minute))
                    .arg(c.cost);
            }
            let _: Option<i64> = self.invoke(inv).await;
        }
    }

    /// Note a lease this node took, for its heartbeat to renew.
    pub(crate) fn remember_lease(self: &Arc<Self>, set: String, member: String) -> Lease {
        let id = self.leases_taken.fetch_add(1, Ordering::Relaxed);
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, (set, member));
        Lease {
            redis: self.clone(),
            id,
        }
    }

    /// The lease's set and member, no longer renewed.
    pub(crate) fn forget_lease(&self, id: u64) -> Option<(String, String)> {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
    }

    /// Give a lease back (its holder ended).
    pub(crate) async fn release(&self, set: String, member: String) {
        let _: Option<i64> = self
            .command(redis::cmd("ZREM").arg(set).arg(member).to_owned())
            .await;
    }
}

struct Answer {
    status: u8,
    index: usize,
    retry: u64,
    facts: RangeFacts,
    leases: Vec<(usize, Lease)>,
}

fn facts(dr: Vec<(String, u64)>, unknown_users: u32) -> RangeFacts {
    let now = now_us() / 1_000_000;
    RangeFacts {
        domains: dr
            .into_iter()
            .filter(|(_, seen)| seen + DOMAIN_RANGE_TTL_SECS > now)
            .map(|(d, _)| d)
            .collect(),
        unknown_users,
    }
}
