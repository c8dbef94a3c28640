//! The reports we send: DMARC aggregate reports (RFC 7489 §7.2) and SMTP
//! TLS reports (RFC 8460). Both kinds work the same way: the message path
//! (or the router) hands each observation to a narrow handle made at
//! start ([`DmarcReports`] as `DmarcObservations`, [`TlsReports`] as
//! `TlsOutcomes`); the period so far is kept in memory and saved to
//! `DATA/<kind>/period.json` every minute and at stop; a period ends on a
//! multiple of its interval since the epoch (00:00 UTC for a day) or when
//! the operator runs the job now; each report is composed, DKIM-signed
//! and queued like any message ([`ReportMail`]). With Redis, every node
//! hands its period in at a scheduled end and the node that claims the
//! period merges them and sends: one report per domain and period for
//! the whole cluster.
//!
//! What this crate must not do: decide which domains get a report or
//! what a report says (the plain logic of `portcullis-dmarcrpt` and
//! `portcullis-tlsrpt` does), or read reports others send us (that is
//! `portcullis-reportbox`).

mod dmarc;
mod mail;
mod period;
mod tls;

pub use dmarc::DmarcReports;
pub use mail::ReportMail;
pub use period::{Answer, RunRequests, SavedPeriod};
pub use tls::TlsReports;

use portcullis_config::LiveConfig;
use portcullis_queue::Queue;
use std::sync::Arc;

/// Signs a report with the reporting domain's DKIM key: an empty answer
/// means the domain has no key.
pub trait ReportSigner: Send + Sync {
    fn sign(&self, domain: &str, message: &[u8]) -> Result<String, String>;
}

/// How a report leaves: the config in force, the queue, the signer, and
/// the shared state through which the nodes of a cluster send one
/// report per period between them.
#[derive(Clone)]
pub struct Outbox {
    pub config: LiveConfig,
    pub queue: Queue,
    pub signer: Arc<dyn ReportSigner>,
    pub state: portcullis_state::Store,
}

/// The config's resolver for a periodic task (see
/// [`portcullis_dns::periodic_resolver`]).
pub(crate) fn periodic_resolver(
    config: &portcullis_config::Config,
    every: u64,
    task: &'static str,
) -> Option<portcullis_dns::hickory_resolver::TokioResolver> {
    portcullis_dns::periodic_resolver(&config.dns_nameservers, config.dns_timeout, every, task)
}
