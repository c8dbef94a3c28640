//! Where the containment facts of each account live (issue 29): with
//! Redis, in the account's slot for every node to count into and read;
//! embedded (or while Redis does not answer), in this process, saved
//! to `DATA/state/containment.json`. A containment put in force or
//! lifted is saved at once (the snapshot is written before the call
//! returns), so a hold survives a crash; the counts are saved with the
//! state's every-second maintenance.

use crate::{Store, write_atomically};
use portcullis_containment::{Change, Contained, Record, Tally};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The embedded accounts and where they are saved.
#[derive(Default)]
pub(crate) struct Accounts {
    records: Mutex<HashMap<String, Record>>,
    path: Option<PathBuf>,
    dirty: std::sync::atomic::AtomicBool,
}

pub(crate) fn containment_path(data_dir: &Path) -> PathBuf {
    data_dir.join("state").join("containment.json")
}

impl Accounts {
    pub(crate) fn load(path: Option<PathBuf>) -> anyhow::Result<Arc<Accounts>> {
        let records = match &path {
            Some(p) => match std::fs::read(p) {
                Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                    anyhow::anyhow!("{}: not a containment snapshot: {e}", p.display())
                })?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
                Err(e) => return Err(anyhow::anyhow!("{}: {e}", p.display())),
            },
            None => HashMap::new(),
        };
        Ok(Arc::new(Accounts {
            records: Mutex::new(records),
            path,
            dirty: Default::default(),
        }))
    }

    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<String, Record>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, account: &str, changes: &[Change], now: u64, history_days: u32) -> Tally {
        let mut all = self.records();
        let r = all.entry(account.to_owned()).or_default();
        r.apply(changes);
        if !changes.is_empty() {
            self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        r.tally(now, history_days)
    }

    fn add(&self, account: &str, changes: &[Change]) {
        self.records()
            .entry(account.to_owned())
            .or_default()
            .apply(changes);
        if !changes.is_empty() {
            self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn set(&self, account: &str, contained: Option<&Contained>) -> std::io::Result<()> {
        {
            let mut all = self.records();
            match contained {
                Some(c) => all.entry(account.to_owned()).or_default().contained = Some(c.clone()),
                None => {
                    all.remove(account);
                }
            }
        }
        self.save()
    }

    fn contained_one(&self, account: &str) -> Option<Contained> {
        self.records().get(account)?.contained.clone()
    }

    fn contained(&self) -> Vec<(String, Contained)> {
        let mut out: Vec<(String, Contained)> = self
            .records()
            .iter()
            .filter_map(|(a, r)| Some((a.clone(), r.contained.clone()?)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Forget old buckets; save when something changed.
    pub(crate) fn maintain(&self, now: u64, history_days: u32) -> std::io::Result<()> {
        {
            let mut all = self.records();
            for r in all.values_mut() {
                r.prune(now, history_days);
            }
            all.retain(|_, r| !r.is_empty());
        }
        if self.dirty.swap(false, std::sync::atomic::Ordering::Relaxed) {
            self.save()?;
        }
        Ok(())
    }

    fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let json = serde_json::to_vec(&*self.records()).map_err(std::io::Error::other)?;
        write_atomically(path, &json)
    }
}

impl Store {
    /// Add `changes` to the account's facts and read them back.
    pub async fn containment_record(
        &self,
        account: &str,
        changes: &[Change],
        now: u64,
        history_days: u32,
    ) -> Tally {
        let account = account.to_ascii_lowercase();
        if let Some(r) = &self.redis
            && let Some(t) = r
                .containment_record(&account, changes, now, history_days)
                .await
        {
            return t;
        }
        self.accounts.record(&account, changes, now, history_days)
    }

    /// Add `changes` that cannot call for a containment (a delivered
    /// recipient) without reading the facts back.
    pub async fn containment_add(
        &self,
        account: &str,
        changes: &[Change],
        now: u64,
        history_days: u32,
    ) {
        let account = account.to_ascii_lowercase();
        if let Some(r) = &self.redis
            && r.containment_record(&account, changes, now, history_days)
                .await
                .is_some()
        {
            return;
        }
        self.accounts.add(&account, changes);
    }

    /// The containment in force for the account, if any (cheap: what
    /// MAIL asks of every message).
    pub async fn contained(&self, account: &str) -> Option<Contained> {
        let account = account.to_ascii_lowercase();
        if let Some(r) = &self.redis
            && let Some(c) = r.contained(&account).await
        {
            return c;
        }
        self.accounts.contained_one(&account)
    }

    /// The account's facts as they stand.
    pub async fn containment_tally(&self, account: &str, now: u64, history_days: u32) -> Tally {
        self.containment_record(account, &[], now, history_days)
            .await
    }

    /// Put a containment in force, or lift it (None: counts forgotten
    /// too). With Redis an unreachable Redis is an error, as for every
    /// operator's change: every node must see it or none. Locally the
    /// change is on disk when this returns.
    pub async fn set_contained(
        &self,
        account: &str,
        contained: Option<&Contained>,
    ) -> Result<(), String> {
        let account = account.to_ascii_lowercase();
        if let Some(r) = &self.redis {
            r.set_contained(&account, contained)
                .await
                .ok_or_else(|| "Redis did not answer".to_owned())?;
        }
        self.accounts
            .set(&account, contained)
            .map_err(|e| format!("saving the containment state: {e}"))
    }

    /// Every account contained now (including throttles past their end,
    /// which the caller may show or skip).
    pub async fn contained_accounts(&self) -> Vec<(String, Contained)> {
        if let Some(r) = &self.redis
            && let Some(all) = r.contained_accounts().await
        {
            return all;
        }
        self.accounts.contained()
    }
}
