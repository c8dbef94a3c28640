//! The TLS-ALPN-01 answers (RFC 8737 §3) while an order is being
//! validated: for each name, a self-signed certificate carrying the
//! acmeIdentifier extension. The server's certificate resolver asks here
//! when a client offers the `acme-tls/1` protocol, and only then.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls::sign::CertifiedKey;

/// The ALPN protocol a validation server offers (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Challenge certificates by lower-case DNS name.
#[derive(Default)]
pub struct Challenges {
    by_name: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl Challenges {
    /// The certificate answering the challenge for `name`, if one is
    /// pending.
    pub fn get(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let map = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&name.trim_end_matches('.').to_ascii_lowercase())
            .cloned()
    }

    pub(crate) fn put(&self, name: &str, cert: Arc<CertifiedKey>) {
        let mut map = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(name.to_ascii_lowercase(), cert);
    }

    pub(crate) fn remove(&self, name: &str) {
        let mut map = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&name.to_ascii_lowercase());
    }
}
