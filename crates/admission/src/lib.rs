//! Admission: who a sender is, which class of service it gets, and whether
//! the next connection, message, recipient or byte fits that class's
//! budget. This is the method of the "Positive Reputation Class of
//! Service" paper (seeds/002) and the "Rate control" slides (seeds/001):
//!
//! * every unknown sender draws from ONE shared `default` pool, so rotating
//!   through IPv6 addresses buys an attacker nothing;
//! * a sender that identifies itself (SPF-authenticated MAIL FROM domain,
//!   DKIM `d=`, a known-sender range, allocation data) gets a budget of its
//!   own, at the lowest per-sender level;
//! * spam/ham verdicts move it between levels, with hysteresis;
//! * address ranges that delivered authenticated mail for a domain skip the
//!   default pool at connect, and must then authenticate;
//! * a temporal blocklist holds misbehaving ranges out before the greeting.
//!
//! This crate is plain logic: no sockets, no clock, no files. Every
//! function that needs the time takes `now`. The state it decides on lives
//! in [`EmbeddedState`] here, or in Redis at the edge (the server crate),
//! which runs the same arithmetic ([`gcra`]) in a Lua script.

mod embedded;
mod escalation;
pub mod gcra;
mod greylist;
mod identity;
mod policy;
mod repeat;
mod reputation;

pub use embedded::{
    AUTHENTICATED_RANGE_TTL_SECS, BlockEntry, DOMAIN_RANGE_TTL_SECS, EmbeddedState, Lookup,
    RangeFacts, StateCommand, UNKNOWN_USER_MEMORY_SECS,
};
pub use escalation::{Escalated, Escalation, EscalationRules, Exemption};
pub use greylist::{GREYLIST_LUA, Greyed, GreylistRules, Triplet, triplet_key};
pub use identity::{Allocations, AllocationsError, Identity};
pub use policy::{Charge, Concurrency, Deferral, Policy, SenderClass, Slot, Stage};
pub use repeat::{RepeatOffenders, RepeatRules};
pub use reputation::{LevelChange, Reputation, Verdict};

#[cfg(test)]
mod escalation_tests;
#[cfg(test)]
mod tests;
