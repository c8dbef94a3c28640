//! Certificates from an ACME CA (RFC 8555): the account key and the
//! certificate kept in `DATA/acme/` (files 0600), one issuance at a time
//! answered with TLS-ALPN-01 (RFC 8737), and the schedule that says when
//! to renew (a third of the life left) and how to back off after a
//! failure.
//!
//! What this crate must not do: listen on a socket (the server's HTTPS
//! listener answers the challenge with the certificates [`Challenges`]
//! holds), read the clock in its schedule (callers pass `now`), or log a
//! secret (the account key and the certificate key are written to their
//! files and nowhere else).

mod challenges;
mod issue;
pub mod schedule;
mod store;
mod task;
mod validity;

pub use challenges::{ACME_TLS_ALPN, Challenges};
pub use issue::{Issuer, obtain};
pub use store::{Issued, Store};
pub use task::{AcmeTask, ServedCertificate, Status as AcmeStatus, run as run_acme};
pub use validity::{Validity, validity};

/// Why a certificate could not be had: what the log and the operator read.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("cannot {action} {path}: {error}")]
    File {
        action: &'static str,
        path: String,
        error: std::io::Error,
    },
    #[error("{0}")]
    Stored(String),
    #[error("the ACME server: {0}")]
    Protocol(#[from] instant_acme::Error),
    #[error("cannot make a key or certificate: {0}")]
    Key(String),
    #[error("the order for {names} ended {status}")]
    Order { names: String, status: String },
    #[error("the ACME server offers no tls-alpn-01 challenge for {0}")]
    NoChallenge(String),
    #[error("no answer from the ACME server within {0} seconds")]
    Timeout(u64),
}
