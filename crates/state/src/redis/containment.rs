//! An account's containment facts in Redis: the containment crate's
//! changes as plain commands (HINCRBY, ZADD, LPUSH), applied and read
//! back in one atomic pipeline on the account's slot, so every node
//! counts into and decides on the same account. The accounts contained
//! now are also listed under `{global}` (a second call) for the
//! operator's view.

use super::{RedisBackend, keys};
use portcullis_containment::{Change, Contained, SAMPLES, Tally};
use std::collections::BTreeMap;

/// Seconds a key outlives its last write: an account that stops
/// sending is forgotten after its history (plus a day).
fn keep_secs(history_days: u32) -> u64 {
    portcullis_containment::history_window_secs(history_days) + 86_400
}

impl RedisBackend {
    pub(crate) async fn containment_record(
        &self,
        account: &str,
        changes: &[Change],
        now: u64,
        history_days: u32,
    ) -> Option<Tally> {
        let k = |n: &str| keys::containment(account, n);
        let (n, nets, rcpts, samples, held) =
            (k("n"), k("nets"), k("rcpts"), k("samples"), k("contained"));
        let mut pipe = redis::pipe();
        pipe.atomic();
        for c in changes {
            match c {
                Change::Count { counter, n: by, at } => {
                    pipe.hincr(&n, counter.field(*at), *by).ignore();
                }
                Change::Network { network, at } => {
                    pipe.zadd(&nets, network, *at).ignore();
                }
                Change::Recipient { address, at } => {
                    pipe.zadd(&rcpts, address, *at).ignore();
                }
                Change::Sample { queue_id } => {
                    pipe.lpush(&samples, queue_id)
                        .ignore()
                        .ltrim(&samples, 0, SAMPLES as isize - 1)
                        .ignore();
                }
            }
        }
        let hour_ago = now.saturating_sub(3600);
        if !changes.is_empty() {
            let keep = keep_secs(history_days) as i64;
            for key in [&n, &nets, &rcpts, &samples] {
                pipe.expire(key, keep).ignore();
            }
            pipe.zrembyscore(&nets, "-inf", hour_ago).ignore();
            pipe.zrembyscore(&rcpts, "-inf", hour_ago).ignore();
        }
        pipe.hgetall(&n)
            .zrangebyscore_withscores(&nets, format!("({hour_ago}"), "+inf")
            .zcount(&rcpts, format!("({hour_ago}"), "+inf")
            .lrange(&samples, 0, -1)
            .get(&held);
        type Read = (
            BTreeMap<String, u64>,
            Vec<(String, u64)>,
            u64,
            Vec<String>,
            Option<String>,
        );
        let (counts, networks, distinct, samples_read, held_json): Read =
            self.pipeline(pipe).await?;
        // Buckets no window reads any more go now (rarely many: one
        // per minute of activity).
        let old: Vec<&String> = counts
            .keys()
            .filter(|f| portcullis_containment::expired(f, now, history_days))
            .collect();
        if !old.is_empty() {
            let mut del = redis::cmd("HDEL");
            del.arg(&n);
            for f in &old {
                del.arg(f.as_str());
            }
            let _: Option<u64> = self.command(del).await;
        }
        let buckets = counts
            .iter()
            .filter_map(|(f, v)| portcullis_containment::parse_field(f).map(|(c, b)| (c, b, *v)));
        Some(Tally {
            networks: networks.into_iter().map(|(n, _)| n).collect(),
            distinct_recipients: distinct,
            samples: samples_read,
            contained: held_json.and_then(|j| serde_json::from_str(&j).ok()),
            ..Tally::summarise(buckets, now, history_days)
        })
    }

    /// The containment in force for the account, alone (one GET).
    pub(crate) async fn contained(&self, account: &str) -> Option<Option<Contained>> {
        let json: Option<String> = self
            .command(
                redis::cmd("GET")
                    .arg(keys::containment(account, "contained"))
                    .to_owned(),
            )
            .await?;
        Some(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// Put a containment in force (Some) or lift it (None), for every
    /// node; lifting also forgets the account's counts.
    pub(crate) async fn set_contained(
        &self,
        account: &str,
        contained: Option<&Contained>,
    ) -> Option<()> {
        let k = |n: &str| keys::containment(account, n);
        let index = keys::global("contained");
        let mut own = redis::pipe();
        let mut global = redis::pipe();
        match contained {
            Some(c) => {
                let json = serde_json::to_string(c).ok()?;
                own.set(k("contained"), &json).ignore();
                global.hset(&index, account, &json).ignore();
            }
            None => {
                own.del(vec![
                    k("contained"),
                    k("n"),
                    k("nets"),
                    k("rcpts"),
                    k("samples"),
                ])
                .ignore();
                global.hdel(&index, account).ignore();
            }
        }
        let (a, b) = tokio::join!(self.pipeline::<()>(own), self.pipeline::<()>(global));
        a.and(b)
    }

    /// Every account contained now, as the cluster knows it.
    pub(crate) async fn contained_accounts(&self) -> Option<Vec<(String, Contained)>> {
        let all: BTreeMap<String, String> = self
            .command(
                redis::cmd("HGETALL")
                    .arg(keys::global("contained"))
                    .to_owned(),
            )
            .await?;
        Some(
            all.into_iter()
                .filter_map(|(a, j)| Some((a, serde_json::from_str(&j).ok()?)))
                .collect(),
        )
    }
}
