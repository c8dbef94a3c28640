//! The milter client: portcullis as the MTA side of the milter protocol
//! (version 6, as libmilter and Postfix speak it), so that the filters
//! operators already run (clamav-milter, OpenDKIM, OpenARC, OpenDMARC,
//! rspamd's proxy, MIMEDefang) see every message.
//!
//! * `proto.rs` — the packets, without I/O: commands encoded, responses
//!   decoded by a bounded decoder that never panics;
//! * `reply.rs` — a milter's own SMTP reply kept to a valid one;
//! * `edit.rs` — the modifications applied to a message and its envelope;
//! * `client.rs` — one connection to one milter, every wait bounded;
//! * `session.rs` — the stage hooks the way in calls (MAIL, RCPT, the
//!   message), across the configured milters in order.
//!
//! This crate decides nothing about mail on its own: it reports what the
//! milters said. It never writes the queue; `portcullis-pipeline` applies
//! the outcome (refuse, discard, hold, modify) where the message goes.

pub mod client;
pub mod edit;
pub mod proto;
pub mod reply;
mod session;

pub use client::Failure;
pub use edit::EnvelopeEdits;
pub use session::{Client, Mail, Milters, Outcome, Session, probe};
