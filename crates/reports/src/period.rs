//! One shape for both kinds of report: the period so far, in memory and
//! saved to a file (a crash loses at most a minute of report rows, never
//! mail), and the loop that ends a period on an interval boundary or
//! when the operator asks.

use portcullis_config::clock::now_secs;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

/// What a run of the job answers the operator.
pub type Answer = Result<serde_json::Value, String>;

/// Requests to end the period now (a control-socket job), each with
/// where to send the answer.
pub type RunRequests = mpsc::Receiver<oneshot::Sender<Answer>>;

/// How often the period so far is written to its file.
const SAVE_EVERY: Duration = Duration::from_secs(60);

#[derive(Default, Serialize, serde::Deserialize)]
struct Saved<P> {
    since: u64,
    period: P,
}

/// A period's observations, kept in `DIR/period.json`.
pub struct SavedPeriod<P> {
    dir: PathBuf,
    current: Mutex<Saved<P>>,
}

impl<P: Serialize + DeserializeOwned + Default> SavedPeriod<P> {
    /// The period saved last in `dir` (made if missing), or a new one.
    pub fn open(dir: &Path) -> std::io::Result<SavedPeriod<P>> {
        std::fs::create_dir_all(dir)?;
        let saved = std::fs::read(dir.join("period.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Saved<P>>(&b).ok())
            .unwrap_or_else(|| Saved {
                since: now_secs(),
                period: P::default(),
            });
        Ok(SavedPeriod {
            dir: dir.to_owned(),
            current: Mutex::new(saved),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Saved<P>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Change the period so far.
    pub fn update<T>(&self, change: impl FnOnce(&mut P) -> T) -> T {
        change(&mut self.lock().period)
    }

    /// Look at the period so far: when it began, and its contents.
    pub fn read<T>(&self, look: impl FnOnce(u64, &P) -> T) -> T {
        let g = self.lock();
        look(g.since, &g.period)
    }

    /// Write the period so far (atomically: a crash leaves the old or
    /// the new file, never half of one).
    pub fn save(&self) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(&*self.lock()).map_err(std::io::Error::other)?;
        portcullis_state::write_atomically(&self.dir.join("period.json"), &bytes)
    }

    /// End the period: its start and contents; a new one begins, saved.
    pub fn take(&self) -> std::io::Result<(u64, P)> {
        let fresh = Saved {
            since: now_secs(),
            period: P::default(),
        };
        let old = std::mem::replace(&mut *self.lock(), fresh);
        self.save()?;
        Ok((old.since, old.period))
    }

    /// The directory the period is saved in (for the kind's own files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A period that another node's period of the same interval can be
/// counted into.
pub trait Mergeable {
    fn merge(&mut self, other: Self);
}

impl Mergeable for portcullis_dmarcrpt::Period {
    fn merge(&mut self, other: Self) {
        portcullis_dmarcrpt::Period::merge(self, other)
    }
}

impl Mergeable for portcullis_tlsrpt::Counts {
    fn merge(&mut self, other: Self) {
        portcullis_tlsrpt::Counts::merge(self, other)
    }
}

/// How long the node that claimed a period waits for the other nodes to
/// hand theirs in: they end the same period on the same boundary, give
/// or take their clocks and timers.
const GATHER_WAIT: Duration = Duration::from_secs(30);

/// What a node sends at a period's end: its own period (alone, or when
/// the operator asked this node), every node's merged (it claimed the
/// period in the shared state), or nothing (another node claimed it and
/// has this node's rows).
pub(crate) async fn gather<P>(
    state: &portcullis_state::Store,
    kind: &str,
    boundary: Option<u64>,
    since: u64,
    period: P,
) -> Option<(u64, P)>
where
    P: Serialize + DeserializeOwned + Default + Mergeable,
{
    let Some(end) = boundary else {
        return Some((since, period));
    };
    let saved = Saved { since, period };
    let Ok(bytes) = serde_json::to_vec(&saved) else {
        return Some((saved.since, saved.period));
    };
    use portcullis_state::PeriodRole;
    match state.hand_in_period(kind, end, &bytes).await {
        PeriodRole::Alone => Some((saved.since, saved.period)),
        PeriodRole::Contributor => None,
        PeriodRole::Sender => {
            tokio::time::sleep(GATHER_WAIT).await;
            let handed_in = state.handed_in_periods(kind, end).await;
            Some(merged(handed_in, saved))
        }
    }
}

/// Every node's period counted into one, beginning at the earliest. A
/// hand-in that does not read (another version's) is left out, and this
/// node's own is always in.
fn merged<P: DeserializeOwned + Default + Mergeable>(
    handed_in: Vec<Vec<u8>>,
    own: Saved<P>,
) -> (u64, P) {
    let (mut since, mut all) = (own.since, P::default());
    let own_bytes_seen = !handed_in.is_empty();
    for bytes in &handed_in {
        if let Ok(s) = serde_json::from_slice::<Saved<P>>(bytes) {
            since = since.min(s.since);
            all.merge(s.period);
        }
    }
    if !own_bytes_seen {
        // Redis lost the list between the hand-in and now: at least ours.
        all.merge(own.period);
    }
    (since, all)
}

/// Seconds from `now` to the next multiple of `every` since the epoch
/// (RFC 7489 §7.2: "Report generators SHOULD ... adhere to hour
/// boundaries"; a daily period ends at 00:00 UTC).
pub(crate) fn to_boundary(now: u64, every: u64) -> u64 {
    every - now % every
}

/// End a period every `every` seconds on the boundary, or when asked;
/// save the period so far every minute. `end` ends one period and says
/// what it sent; it is given the boundary (seconds since the epoch) for
/// a scheduled end, None for one the operator asked for.
pub(crate) async fn run_periods<F, Fut>(
    every: u64,
    mut asked: RunRequests,
    save: impl Fn() -> std::io::Result<()>,
    kind: &'static str,
    mut end: F,
) where
    F: FnMut(Option<u64>) -> Fut,
    Fut: Future<Output = Answer>,
{
    let first = tokio::time::Instant::now() + Duration::from_secs(to_boundary(now_secs(), every));
    let mut tick = tokio::time::interval_at(first, Duration::from_secs(every));
    let mut saving = tokio::time::interval(SAVE_EVERY);
    loop {
        let (boundary, reply) = tokio::select! {
            _ = tick.tick() => (Some(now_secs() / every * every), None),
            Some(r) = asked.recv() => (None, Some(r)),
            _ = saving.tick() => {
                if let Err(e) = save() {
                    warn!(event = "report_period_save_failed", kind, error = %e);
                }
                continue;
            }
        };
        let answer = end(boundary).await;
        if let Err(e) = &answer {
            warn!(event = "reports_failed", kind, error = %e);
        }
        if let Some(r) = reply {
            let _ = r.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default, Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Tally(u64);

    impl Mergeable for Tally {
        fn merge(&mut self, other: Self) {
            self.0 += other.0;
        }
    }

    fn handed(since: u64, n: u64) -> Vec<u8> {
        serde_json::to_vec(&Saved {
            since,
            period: Tally(n),
        })
        .unwrap()
    }

    #[test]
    fn the_claiming_node_sends_every_nodes_rows_from_the_earliest_start() {
        let own = Saved {
            since: 200,
            period: Tally(1),
        };
        let all = vec![
            handed(200, 1),
            handed(150, 2),
            b"not ours".to_vec(),
            handed(300, 4),
        ];
        assert_eq!(merged(all, own), (150, Tally(7)));
    }

    #[test]
    fn a_lost_hand_in_list_still_sends_this_nodes_rows() {
        let own = Saved {
            since: 200,
            period: Tally(3),
        };
        assert_eq!(merged(Vec::new(), own), (200, Tally(3)));
    }

    #[test]
    fn a_daily_period_ends_at_midnight_utc() {
        // 2026-11-24T11:36:51Z: 12 h 23 min 09 s to midnight.
        assert_eq!(to_boundary(1_795_520_211, 86_400), 44_589);
    }

    #[test]
    fn a_period_on_the_boundary_runs_a_whole_interval() {
        assert_eq!(to_boundary(86_400, 86_400), 86_400);
    }

    #[test]
    fn the_period_so_far_survives_a_reopen() {
        let dir = std::env::temp_dir().join(format!("pt-period-{}", std::process::id()));
        let p: SavedPeriod<Vec<u32>> = SavedPeriod::open(&dir).unwrap();
        p.update(|v| v.push(7));
        p.save().unwrap();
        let again: SavedPeriod<Vec<u32>> = SavedPeriod::open(&dir).unwrap();
        assert_eq!(again.read(|_, v| v.clone()), vec![7]);
        let (_, taken) = again.take().unwrap();
        assert_eq!(taken, vec![7]);
        let after: SavedPeriod<Vec<u32>> = SavedPeriod::open(&dir).unwrap();
        assert!(after.read(|_, v| v.is_empty()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
