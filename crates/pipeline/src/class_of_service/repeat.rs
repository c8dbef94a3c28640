//! Repeat offenders at the edge: the admission crate's `RepeatOffenders`
//! decides; here a decision becomes a short block in the shared state, so
//! every node refuses the range and the kernel's set (where that is on)
//! drops its SYNs until the block lifts itself.

use super::ClassOfService;
use portcullis_admission::{RepeatRules, SenderClass, StateCommand};
use portcullis_config::Cidr;
use portcullis_metrics::Counter;
use tracing::{info, warn};

impl ClassOfService {
    fn repeat_rules(&self) -> RepeatRules {
        let a = &self.policy().admission;
        RepeatRules {
            after: a.repeat_refusals,
            window_secs: a.repeat_window_secs,
            block_secs: a.repeat_block_secs,
            max_block_secs: a.repeat_block_max_secs,
        }
    }

    /// A stranger's `range` was refused at connect with its pool full:
    /// count it, and block the range briefly once it keeps coming back.
    /// Identified senders are never blocked for knocking.
    pub(super) async fn refused_again(&self, class: &SenderClass, range: Cidr) {
        if !class.is_default() {
            return;
        }
        let rules = self.repeat_rules();
        let now = portcullis_config::clock::now_secs();
        let decided = match self.repeat.lock() {
            Ok(mut r) => r.refused(&rules, range, now),
            Err(_) => None,
        };
        let Some(secs) = decided else {
            return;
        };
        let reason = format!(
            "refused {} times within {}s while its pool was full",
            rules.after, rules.window_secs
        );
        let cmd = StateCommand::Block {
            range,
            secs,
            reason: reason.clone(),
        };
        if let Err(e) = self.state.apply(&cmd).await {
            return warn!(event = "block_failed", range = %range, error = %e);
        }
        info!(event = "blocked", range = %range, secs, reason = %reason, cause = "repeat_refusals");
        self.metrics.inc(Counter::RepeatBlocks, &[]);
    }
}
