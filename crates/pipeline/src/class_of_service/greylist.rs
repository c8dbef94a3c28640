//! Greylisting at the edge: only a client served in the default pool (no
//! SPF pass, no known range, no domain range, no reputation) is asked to
//! come back; the decision is the admission crate's, the memory the
//! state's (shared by every node with Redis).

use super::{ClassOfService, Gate};
use portcullis_admission::{Greyed, GreylistRules, triplet_key};
use portcullis_config::{Cidr, Greylist};
use portcullis_metrics::Counter;
use portcullis_smtp::{Reply, Status};
use std::net::IpAddr;

impl ClassOfService {
    /// RCPT: Err holds the 451 for a triplet that must come back later.
    pub async fn greylist(
        &self,
        cfg: &Greylist,
        gate: &Gate,
        ip: IpAddr,
        sender: Option<&str>,
        recipient: &str,
    ) -> Result<(), Reply> {
        if !cfg.enabled || !gate.class.is_default() {
            return Ok(());
        }
        let range = Cidr::enclosing(ip, cfg.ipv4_prefix, cfg.ipv6_prefix);
        let key = triplet_key(range, sender, recipient);
        match self
            .state
            .greylist(&key, GreylistRules::from_config(cfg))
            .await
        {
            Greyed::Pass => Ok(()),
            Greyed::Wait(secs) => {
                self.metrics.inc(Counter::Greylisted, &[]);
                Err(greylisted(
                    range,
                    secs.max(1),
                    &self.policy().admission.remediation_url,
                ))
            }
        }
    }
}

/// 451 4.7.1: the sender retries, as any MTA does.
pub fn greylisted(range: Cidr, secs: u64, url: &str) -> Reply {
    let mut text = format!(
        "Greylisted: the first message from {range} to this recipient waits; try again in {secs} seconds (senders that authenticate with SPF or DKIM are never delayed)"
    );
    if !url.is_empty() {
        text.push_str(&format!("; see {url}"));
    }
    Reply::new(451, Status(4, 7, 1), text)
}
