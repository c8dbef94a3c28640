//! Escalation at the edge: the admission crate's `Escalation` counts and
//! decides; here a decision becomes a block in the shared state (and so
//! in the kernel's set, where that is on), unless an identified range
//! lies inside the prefix.

use super::ClassOfService;
use portcullis_admission::{EscalationRules, StateCommand};
use portcullis_config::Cidr;
use portcullis_metrics::Counter;
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
            if self.protected_within(up.parent).await {
                info!(event = "escalation_skipped", range = %up.parent, reason = "an identified range lies inside");
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
            info!(event = "blocked", range = %up.parent, secs, reason = %up.reason, children = up.children);
            let prefix = up.parent.prefix.to_string();
            self.metrics
                .inc(Counter::Escalations, &[("prefix", &prefix)]);
            child = up.parent;
        }
    }

    /// Whether a known-sender range, a domain range or an allocation lies
    /// inside `prefix`: those keep their class, so the prefix is not
    /// blocked.
    async fn protected_within(&self, prefix: Cidr) -> bool {
        self.allocations.any_within(&prefix) || self.state.identified_within(prefix).await
    }
}
