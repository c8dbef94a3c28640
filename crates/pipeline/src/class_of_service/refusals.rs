//! Refused connections in the log without a line each (postscreen's and
//! anvil's way): a flood of refusals must cost almost nothing, so the
//! first refusal of a wide range (/48, /24) in a period is logged at
//! once, and the rest are summed up in one line per cause, class and
//! wide range at the end of the period. The counts are in `/metrics`.

use crate::Refusal;
use portcullis_config::Cidr;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;
use tracing::info;

/// Distinct ranges remembered per line; beyond it only the count grows.
const RANGES_KEPT: usize = 1024;

#[derive(Default)]
struct Tally {
    count: u64,
    ranges: HashSet<Cidr>,
}

type Key = (&'static str, String, Cidr);

pub struct RefusalLog {
    period: Mutex<HashMap<Key, Tally>>,
    /// Widest ranges a line speaks for (the escalation ceilings).
    v6_prefix: u8,
    v4_prefix: u8,
}

impl RefusalLog {
    pub fn new(admission: &portcullis_config::Admission) -> RefusalLog {
        RefusalLog {
            period: Mutex::default(),
            v6_prefix: admission.escalate_ipv6_ceiling,
            v4_prefix: admission.escalate_ipv4_ceiling,
        }
    }

    pub fn note(&self, r: &Refusal, peer: IpAddr) {
        let wide_prefix = if r.range.is_ipv4() {
            self.v4_prefix
        } else {
            self.v6_prefix
        };
        let key = (
            r.cause.outcome(),
            r.class.clone(),
            r.range.widened(wide_prefix),
        );
        let first = match self.period.lock() {
            Ok(mut p) => {
                let t = p.entry(key).or_default();
                t.count += 1;
                if t.ranges.len() < RANGES_KEPT {
                    t.ranges.insert(r.range);
                }
                t.count == 1
            }
            Err(_) => false,
        };
        if first {
            info!(
                event = "refused", outcome = r.cause.outcome(), class = %r.class, range = %r.range,
                peer = %peer, reply = %r.reply, "first refusal from this wide range in this period; the rest are summed up"
            );
        }
    }

    /// Every `every`, one line per cause, class and wide range.
    pub async fn run(self: std::sync::Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
        tick.tick().await;
        loop {
            tick.tick().await;
            let period = match self.period.lock() {
                Ok(mut p) => std::mem::take(&mut *p),
                Err(_) => continue,
            };
            for ((outcome, class, wide), t) in period {
                info!(
                    event = "refusals", outcome, class = %class, range = %wide, count = t.count,
                    ranges = t.ranges.len(), secs = every.as_secs()
                );
            }
        }
    }
}
