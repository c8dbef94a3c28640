//! Every key portcullis writes in Redis, and the hash tag (`{…}`) that
//! decides its Redis Cluster slot. A decision's keys share one tag
//! wherever the decision must be atomic: a budget's slots and buckets
//! (`{class:default}`, `{id:example.org}`, `{range:2001:db8::/64}`,
//! `{account:alice}`), a range's facts with the range's own budget, an
//! identity's reputation with its budget. What every node reads whole
//! (the blocklist, the known senders) lives under `{global}` and is
//! mirrored in each node's memory, so no connect waits on it.

use portcullis_config::Cidr;

/// Every key portcullis writes starts with this.
pub(crate) const P: &str = "pc:";

/// A key every node shares whole: `blocklist`, `known`, `drs`, `authd`
/// (ranges whose clients logged in, scored by when), `reps`, `version`,
/// `nodes`.
pub(crate) fn global(name: &str) -> String {
    format!("{P}{{global}}:{name}")
}

/// A key of one budget (`class:default`, `id:…`, `range:…`,
/// `account:…`): its concurrency slots and its rate buckets.
pub(crate) fn budget(budget: &str, name: &str) -> String {
    format!("{P}{{{budget}}}:{name}")
}

/// The concurrency slots of a budget: a sorted set of leases.
pub(crate) fn slots(budget_name: &str) -> String {
    budget(budget_name, "slots")
}

/// A rate bucket of a charge.
pub(crate) fn bucket(c: &portcullis_admission::Charge) -> String {
    budget(&c.budget, &format!("rl:{}", c.limit))
}

/// What a range earned: `dr` (its vouching domains), `unknown` (its
/// "user unknown" answers). Same slot as the range's own budget.
pub(crate) fn range(range: Cidr, name: &str) -> String {
    budget(&format!("range:{range}"), name)
}

/// An identity's reputation, in its budget's slot.
pub(crate) fn reputation(identity_key: &str) -> String {
    budget(&format!("id:{identity_key}"), "rep")
}

/// The identity key back from a reputation key (`reps` holds those).
pub(crate) fn identity_of(reputation_key: &str) -> Option<&str> {
    reputation_key
        .strip_prefix(P)?
        .strip_prefix("{id:")?
        .strip_suffix("}:rep")
}

/// A submission account's keys: quota windows, AUTH failures, the
/// addresses it logged in from. One slot, so a quota charge is one call.
pub(crate) fn account(account: &str, name: &str) -> String {
    budget(&format!("account:{account}"), name)
}

/// AUTH failures from one address (or IPv6 /64), across accounts.
pub(crate) fn auth_address(throttle_key: &str) -> String {
    format!("{P}{{auth:{throttle_key}}}:fails")
}

/// A greylisting triplet.
pub(crate) fn greylist(triplet: &str) -> String {
    format!("{P}{{grey:{triplet}}}")
}

/// One report period's keys (`kind` dmarc or tlsrpt, the period's end):
/// the periods the nodes handed in and who sends, in one slot.
pub(crate) fn report(kind: &str, end: u64, name: &str) -> String {
    format!("{P}{{report:{kind}:{end}}}:{name}")
}

/// An account's containment facts (issue 29), in the account's slot:
/// `ct:n` (counters), `ct:nets`, `ct:rcpts` (sorted by when seen),
/// `ct:samples` (queue ids), `ct:contained` (the containment in force).
pub(crate) fn containment(who: &str, name: &str) -> String {
    account(who, &format!("ct:{name}"))
}

/// An outbound site's ledger (issue 30), in one slot: `slots` (the
/// connection leases), `next` (the next start), `pause` (the last pause).
pub(crate) fn site(site: &str, name: &str) -> String {
    budget(&format!("site:{site}"), name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budgets_buckets_and_slots_share_one_hash_tag() {
        let c = portcullis_admission::Charge {
            key: "rl:connections_per_minute:class:default".into(),
            budget: "class:default".into(),
            per_minute: 60,
            cost: 1,
            limit: "connections_per_minute",
            class: "default".into(),
        };
        assert_eq!(bucket(&c), "pc:{class:default}:rl:connections_per_minute");
        assert_eq!(slots("class:default"), "pc:{class:default}:slots");
    }

    #[test]
    fn a_ranges_facts_live_in_its_budgets_slot() {
        let r: Cidr = "2001:db8::/64".parse().unwrap();
        assert_eq!(range(r, "dr"), "pc:{range:2001:db8::/64}:dr");
        assert_eq!(
            slots(&format!("range:{r}")),
            "pc:{range:2001:db8::/64}:slots"
        );
    }

    #[test]
    fn a_reputation_key_gives_back_its_identity() {
        let k = reputation("domain:example.org");
        assert_eq!(identity_of(&k), Some("domain:example.org"));
    }
}
