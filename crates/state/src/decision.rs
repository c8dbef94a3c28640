//! What a connect decision asks of the state and what it answers: the
//! slots and charges a class claims for a client, and the facts of the
//! client's range, decided together so that Redis answers a stranger in
//! one round trip (issue 18).

use crate::lease::Lease;
use portcullis_admission::{Charge, RangeFacts};

/// What a class claims at connect: concurrency slots (in order: the
/// caller finds each in `Outcome::Granted` at its index) and rate
/// charges, taken all or none.
#[derive(Clone, Debug, Default)]
pub struct Claim {
    pub slots: Vec<SlotClaim>,
    pub charges: Vec<Charge>,
}

/// One concurrency slot under a budget (`class:default`, `range:…`,
/// `account:…`), if fewer than `max` are held (0: no limit, a census).
#[derive(Clone, Debug)]
pub struct SlotClaim {
    pub budget: String,
    pub max: u32,
}

/// The answer to a connect decision.
#[derive(Debug)]
pub struct Admitted {
    pub facts: RangeFacts,
    pub outcome: Outcome,
}

#[derive(Debug)]
pub enum Outcome {
    /// Domains vouch for the range and the caller asked to hear it
    /// first: nothing was taken (their class decides, in a second call).
    Vouched,
    /// Every slot (in the claim's order) and every charge.
    Granted(Vec<Slot>),
    /// The claim's slot at this index is full; nothing was taken.
    SlotFull(usize),
    /// The claim's charge at this index does not fit for this many µs;
    /// nothing was taken.
    BucketFull(usize, u64),
}

/// A concurrency slot: this node's count (the census the dashboard
/// reads), and with Redis a lease every node counts against the limit.
/// Given back when dropped.
#[derive(Debug)]
pub struct Slot {
    pub(crate) _local: portcullis_admission::Slot,
    pub(crate) _shared: Option<Lease>,
}
