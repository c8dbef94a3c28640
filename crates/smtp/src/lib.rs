//! The ESMTP server session (RFC 5321) as plain logic: bytes and decisions
//! go in, actions come out. It owns no socket, reads no clock and does no
//! I/O, so tests and fuzzers drive it by feeding values, in the manner of
//! quinn-proto.
//!
//! The driver (in `portcullis-server`) feeds received bytes with
//! [`Session::feed`], then drains [`Session::poll`] until it returns `None`,
//! carrying out each [`Action`]: write a reply, start TLS, ask policy about
//! a sender or recipient, spool a finished message, close. Answers to
//! questions come back as one shape, [`Answer`] (go on, or the reply that
//! refuses), through `Session::answer_*`. What the driver's checks keep
//! per transaction rides in the session's own [`Transaction`], so there is
//! one transaction, not two kept in step.
//!
//! This crate must not know about listeners, the queue, DNS or accounts:
//! those decisions arrive as answers.

pub mod address;
pub mod command;
pub mod framing;
mod received;
pub mod reply;
mod session;

pub use address::{Mailbox, Path};
pub use command::{Body, MailParams, Notify, RcptParams, Ret};
pub use received::{received_header, rfc5322_date};
pub use reply::{Reply, Status};
pub use session::{
    Action, Answer, Credentials, Limits, Peer, Recipient, Role, Session, SessionConfig, TlsInfo,
    Transaction,
};
