//! What a transaction tells the counters: the TLS-RPT outcomes of the
//! sessions held to an MTA-STS or DANE policy (RFC 8460), and how each
//! transaction got its connection (opened, reused, a stale one replaced).

use super::Router;
use crate::client;
use crate::outcome::{FailureKind, HostFailure};
use portcullis_metrics::Counter;
use portcullis_tlsrpt::{Failure, PolicyKey};

/// Where the router reports sessions held to an MTA-STS or DANE policy
/// (RFC 8460); the server counts them for `/metrics` and the daily report.
pub trait TlsOutcomes: Send + Sync {
    fn record(&self, policy: PolicyKey, mx: &str, outcome: Result<(), Failure>);
}

impl Router {
    pub(super) fn count_tls(
        &self,
        policy: Option<&PolicyKey>,
        mx: &str,
        outcome: Result<(), Failure>,
    ) {
        if let (Some(o), Some(p)) = (&self.tls_outcomes, policy) {
            o.record(p.clone(), mx, outcome);
        }
    }

    /// Count how a transaction got its connection.
    pub(super) fn count_connection(&self, carried: &client::Carried) {
        let Some(m) = &self.metrics else { return };
        if carried.reused {
            m.inc(Counter::DeliveryConnectionsReused, &[]);
        }
        if carried.opened {
            m.inc(Counter::DeliveryConnectionsOpened, &[]);
        }
        if carried.stale > 0 {
            m.add(
                Counter::DeliveryConnectionsStale,
                &[],
                u64::from(carried.stale),
            );
        }
    }

    /// Count a failed attempt for TLS-RPT by where it failed.
    pub(super) fn count_attempt(&self, held_to: Option<&PolicyKey>, name: &str, f: &HostFailure) {
        match f.kind {
            FailureKind::Tls => self.count_tls(held_to, name, Err(tls_failure(&f.reason))),
            // No session at all: nothing to report.
            FailureKind::Connect => {}
            // TLS held; the server refused the transaction.
            _ => self.count_tls(held_to, name, Ok(())),
        }
    }
}

/// The RFC 8460 result type of a failed TLS step, by its reason.
fn tls_failure(reason: &str) -> Failure {
    if reason.contains("does not offer STARTTLS") {
        Failure::StarttlsNotSupported
    } else {
        Failure::of_handshake(reason)
    }
}
