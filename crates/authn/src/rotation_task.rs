//! DKIM rotation without an operator at the keyboard: every `[submission]
//! dkim_activate_check_secs` the server looks for pending keys (`dkim
//! rotate`) whose record DNS now serves, and switches signing to them,
//! retiring the keys that signed so far ([`crate::activate`]).
//! The check is the one `dkim activate` makes; the signing keys reload
//! by themselves when the key directory changes. With `[submission]
//! dkim_rotate_days`, the same round makes the new keys when they are
//! due ([`crate::rotate_if_due`]) and deletes keys retired
//! `dkim_retire_days` ago. The task only keeps time and reads DNS: what
//! a rotation does to the files is `rotation.rs`.

use portcullis_dns::hickory_resolver::TokioResolver;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::{info, warn};

/// What one round of the task does, read afresh before each round (a
/// reload changes it).
#[derive(Clone, Debug)]
pub struct RotationSettings {
    /// `DATA/dkim`.
    pub dir: PathBuf,
    /// Make a new key when the newest is this old (None: never).
    pub rotate_after: Option<Duration>,
    /// Delete retired keys this long after their retirement.
    pub retire_after: Duration,
}

/// Every `every`, rotate, retire and activate as `settings()` says.
pub async fn run_rotation(
    resolver: TokioResolver,
    every: Duration,
    settings: impl Fn() -> RotationSettings,
) {
    loop {
        tokio::time::sleep(every).await;
        let s = settings();
        let Ok(domains) = std::fs::read_dir(&s.dir) else {
            continue;
        };
        for domain in domains.filter_map(|e| e.ok()) {
            let domain = domain.file_name().to_string_lossy().into_owned();
            if let Some(age) = s.rotate_after {
                rotate_and_retire(&s.dir, &domain, age, s.retire_after);
            }
            activate_served(&resolver, &s.dir, &domain).await;
        }
    }
}

fn rotate_and_retire(dir: &Path, domain: &str, age: Duration, retire_after: Duration) {
    let now = std::time::SystemTime::now();
    // A dated selector: p20261130 (from 2026-11-30T...).
    let date = portcullis_config::clock::iso8601(portcullis_config::clock::now_secs());
    let selector = format!("p{}", date.get(..10).unwrap_or_default().replace('-', ""));
    match crate::rotate_if_due(dir, domain, age, now, &selector) {
        Ok(Some(record)) => {
            info!(event = "dkim_rotation_started", domain = %domain, publish = %record)
        }
        Ok(None) => {}
        Err(e) => warn!(event = "dkim_rotation_failed", domain = %domain, error = %e),
    }
    match crate::retire(dir, domain, retire_after) {
        Ok(gone) if !gone.is_empty() => {
            info!(event = "dkim_retired", domain = %domain, selectors = %gone.join(","))
        }
        Ok(_) => {}
        Err(e) => warn!(event = "dkim_retire_failed", domain = %domain, error = %e),
    }
}

async fn activate_served(resolver: &TokioResolver, dir: &Path, domain: &str) {
    for selector in crate::pending_selectors(dir, domain).unwrap_or_default() {
        let Ok(want) = crate::pending_public_key(dir, domain, &selector) else {
            continue;
        };
        let txts =
            portcullis_dns::txt_records(resolver, &format!("{selector}._domainkey.{domain}."))
                .await;
        if !crate::record_carries_key(&txts, &want) {
            continue;
        }
        match crate::activate(dir, domain, &selector) {
            Ok(retired) => {
                info!(event = "dkim_activated", domain = %domain, selector = %selector, retired = %retired.join(","))
            }
            Err(e) => {
                warn!(event = "dkim_activate_failed", domain = %domain, selector = %selector, error = %e)
            }
        }
    }
}
