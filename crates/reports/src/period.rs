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

/// Seconds from `now` to the next multiple of `every` since the epoch
/// (RFC 7489 §7.2: "Report generators SHOULD ... adhere to hour
/// boundaries"; a daily period ends at 00:00 UTC).
pub(crate) fn to_boundary(now: u64, every: u64) -> u64 {
    every - now % every
}

/// End a period every `every` seconds on the boundary, or when asked;
/// save the period so far every minute. `end` ends one period and says
/// what it sent.
pub(crate) async fn run_periods<F, Fut>(
    every: u64,
    mut asked: RunRequests,
    save: impl Fn() -> std::io::Result<()>,
    kind: &'static str,
    mut end: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Answer>,
{
    let first = tokio::time::Instant::now() + Duration::from_secs(to_boundary(now_secs(), every));
    let mut tick = tokio::time::interval_at(first, Duration::from_secs(every));
    let mut saving = tokio::time::interval(SAVE_EVERY);
    loop {
        let reply = tokio::select! {
            _ = tick.tick() => None,
            Some(r) = asked.recv() => Some(r),
            _ = saving.tick() => {
                if let Err(e) = save() {
                    warn!(event = "report_period_save_failed", kind, error = %e);
                }
                continue;
            }
        };
        let answer = end().await;
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
