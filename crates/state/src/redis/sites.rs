//! The outbound sites' ledger in Redis (issue 30): per site, under one
//! hash tag (`pc:{site:NAME}:…`, so a Redis Cluster keeps it in one
//! slot), the connections open on every node (leases renewed by their
//! node's heartbeat, so a crashed node's lapse), the next start across
//! nodes and the last pause with its cut rate. One script call takes a
//! start; one keeps a pause. What the answers mean is the shaping
//! crate's decision.

use super::RedisBackend;
use super::keys;
use portcullis_shaping::{LedgerAnswer, LedgerClaim, SharedPause, Taken};
use std::sync::Arc;
use std::sync::atomic::Ordering;

impl RedisBackend {
    /// Take a connection and a start at `site`: None when Redis did not
    /// answer.
    pub(crate) async fn site_take(
        self: &Arc<Self>,
        site: &str,
        claim: LedgerClaim,
        now: u64,
    ) -> Option<LedgerAnswer> {
        let set = keys::site(site, "slots");
        let expiry = now + self.node_timeout.as_millis() as u64;
        let member = format!(
            "{}:{}",
            self.node,
            self.leases_taken.fetch_add(1, Ordering::Relaxed)
        );
        let mut inv = self.scripts.site_take.prepare_invoke();
        inv.key(keys::site(site, "pause"))
            .key(&set)
            .key(keys::site(site, "next"))
            .arg(now)
            .arg(expiry)
            .arg(&member)
            .arg(claim.max_connections.max(1))
            .arg(claim.not_before)
            .arg(claim.interval_ms)
            .arg(claim.max_wait_ms);
        let (status, at, record): (u8, u64, Vec<String>) = self.invoke(inv).await?;
        let taken = match status {
            0 => Taken::Granted {
                at,
                hold: Box::new(self.remember_lease(set, member)),
            },
            1 => Taken::Full,
            2 => Taken::Busy { at },
            _ => Taken::Paused,
        };
        Some(LedgerAnswer {
            taken,
            pause: pause_record(&record),
        })
    }

    /// Keep `pause` for every node (unless a later one is kept).
    pub(crate) async fn site_pause(&self, site: &str, pause: &SharedPause) -> Option<()> {
        let mut inv = self.scripts.site_pause.prepare_invoke();
        inv.key(keys::site(site, "pause"))
            .arg(pause.until)
            .arg(pause.keep_until)
            .arg(&pause.reason)
            .arg(pause.pauses)
            .arg(pause.rate.unwrap_or(0))
            .arg(pause.step)
            .arg(pause.refused_at.unwrap_or(0));
        let _: i64 = self.invoke(inv).await?;
        Some(())
    }
}

/// The pause record from its hash's fields and values (None when there
/// is none or it does not parse).
fn pause_record(flat: &[String]) -> Option<SharedPause> {
    let field = |name: &str| {
        flat.chunks_exact(2)
            .find(|kv| kv[0] == name)
            .map(|kv| kv[1].as_str())
    };
    let number = |name: &str| field(name).and_then(|v| v.parse::<u64>().ok());
    let until = number("until")?;
    let rate = |name: &str| {
        number(name)
            .and_then(|r| u32::try_from(r).ok())
            .filter(|r| *r > 0)
    };
    Some(SharedPause {
        until,
        reason: field("reason").unwrap_or_default().to_owned(),
        pauses: number("pauses").map_or(1, |n| n.min(u64::from(u32::MAX)) as u32),
        rate: rate("rate"),
        refused_at: rate("refused"),
        step: number("step").map_or(1, |n| n.clamp(1, u64::from(u32::MAX)) as u32),
        keep_until: until,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_record_is_read_from_its_fields() {
        let flat: Vec<String> = [
            "until",
            "1000",
            "reason",
            "421 4.7.28",
            "pauses",
            "2",
            "rate",
            "10",
            "step",
            "2",
            "refused",
            "20",
        ]
        .map(String::from)
        .to_vec();
        let p = pause_record(&flat).expect("a record");
        assert_eq!((p.until, p.pauses, p.rate, p.step), (1000, 2, Some(10), 2));
        assert_eq!(p.refused_at, Some(20));
        assert_eq!(p.reason, "421 4.7.28");
        assert_eq!(pause_record(&[]), None);
        let no_cut: Vec<String> = ["until", "5", "rate", "0"].map(String::from).to_vec();
        assert_eq!(pause_record(&no_cut).and_then(|p| p.rate), None);
    }
}
