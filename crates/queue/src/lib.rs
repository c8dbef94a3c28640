//! The queue: the only way into the spool ([`Queue::enqueue`]), the
//! delivery schedule (when each message is tried, retried, given up),
//! delay notices, and bounces ([`Queue::bounce`] is the only writer of
//! DSNs). Postfix's queue manager in small: deferred mail waits apart from
//! new mail, so a backlog never slows new mail; the set of messages being
//! delivered at once is bounded; held messages wait for the operator.
//!
//! The spool (`spool.rs`, with its committer and recovery) is the storage;
//! the schedule itself is a pure function (`schedule.rs`); the courier
//! that carries messages is the delivery crate's, reached through its
//! `Courier` trait. This crate does not route or speak SMTP.

mod attempt;
mod bounce;
mod committer;
pub mod dsn;
mod handle;
mod record;
mod recover;
mod schedule;
mod scheduler;
mod spool;

pub use bounce::Bounce;
pub use handle::{Queue, QueueSettings, Suppressing};
pub use portcullis_delivery::ReplyClass;
pub use record::{Envelope, QueuedRecipient};
pub use schedule::Schedule;
pub use scheduler::{QueueState, QueuedMessage};
pub use spool::*;

/// Hears each remote recipient's outcome as an attempt learns it: the
/// one place delivery outcomes leave the queue for the rooms that
/// judge a sender by them (containment counts a submitting account's
/// 5.1.x answers and bounces). Called on the attempt's task: it must
/// return at once (hand the work to a task of its own).
pub trait RecipientOutcomes: Send + Sync {
    fn recipient_outcome(
        &self,
        envelope: &Envelope,
        recipient: &str,
        outcome: &portcullis_delivery::RcptOutcome,
    );
}

#[cfg(test)]
mod tests;
