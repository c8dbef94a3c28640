//! The way out: the router and its couriers. Given a message and its
//! recipients, the router splits them into legs (our Maildirs, an LMTP
//! store, one SMTP transaction per remote domain) and a courier carries
//! each leg, answering one [`RcptOutcome`] per recipient with a typed
//! enhanced status code.
//!
//! This crate does not schedule, retry or bounce (the queue does), and
//! does not decide who may receive mail (the way in does). The queue
//! reaches it through the [`Courier`] trait, so its schedule is tested
//! with a courier made of scripted outcomes.
//!
//! Remote destinations are grouped into sites (`sites.rs`, with the
//! decisions in `portcullis-shaping`): the limits, pauses and reply
//! classes apply per site, and every outcome leaves here classified.

pub mod client;
pub mod dane;
mod mailboxes;
mod maildir;
mod mta_sts;
mod outcome;
mod route;
mod router;
mod sites;
mod validating;

pub use mailboxes::{MailboxDrop, Mailboxes};
pub use maildir::{DeliveryError, LocalDelivery, MaildirStore};
pub use mta_sts::{MtaSts, StsSource};
pub use outcome::{Action, Answer, FailureKind, HostFailure, RcptOutcome, ReplyClass, Status};
pub use route::{DnsRoutes, MxHost, MxResolver, Route};
pub use router::{Destination, ReportIntake, Router, RouterError, TlsOutcomes};
pub use sites::{Deferred, SiteGate, Ticket};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed future, for the traits at this crate's seams.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A message on its way out: what every courier needs of it.
#[derive(Clone, Debug)]
pub struct Parcel {
    /// The queue id, for the log.
    pub id: String,
    /// The envelope sender; empty for `<>`.
    pub sender: String,
    /// The message with our trace headers, CRLF lines.
    pub data: Arc<Vec<u8>>,
    pub smtputf8: bool,
    pub eight_bit: bool,
    /// REQUIRETLS (RFC 8689): only over validated TLS, to a next hop
    /// that offers REQUIRETLS.
    pub require_tls: bool,
}

/// One recipient of a parcel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addressee {
    pub address: String,
    /// Maildir++ folder for local delivery (`Junk`), `None` for the inbox.
    pub folder: Option<String>,
}

/// Recipients that go together in one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leg {
    /// For the log: `mailboxes` or the destination domain.
    pub name: String,
    pub destination: Destination,
    /// Indices into the recipients the legs were made from.
    pub members: Vec<usize>,
}

/// What the queue asks of the way out.
pub trait Courier: Send + Sync {
    /// Split recipients into legs, one transaction each; every recipient
    /// is in exactly one leg.
    fn legs(&self, to: &[Addressee]) -> Vec<Leg>;

    /// Carry one leg: one outcome per member of the leg, in its order.
    fn carry<'a>(
        &'a self,
        parcel: &'a Parcel,
        to: &'a [Addressee],
        leg: &'a Leg,
    ) -> BoxFuture<'a, Vec<RcptOutcome>>;
}
