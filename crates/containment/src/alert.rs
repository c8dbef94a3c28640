//! The operator's alert: one JSON body per containment, signed with
//! HMAC-SHA256 for a webhook, and the back-off between tries. Sending
//! is the caller's (it must never hold mail up).

use crate::assess::Contained;
use serde::Serialize;
use std::time::Duration;

/// The header the signature travels in: `sha256=HEX`.
pub const SIGNATURE_HEADER: &str = "X-Portcullis-Signature";

/// What the operator is told.
#[derive(Clone, Debug, Serialize)]
pub struct Alert {
    pub event: &'static str,
    pub account: String,
    pub hostname: String,
    pub contained: Contained,
}

impl Alert {
    pub fn new(account: &str, hostname: &str, contained: &Contained) -> Alert {
        Alert {
            event: "account_contained",
            account: account.to_owned(),
            hostname: hostname.to_owned(),
            contained: contained.clone(),
        }
    }

    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The postmaster's mail, as text.
    pub fn text(&self) -> String {
        let c = &self.contained;
        let mut s = format!(
            "The account {} was put on {} by {}.\n\n",
            self.account,
            c.action.name(),
            self.hostname
        );
        for f in &c.findings {
            s.push_str(&format!(
                "  {}: {} (threshold {})\n",
                f.signal.name(),
                f.value,
                f.limit
            ));
        }
        s.push_str(&format!("\nClient networks: {}\n", c.networks.join(", ")));
        s.push_str(&format!("Sample queue ids: {}\n", c.samples.join(", ")));
        s.push_str(&format!(
            "\nRelease with: portcullis account release {}\n",
            self.account
        ));
        s
    }
}

/// `sha256=HEX` of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Tries of one alert before it is given up (and logged).
pub const ALERT_TRIES: u32 = 6;

/// The wait before try `n` (1 is the first retry): 1 s doubling, at most
/// five minutes.
pub fn retry_delay(n: u32) -> Duration {
    Duration::from_secs((1u64 << n.min(9)).min(300) / 2)
}
