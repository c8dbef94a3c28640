//! Escalation at the edge: the admission crate's `Escalation` counts and
//! decides; here a decision becomes a block in the shared state (and so
//! in the kernel's set, where that is on), unless the prefix is exempt:
//! it holds (or lies inside) a known sender, an allocation, a domain
//! range or a range whose client logged in. Every decision is logged,
//! counted in `/metrics` and kept for the dashboard.

use super::ClassOfService;
use portcullis_admission::{Escalated, EscalationRules, Exemption, StateCommand};
use portcullis_config::Cidr;
use portcullis_metrics::EscalationDecision;
use tracing::{info, warn};

impl ClassOfService {
    fn escalation_rules(&self) -> EscalationRules {
        let a = &self.policy().admission;
        EscalationRules {
            after: a.escalate_after,
            window_secs: a.escalate_window_secs,
            ipv6_ceiling: a.escalate_ipv6_ceiling,
            ipv4_ceiling: a.escalate_ipv4_ceiling,
        }
    }

    /// `range` was blocked or refused for the default pool: count it, and
    /// block each wider prefix whose children reached the threshold (a
    /// blocked /56 counts toward its /48).
    pub(super) async fn escalate(&self, range: Cidr) {
        let rules = self.escalation_rules();
        if rules.after == 0 {
            return;
        }
        let mut child = range;
        loop {
            let now = portcullis_config::clock::now_secs();
            let decided = match self.escalation.lock() {
                Ok(mut e) => e.record(&rules, child, now),
                Err(_) => None,
            };
            let Some(up) = decided else {
                return;
            };
            if let Some(why) = self.exemption_within(up.parent).await {
                if let Ok(mut e) = self.escalation.lock() {
                    e.exempt(&rules, up.parent, now);
                }
                info!(
                    event = "escalation_exempt",
                    prefix = %up.parent,
                    reason = why.as_str(),
                    children = up.children,
                    "not blocked: the prefix holds an identified range"
                );
                self.escalation_decided(&up, why.result(), now);
                return;
            }
            let secs = self.policy().admission.escalate_block_secs;
            let cmd = StateCommand::Block {
                range: up.parent,
                secs,
                reason: up.reason.clone(),
            };
            if let Err(e) = self.state.apply(&cmd).await {
                warn!(event = "block_failed", range = %up.parent, error = %e);
                return;
            }
            info!(event = "escalated", prefix = %up.parent, secs, reason = %up.reason, children = up.children);
            self.escalation_decided(&up, "blocked", now);
            child = up.parent;
        }
    }

    fn escalation_decided(&self, up: &Escalated, result: &'static str, now: u64) {
        self.metrics.escalation(EscalationDecision {
            at: now,
            prefix: up.parent.to_string(),
            result,
            children: up.children,
        });
    }

    /// Why `prefix` must not be blocked, if it must not: an allocation
    /// (from memory), else a known-sender range, a domain range or a
    /// range whose client logged in (from the state).
    async fn exemption_within(&self, prefix: Cidr) -> Option<Exemption> {
        if self.allocations.any_within(&prefix) {
            return Some(Exemption::Allocation);
        }
        self.state.exemption_within(prefix).await
    }

    /// A client logged in (SMTP AUTH): its range keeps every prefix that
    /// holds it out of escalation (its users share their provider's
    /// prefix with whoever else connects from there).
    pub async fn logged_in(&self, ip: std::net::IpAddr) {
        let range = self.policy().range_of(ip);
        self.state.remember_authenticated(range).await;
    }
}
