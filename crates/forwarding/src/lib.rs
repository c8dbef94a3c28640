//! Forwarding (issue 10; the slides' "Forwarding and domain auth"): local
//! aliases that expand to mailboxes and external addresses, with loop
//! protection, and the Sender Rewriting Scheme so that a forwarded
//! message's envelope sender is in our domain (SPF passes at the next
//! hop) while a bounce still finds its way back to the original sender.
//!
//! Plain logic: no sockets, no clock (`now` is passed in). Files are read
//! and written only by the small stores here, atomically.

pub mod aliases;
pub mod srs;

pub use aliases::{AliasError, Aliases, Expansion};
pub use srs::{Srs, SrsError};
