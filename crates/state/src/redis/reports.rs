//! The report periods of a cluster: at a period's end every node hands
//! in its own rows under the period's key, and the first node to claim
//! the send merges them all and sends one report per domain, so N nodes
//! behind a balancer send one report, not N (RFC 7489 §7.2 and RFC 8460
//! speak of one reporting organisation). Both keys share one hash tag
//! and expire after two days.

use super::{RedisBackend, keys};

/// How long a period's hand-ins and its claim are kept.
const KEEP_SECS: u64 = 2 * 86_400;

impl RedisBackend {
    /// Hand in this node's period for (`kind`, `end`); true when this
    /// node claimed the send.
    pub(crate) async fn hand_in_period(&self, kind: &str, end: u64, period: &[u8]) -> Option<bool> {
        let (list, claim) = (
            keys::report(kind, end, "periods"),
            keys::report(kind, end, "sender"),
        );
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("RPUSH")
            .arg(&list)
            .arg(period)
            .ignore()
            .cmd("EXPIRE")
            .arg(&list)
            .arg(KEEP_SECS)
            .ignore()
            .cmd("SET")
            .arg(&claim)
            .arg(&self.node)
            .arg("NX")
            .arg("EX")
            .arg(KEEP_SECS);
        let (claimed,): (Option<String>,) = self.pipeline(pipe).await?;
        Some(claimed.is_some())
    }

    /// Every node's period handed in for (`kind`, `end`).
    pub(crate) async fn handed_in_periods(&self, kind: &str, end: u64) -> Option<Vec<Vec<u8>>> {
        let list = keys::report(kind, end, "periods");
        self.command(redis::cmd("LRANGE").arg(list).arg(0).arg(-1).to_owned())
            .await
    }
}
