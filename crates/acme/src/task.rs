//! The ACME task: obtain the certificate at start when there is none,
//! renew it when the schedule says (a third of its life left) or when
//! the operator asks (`portcullis acme renew`, over the control socket),
//! and swap it into every listener. A failed order keeps the certificate
//! in use, is logged with its reason, counted, and retried with backoff.
//! The protocol is `issue.rs`'s and the timing `schedule.rs`'s; this is
//! only the clock and the handles. The listeners' certificate cell is the
//! caller's, reached through [`ServedCertificate`].

use crate::schedule::{self, Backoff};
use crate::{Challenges, Issuer, Store, Validity};
use portcullis_config::AcmeSettings;
use portcullis_metrics::{Counter, Metrics};
use rustls::sign::CertifiedKey;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// Longest one order may take, all requests and the CA's validation
/// included; past it the attempt counts as failed.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(120);

/// Longest sleep before looking at the schedule again (the wall clock
/// may jump, a suspended machine may wake late).
const LONGEST_SLEEP: Duration = Duration::from_secs(3600);

type Reply = oneshot::Sender<Result<serde_json::Value, String>>;

/// The certificate the listeners serve, as the ACME task sees it.
pub trait ServedCertificate: Send + Sync {
    /// The TLS-ALPN-01 answers the HTTPS host gives while an order is
    /// validated.
    fn challenges(&self) -> Arc<Challenges>;
    /// Load a PEM chain and key as the listeners would, or say why not.
    fn load(&self, chain_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, String>;
    /// Serve `cert` to new handshakes from now on.
    fn serve(&self, cert: Arc<CertifiedKey>);
}

/// What the task works with, made by the server at start.
pub struct AcmeTask {
    pub settings: AcmeSettings,
    pub data_dir: PathBuf,
    pub certificate: Arc<dyn ServedCertificate>,
    pub status: Arc<Status>,
    pub metrics: Arc<Metrics>,
}

/// What `/metrics` shows of the certificate.
#[derive(Default)]
pub struct Status {
    inner: Mutex<StatusInner>,
}

#[derive(Default, Clone, Copy)]
struct StatusInner {
    not_after: Option<SystemTime>,
    failures: u32,
}

impl Status {
    /// (seconds until the served ACME certificate expires, failed orders
    /// in a row), or None before any ACME certificate.
    pub fn gauges(&self, now: SystemTime) -> Option<(u64, u64)> {
        let s = *self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let left = s
            .not_after?
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        Some((left, u64::from(s.failures)))
    }

    fn set(&self, not_after: Option<SystemTime>, failures: u32) {
        *self.inner.lock().unwrap_or_else(|e| e.into_inner()) = StatusInner {
            not_after,
            failures,
        };
    }
}

/// Order at start when due, then on schedule or when asked.
pub async fn run(ctx: AcmeTask, mut asks: mpsc::Receiver<Reply>) {
    let settings = ctx.settings.clone();
    let store = Store::new(&ctx.data_dir);
    let issuer = issuer(&settings);
    let backoff = Backoff {
        first: Duration::from_secs(settings.retry_secs),
        cap: Duration::from_secs(settings.retry_max_secs),
    };
    // A certificate ordered for other names (the config changed) is due
    // at once, not in two months.
    let mut current = stored_validity(&store, &*ctx.certificate)
        .filter(|_| store.names() == Some(issuer.domains.clone()));
    let mut failures = 0;
    ctx.status.set(current.map(|v| v.not_after), failures);
    loop {
        let due = schedule::next_attempt(SystemTime::now(), current, failures, backoff);
        let wait = due
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let reply = tokio::select! {
            () = tokio::time::sleep(wait.min(LONGEST_SLEEP)) => {
                if wait > LONGEST_SLEEP {
                    continue;
                }
                None
            }
            // A closed door (None) disables this branch: the timer goes on.
            Some(ask) = asks.recv() => Some(ask),
        };
        let started = std::time::Instant::now();
        let outcome = attempt(&ctx, &issuer, &store).await;
        let told = match outcome {
            Ok(v) => {
                current = Some(v);
                failures = 0;
                ctx.metrics
                    .inc(Counter::AcmeOrders, &[("result", "issued")]);
                let until = httpdate::fmt_http_date(v.not_after);
                info!(
                    event = "acme_issued",
                    names = issuer.domains.join(","),
                    valid_until = until,
                    seconds = started.elapsed().as_secs_f64(),
                    "new certificate in use for new connections"
                );
                Ok(serde_json::json!(format!(
                    "certificate valid until {until}"
                )))
            }
            Err(why) => {
                failures = failures.saturating_add(1);
                ctx.metrics
                    .inc(Counter::AcmeOrders, &[("result", "failed")]);
                let retry = backoff.delay(failures).as_secs();
                warn!(
                    event = "acme_failed",
                    error = why,
                    failures,
                    retry_in_secs = retry,
                    "keeping the certificate in use"
                );
                Err(why)
            }
        };
        ctx.status.set(current.map(|v| v.not_after), failures);
        if let Some(r) = reply {
            let _ = r.send(told);
        }
    }
}

/// One order; on success the certificate is stored and then served.
async fn attempt(ctx: &AcmeTask, issuer: &Issuer, store: &Store) -> Result<Validity, String> {
    let challenges = ctx.certificate.challenges();
    let obtained = tokio::time::timeout(ATTEMPT_TIMEOUT, crate::obtain(issuer, store, &challenges))
        .await
        .map_err(|_| {
            format!(
                "no certificate within {} seconds",
                ATTEMPT_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| causes(&e))?;
    // Checked before it is stored: a chain that does not load must not
    // replace one that does.
    let served = ctx
        .certificate
        .load(obtained.chain_pem.as_bytes(), obtained.key_pem.as_bytes())
        .map_err(|e| format!("the CA's certificate is not usable: {e}"))?;
    let validity = served
        .cert
        .first()
        .and_then(|leaf| crate::validity(leaf))
        .ok_or("the CA's certificate has no readable validity")?;
    store
        .save(&obtained, &issuer.domains)
        .map_err(|e| e.to_string())?;
    ctx.certificate.serve(served);
    Ok(validity)
}

/// An error and its causes, each said once ("client error (Connect):
/// tcp connect error: Connection refused"): the first line alone rarely
/// tells an operator what to fix.
fn causes(e: &dyn std::error::Error) -> String {
    let mut said = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !said.contains(&text) {
            said = format!("{said}: {text}");
        }
        next = cause.source();
    }
    said
}

/// The validity of the certificate kept from before, if any.
fn stored_validity(store: &Store, certificate: &dyn ServedCertificate) -> Option<Validity> {
    let stored = store.load().ok()??;
    let served = certificate
        .load(stored.chain_pem.as_bytes(), stored.key_pem.as_bytes())
        .ok()?;
    crate::validity(served.cert.first()?)
}

fn issuer(s: &AcmeSettings) -> Issuer {
    Issuer {
        directory: s.directory.clone(),
        contact: s.contact.clone(),
        directory_ca: s.directory_ca.clone(),
        domains: s.domains.clone(),
    }
}
