//! DKIM rotation without an operator at the keyboard: every `[submission]
//! dkim_activate_check_secs` the server looks for pending keys (`dkim
//! rotate`) whose record DNS now serves, and switches signing to them,
//! retiring the keys that signed so far (`portcullis_authn::activate`).
//! The check is the one `dkim activate` makes; the signing keys reload
//! by themselves when the key directory changes. With `[submission]
//! dkim_rotate_days`, the same round makes the new keys when they are
//! due (`portcullis_authn::rotate_if_due`) and deletes keys retired
//! `dkim_retire_days` ago.

use crate::Context;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

pub(crate) async fn run(ctx: Arc<Context>) {
    let every = ctx.config().submission.dkim_activate_check_secs;
    let Some(resolver) = crate::periodic_resolver(&ctx, every, "dkim activation") else {
        return;
    };
    loop {
        tokio::time::sleep(Duration::from_secs(every)).await;
        let dir = ctx.config().data_dir.join("dkim");
        let Ok(domains) = std::fs::read_dir(&dir) else {
            continue;
        };
        let submission = ctx.config().submission.clone();
        for domain in domains.filter_map(|e| e.ok()) {
            let domain = domain.file_name().to_string_lossy().into_owned();
            if submission.dkim_rotate_days > 0 {
                rotate_and_retire(&dir, &domain, &submission);
            }
            activate_served(&resolver, &dir, &domain).await;
        }
    }
}

fn rotate_and_retire(dir: &std::path::Path, domain: &str, s: &portcullis_config::Submission) {
    let day = |n: u32| Duration::from_secs(u64::from(n) * 86_400);
    let now = std::time::SystemTime::now();
    match portcullis_authn::rotate_if_due(dir, domain, day(s.dkim_rotate_days), now) {
        Ok(Some(record)) => {
            info!(event = "dkim_rotation_started", domain = %domain, publish = %record)
        }
        Ok(None) => {}
        Err(e) => warn!(event = "dkim_rotation_failed", domain = %domain, error = %e),
    }
    match portcullis_authn::retire(dir, domain, day(s.dkim_retire_days)) {
        Ok(gone) if !gone.is_empty() => {
            info!(event = "dkim_retired", domain = %domain, selectors = %gone.join(","))
        }
        Ok(_) => {}
        Err(e) => warn!(event = "dkim_retire_failed", domain = %domain, error = %e),
    }
}

async fn activate_served(
    resolver: &portcullis_dns::hickory_resolver::TokioResolver,
    dir: &std::path::Path,
    domain: &str,
) {
    for selector in portcullis_authn::pending_selectors(dir, domain).unwrap_or_default() {
        let Ok(want) = portcullis_authn::pending_public_key(dir, domain, &selector) else {
            continue;
        };
        let txts =
            portcullis_dns::txt_records(resolver, &format!("{selector}._domainkey.{domain}."))
                .await;
        if !portcullis_authn::record_carries_key(&txts, &want) {
            continue;
        }
        match portcullis_authn::activate(dir, domain, &selector) {
            Ok(retired) => {
                info!(event = "dkim_activated", domain = %domain, selector = %selector, retired = %retired.join(","))
            }
            Err(e) => {
                warn!(event = "dkim_activate_failed", domain = %domain, selector = %selector, error = %e)
            }
        }
    }
}
