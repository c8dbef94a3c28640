//! The delivery worker: takes spooled messages, writes local recipients'
//! copies into their Maildirs (batched, one sync for many), hands remote
//! recipients to their domains' MX hosts, retries temporary failures with
//! a growing interval, bounces permanent ones with a DSN, and completes the
//! spool entry only when every recipient is done. Delivery is at least
//! once: a crash before the completion delivers again after restart.

use crate::checks::{self, Destination};
use portcullis_authn::{Route, Verifier};
use portcullis_config::Config;
use portcullis_config::clock::now_secs;
use portcullis_delivery::remote::{self, HostFailure, Outgoing, RcptOutcome};
use portcullis_delivery::{DeliveryError, LocalDelivery, MaildirStore};
use portcullis_queue::dsn::{FailedRecipient, ReportKind};
use portcullis_queue::{Envelope, QueuedRecipient, Spool, StoredMessage};
use portcullis_smtp::Mailbox;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

/// Messages delivered locally together share their syncs.
const BATCH: usize = 256;

#[derive(Clone)]
pub(crate) struct Handle {
    tx: mpsc::UnboundedSender<Job>,
    /// Deliveries between taking a message and recording the outcome: a
    /// graceful stop waits for them, so a delivered message is not
    /// delivered again after the restart.
    busy: Arc<std::sync::atomic::AtomicUsize>,
    /// Set by `settle`: no new delivery starts (what is left in the spool
    /// is delivered after the restart).
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl Handle {
    /// Start no new delivery, and wait (at most `limit`) until none is
    /// half done.
    pub(crate) async fn settle(&self, limit: Duration) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + limit;
        while self.busy.load(std::sync::atomic::Ordering::SeqCst) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Mark a delivery as started, unless the worker is closed. Counting
    /// first and checking after means `settle` either sees the count or
    /// this sees the close.
    fn begin(&self) -> Option<Busy> {
        self.busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let busy = Busy(self.busy.clone());
        (!self.closed.load(std::sync::atomic::Ordering::SeqCst)).then_some(busy)
    }

    /// Hand over a message that is already durable in the spool.
    pub(crate) fn submit(&self, message: StoredMessage) {
        let _ = self.tx.send(Job {
            message,
            attempts: 0,
            delay_notified: false,
        });
    }
}

/// One delivery in progress, until dropped.
struct Busy(Arc<std::sync::atomic::AtomicUsize>);

impl Busy {
    fn extra(count: &Arc<std::sync::atomic::AtomicUsize>) -> Busy {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Busy(count.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

struct Job {
    message: StoredMessage,
    attempts: u32,
    /// A "delayed" DSN went out already (RFC 3464: once is enough).
    delay_notified: bool,
}

/// What became of each recipient in one attempt.
#[derive(Default)]
struct Results {
    retry: Vec<(QueuedRecipient, String)>,
    failed: Vec<(QueuedRecipient, String, String)>,
    delivered: Vec<String>,
}

struct Worker {
    /// Woken by `portcullis queue flush`: deferred messages retry now.
    flush: Arc<tokio::sync::Notify>,
    /// Messages on hold (`portcullis queue hold`), kept out of delivery.
    held: std::sync::Mutex<Vec<Job>>,
    config: Config,
    metrics: Arc<portcullis_metrics::Metrics>,
    store: MaildirStore,
    spool: Spool,
    verifier: Verifier,
    tls: tokio_rustls::TlsConnector,
    handle: Handle,
    /// Smarthost login, read from its password file at start.
    smarthost_auth: Option<(String, String)>,
    /// With a login: the connector that verifies (or pins) the smarthost's
    /// certificate, and the name to verify. The password never goes to a
    /// server that has not proved who it is.
    smarthost_tls: Option<(tokio_rustls::TlsConnector, String)>,
    /// One semaphore per destination domain: at most `max_per_domain`
    /// transactions with it at once.
    per_domain: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>,
    /// When the next transaction with a domain may start (rate limit).
    next_start: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

pub(crate) fn start(
    config: &Config,
    metrics: Arc<portcullis_metrics::Metrics>,
    spool: Spool,
    verifier: Verifier,
    pending: Vec<StoredMessage>,
) -> anyhow::Result<Handle> {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = Handle {
        tx,
        busy: Default::default(),
        closed: Default::default(),
    };
    for m in pending {
        handle.submit(m);
    }
    let d = &config.delivery;
    let smarthost_auth = match (&d.smarthost_user, &d.smarthost_password_file) {
        (Some(user), Some(file)) => {
            let pw = std::fs::read_to_string(file).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read the smarthost password file {}: {e}",
                    file.display()
                )
            })?;
            Some((user.clone(), pw.trim_end_matches(['\r', '\n']).to_owned()))
        }
        (Some(_), None) => anyhow::bail!("[delivery] smarthost_user needs smarthost_password_file"),
        _ => None,
    };
    let smarthost_tls = match (&smarthost_auth, d.smarthost) {
        (Some(_), Some(host)) => Some(smarthost_tls(d, host)?),
        _ => None,
    };
    let worker = Arc::new(Worker {
        smarthost_auth,
        smarthost_tls,
        per_domain: std::sync::Mutex::new(std::collections::HashMap::new()),
        next_start: std::sync::Mutex::new(std::collections::HashMap::new()),
        flush: Arc::new(tokio::sync::Notify::new()),
        held: std::sync::Mutex::new(Vec::new()),
        store: MaildirStore::new(config.data_dir.join("mail"), &config.hostname),
        config: config.clone(),
        metrics,
        spool,
        verifier,
        tls: remote::opportunistic_tls()?,
        handle: handle.clone(),
    });
    tokio::spawn(watch_control(worker.clone()));
    tokio::spawn(run(worker, rx));
    Ok(handle)
}

/// The smarthost login's TLS: pinned when `smarthost_pin_sha256` is set,
/// otherwise verified against the system CAs and `smarthost_ca`, for
/// `smarthost_name` or the smarthost's address.
fn smarthost_tls(
    d: &portcullis_config::Delivery,
    host: std::net::SocketAddr,
) -> anyhow::Result<(tokio_rustls::TlsConnector, String)> {
    let name = d
        .smarthost_name
        .clone()
        .unwrap_or_else(|| host.ip().to_string());
    let connector = match &d.smarthost_pin_sha256 {
        Some(pin) => {
            let pin = remote::parse_pin(pin)
                .map_err(|e| anyhow::anyhow!("[delivery] smarthost_pin_sha256: {e}"))?;
            remote::pinned_tls(pin)?
        }
        None => {
            let extra: Vec<_> = d.smarthost_ca.iter().cloned().collect();
            remote::verified_tls(&extra)
                .map_err(|e| anyhow::anyhow!("[delivery] smarthost_ca: {e}"))?
        }
    };
    Ok((connector, name))
}

/// The operator's queue commands reach a running server as files in the
/// spool: `hold/ID` keeps a message back, `control/flush` retries every
/// deferred message now (and re-examines held ones).
async fn watch_control(w: Arc<Worker>) {
    let flush = w.spool.dir().join("control").join("flush");
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if std::fs::remove_file(&flush).is_ok() {
            info!(event = "queue_flush");
            w.flush.notify_waiters();
            let held: Vec<Job> = w
                .held
                .lock()
                .map(|mut h| std::mem::take(&mut *h))
                .unwrap_or_default();
            for job in held {
                let _ = w.handle.tx.send(job);
            }
        }
    }
}

async fn run(w: Arc<Worker>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut jobs = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut jobs, BATCH).await > 0 {
        let (held, batch): (Vec<Job>, Vec<Job>) = std::mem::take(&mut jobs)
            .into_iter()
            .partition(|j| portcullis_queue::is_held(w.spool.dir(), &j.message.envelope.id));
        if !held.is_empty()
            && let Ok(mut h) = w.held.lock()
        {
            for j in &held {
                info!(event = "held", id = %j.message.envelope.id);
            }
            h.extend(held);
        }
        let w2 = w.clone();
        let Some(batch_busy) = w.handle.begin() else {
            return;
        };
        let Ok(results) = tokio::task::spawn_blocking(move || w2.deliver_local(batch)).await else {
            error!(event = "delivery_panic", "local delivery task failed");
            continue;
        };
        for (job, results, remote) in results {
            if remote.is_empty() {
                w.finish(job, results).await;
            } else {
                let w = w.clone();
                // Counted by the batch already: this one cannot be refused.
                let busy = Busy::extra(&w.handle.busy);
                tokio::spawn(async move {
                    let _busy = busy;
                    let results = w.deliver_remote(&job, remote, results).await;
                    w.finish(job, results).await;
                });
            }
        }
        drop(batch_busy);
    }
}

impl Worker {
    fn is_local(&self, address: &str) -> Option<Mailbox> {
        let (local, domain) = address.rsplit_once('@')?;
        let m = Mailbox {
            local: local.to_owned(),
            domain: domain.to_owned(),
        };
        // Domains delivered over LMTP go with the remote ones: both are a
        // transaction with another server.
        let lmtp = self.config.lmtp.contains_key(&m.domain);
        (checks::destination(&self.config, &m) == Destination::Local && !lmtp).then_some(m)
    }

    /// Local copies of a batch, written together. Returns per job the local
    /// results and the recipients left for remote delivery.
    fn deliver_local(&self, jobs: Vec<Job>) -> Vec<(Job, Results, Vec<QueuedRecipient>)> {
        let mut items = Vec::new();
        let mut owners = Vec::new();
        let mut remote: Vec<Vec<QueuedRecipient>> = vec![Vec::new(); jobs.len()];
        for (j, job) in jobs.iter().enumerate() {
            for rcpt in &job.message.envelope.recipients {
                match self.is_local(&rcpt.address) {
                    Some(m) => {
                        items.push((m, j, rcpt.folder.clone()));
                        owners.push((j, rcpt.clone()));
                    }
                    None => remote[j].push(rcpt.clone()),
                }
            }
        }
        let deliveries: Vec<LocalDelivery<'_>> = items
            .iter()
            .map(|(m, j, folder)| LocalDelivery {
                domain: &m.domain,
                local: &m.local,
                folder: folder.as_deref(),
                return_path: &jobs[*j].message.envelope.sender,
                data: &jobs[*j].message.data,
            })
            .collect();
        let written = self.store.deliver(&deliveries);
        let mut results: Vec<Results> = (0..jobs.len()).map(|_| Results::default()).collect();
        for ((j, rcpt), res) in owners.into_iter().zip(written) {
            match res {
                Ok(_) => results[j].delivered.push(rcpt.address),
                Err(DeliveryError::Temporary(why)) => results[j].retry.push((rcpt, why)),
                Err(DeliveryError::Permanent(why)) => {
                    results[j].failed.push((rcpt, "5.1.1".into(), why))
                }
            }
        }
        jobs.into_iter()
            .zip(results)
            .zip(remote)
            .map(|((j, r), rem)| (j, r, rem))
            .collect()
    }

    /// Remote recipients, one transaction per domain.
    async fn deliver_remote(
        &self,
        job: &Job,
        remote: Vec<QueuedRecipient>,
        mut results: Results,
    ) -> Results {
        let mut by_domain: BTreeMap<String, Vec<QueuedRecipient>> = BTreeMap::new();
        for r in remote {
            let domain = r
                .address
                .rsplit_once('@')
                .map_or("", |(_, d)| d)
                .to_ascii_lowercase();
            by_domain.entry(domain).or_default().push(r);
        }
        for (domain, rcpts) in by_domain {
            let env = &job.message.envelope;
            if let Some(addr) = self.config.lmtp.get(&domain) {
                self.to_lmtp(env, &job.message.data, *addr, rcpts, &mut results)
                    .await;
                continue;
            }
            let _slot = self.domain_slot(&domain).await;
            if let Some(host) = self.config.delivery.smarthost {
                let addrs = [(host, host.ip().to_string())];
                self.to_hosts(env, &job.message.data, &addrs, &domain, rcpts, &mut results)
                    .await;
                continue;
            }
            match self.verifier.route(&domain).await {
                Route::NullMx => {
                    // RFC 7505 §4.2: bounce at once, 5.1.10.
                    for r in rcpts {
                        results.failed.push((
                            r,
                            "5.1.10".into(),
                            format!("{domain} accepts no mail (null MX)"),
                        ));
                    }
                }
                Route::NoSuchDomain => {
                    for r in rcpts {
                        results.failed.push((
                            r,
                            "5.1.2".into(),
                            format!("domain {domain} does not exist"),
                        ));
                    }
                }
                Route::TempFail(why) => results
                    .retry
                    .extend(rcpts.into_iter().map(|r| (r, why.clone()))),
                Route::Hosts(hosts) => {
                    let addresses: Vec<(SocketAddr, String)> = hosts
                        .iter()
                        .flat_map(|h| {
                            h.addrs.iter().map(|a| {
                                (
                                    SocketAddr::new(*a, self.config.delivery.port),
                                    h.name.clone(),
                                )
                            })
                        })
                        .collect();
                    self.to_hosts(
                        env,
                        &job.message.data,
                        &addresses,
                        &domain,
                        rcpts,
                        &mut results,
                    )
                    .await;
                }
            }
        }
        results
    }

    /// The message as the client sends it; plain, no login.
    fn outgoing<'a>(
        &'a self,
        env: &'a Envelope,
        recipients: &'a [String],
        data: &'a [u8],
    ) -> Outgoing<'a> {
        Outgoing {
            helo: &self.config.hostname,
            sender: &env.sender,
            recipients,
            data,
            smtputf8: env.smtputf8,
            eight_bit: env.eight_bit,
            require_tls: false,
            auth: None,
        }
    }

    /// Wait for a free delivery slot for `domain`.
    async fn domain_slot(&self, domain: &str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let sem = self.per_domain.lock().ok().map(|mut m| {
            m.entry(domain.to_owned())
                .or_insert_with(|| {
                    Arc::new(tokio::sync::Semaphore::new(
                        self.config.delivery.max_per_domain.max(1),
                    ))
                })
                .clone()
        })?;
        let permit = sem.acquire_owned().await.ok();
        self.pace(domain).await;
        permit
    }

    /// Space transactions with `domain` by 60 s / max_per_domain_per_minute.
    async fn pace(&self, domain: &str) {
        let rate = self.config.delivery.max_per_domain_per_minute;
        if rate == 0 {
            return;
        }
        let interval = Duration::from_secs(60) / rate;
        let wait = self.next_start.lock().ok().map(|mut m| {
            let now = std::time::Instant::now();
            let start = m.get(domain).copied().filter(|t| *t > now).unwrap_or(now);
            m.insert(domain.to_owned(), start + interval);
            start.saturating_duration_since(now)
        });
        if let Some(w) = wait.filter(|w| !w.is_zero()) {
            tokio::time::sleep(w).await;
        }
    }

    /// A local domain's mailboxes behind an LMTP server.
    async fn to_lmtp(
        &self,
        env: &Envelope,
        data: &[u8],
        addr: SocketAddr,
        rcpts: Vec<QueuedRecipient>,
        results: &mut Results,
    ) {
        let addresses: Vec<String> = rcpts.iter().map(|r| r.address.clone()).collect();
        let msg = self.outgoing(env, &addresses, data);
        match remote::deliver_lmtp(addr, &msg).await {
            Ok(outcomes) => {
                self.record_outcomes(env, rcpts, outcomes, &addr.to_string(), results)
                    .await
            }
            Err(f) if f.permanent => results.failed.extend(
                rcpts
                    .into_iter()
                    .map(|r| (r, status_of(&f.reason), f.reason.clone())),
            ),
            Err(f) => results
                .retry
                .extend(rcpts.into_iter().map(|r| (r, f.reason.clone()))),
        }
    }

    /// Per-recipient outcomes of one transaction into `results`; the
    /// accepted ones recorded durably at once.
    async fn record_outcomes(
        &self,
        env: &Envelope,
        rcpts: Vec<QueuedRecipient>,
        outcomes: Vec<RcptOutcome>,
        host: &str,
        results: &mut Results,
    ) {
        let mut accepted = Vec::new();
        for (r, o) in rcpts.into_iter().zip(outcomes) {
            let (result, reply) = match &o {
                RcptOutcome::Delivered(t) => ("delivered", t),
                RcptOutcome::Temporary(t) => ("deferred", t),
                RcptOutcome::Permanent(t) => ("failed", t),
            };
            info!(event = "remote_result", id = %env.id, to = %r.address, host = %host, result, reply = %reply);
            match o {
                RcptOutcome::Delivered(_) => accepted.push(r.address),
                RcptOutcome::Temporary(why) => results.retry.push((r, why)),
                RcptOutcome::Permanent(why) => results.failed.push((r, status_of(&why), why)),
            }
        }
        // The next hop said 250: never again for these, even after a crash
        // (no recipient is delivered twice).
        if let Err(e) = self
            .spool
            .complete_recipients(&env.id, accepted.clone())
            .await
        {
            warn!(event = "record_recipients_failed", id = %env.id, error = %e);
        }
        results.delivered.extend(accepted);
    }

    /// Try each address in order until one answers the transaction.
    async fn to_hosts(
        &self,
        env: &Envelope,
        data: &[u8],
        addrs: &[(SocketAddr, String)],
        domain: &str,
        rcpts: Vec<QueuedRecipient>,
        results: &mut Results,
    ) {
        let smarthost_login =
            self.smarthost_auth.is_some() && self.config.delivery.smarthost.is_some();
        let tls_required = smarthost_login
            || self
                .config
                .delivery
                .require_tls_for
                .iter()
                .any(|d| d == domain);
        let addresses: Vec<String> = rcpts.iter().map(|r| r.address.clone()).collect();
        let msg = Outgoing {
            require_tls: tls_required,
            auth: self
                .config
                .delivery
                .smarthost
                .and(self.smarthost_auth.as_ref())
                .map(|(u, p)| (u.as_str(), p.as_str())),
            ..self.outgoing(env, &addresses, data)
        };
        let mut last = HostFailure {
            permanent: false,
            reason: "no address to try".into(),
            kind: Default::default(),
        };
        for (addr, name) in addrs {
            let (tls, name) = match (&self.smarthost_tls, msg.auth) {
                (Some((tls, verified_name)), Some(_)) => (tls, verified_name.as_str()),
                _ => (&self.tls, name.as_str()),
            };
            match remote::deliver(*addr, &msg, tls, name).await {
                Ok(outcomes) => {
                    self.record_outcomes(env, rcpts, outcomes, &addr.to_string(), results)
                        .await;
                    return;
                }
                Err(f) if f.permanent => {
                    last = f;
                    break;
                }
                Err(f) => {
                    warn!(event = "remote_attempt_failed", id = %env.id, host = %addr, reason = %f.reason);
                    last = f;
                }
            }
        }
        for r in rcpts {
            if last.permanent {
                results
                    .failed
                    .push((r, status_of(&last.reason), last.reason.clone()));
            } else {
                results.retry.push((r, last.reason.clone()));
            }
        }
    }

    async fn finish(&self, mut job: Job, mut results: Results) {
        let env = &job.message.envelope;
        let age = now_secs().saturating_sub(env.received_at);
        if !results.retry.is_empty() && age >= self.config.delivery.max_lifetime_secs {
            // RFC 5321 §4.5.4.1: give up, and say so.
            for (r, why) in std::mem::take(&mut results.retry) {
                results
                    .failed
                    .push((r, "4.4.7".into(), format!("delivery time expired: {why}")));
            }
        }
        if !results.failed.is_empty() {
            bounce(
                &self.spool,
                &self.handle,
                &self.config.hostname,
                &job.message,
                &results.failed,
                ReportKind::Failure,
            )
            .await;
        }
        if !results.retry.is_empty()
            && !job.delay_notified
            && age >= self.config.delivery.delay_notice_secs
        {
            // RFC 3461/3464: tell the sender it is late, once.
            let late: Vec<(QueuedRecipient, String, String)> = results
                .retry
                .iter()
                .map(|(r, why)| (r.clone(), status_of(why).replacen('5', "4", 1), why.clone()))
                .collect();
            bounce(
                &self.spool,
                &self.handle,
                &self.config.hostname,
                &job.message,
                &late,
                ReportKind::Delay,
            )
            .await;
            job.delay_notified = true;
        }
        if results.retry.is_empty() {
            info!(event = "delivered", id = %env.id, delivered = results.delivered.len(), bounced = results.failed.len());
            let count = |result, n: usize| {
                let c = portcullis_metrics::Counter::DeliveryAttempts;
                self.metrics.add(c, &[("result", result)], n as u64);
            };
            count("delivered", results.delivered.len());
            count("bounced", results.failed.len());
            portcullis_queue::clear_status(self.spool.dir(), &env.id);
            if let Err(e) = self.spool.complete(&env.id).await {
                warn!(event = "complete_failed", id = %env.id, error = %e);
            }
            return;
        }
        // Some recipients wait for a retry: remember durably which are
        // finished so a restart does not deliver or bounce them again.
        let finished: Vec<String> = results
            .delivered
            .iter()
            .cloned()
            .chain(results.failed.iter().map(|(r, _, _)| r.address.clone()))
            .collect();
        if let Err(e) = self.spool.complete_recipients(&env.id, finished).await {
            warn!(event = "record_recipients_failed", id = %env.id, error = %e);
        }
        job.attempts += 1;
        let status = portcullis_queue::DeliveryStatus {
            attempts: job.attempts,
            next_attempt: now_secs()
                + self
                    .config
                    .delivery
                    .retry_base_secs
                    .saturating_mul(1u64 << (job.attempts - 1).min(20))
                    .min(self.config.delivery.retry_max_secs),
            waiting: results
                .retry
                .iter()
                .map(|(r, why)| (r.address.clone(), why.clone()))
                .collect(),
        };
        if let Err(e) = portcullis_queue::write_status(self.spool.dir(), &env.id, &status) {
            warn!(event = "status_write_failed", id = %env.id, error = %e);
        }
        let why = results.retry[0].1.clone();
        job.message.envelope.recipients = results.retry.into_iter().map(|(r, _)| r).collect();
        let d = &self.config.delivery;
        let delay = d
            .retry_base_secs
            .saturating_mul(1u64 << (job.attempts - 1).min(20))
            .min(d.retry_max_secs);
        warn!(event = "deferred", id = %job.message.envelope.id, attempts = job.attempts, delay_s = delay, reason = %why);
        self.metrics.inc(
            portcullis_metrics::Counter::DeliveryAttempts,
            &[("result", "deferred")],
        );
        let tx = self.handle.tx.clone();
        let flush = self.flush.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(delay)) => {}
                _ = flush.notified() => {}
            }
            let _ = tx.send(job);
        });
    }
}

/// The enhanced status code in a reply text, or 5.0.0.
fn status_of(reply: &str) -> String {
    reply
        .split_whitespace()
        .nth(1)
        .filter(|s| s.split('.').count() == 3 && s.starts_with(['4', '5']))
        .unwrap_or("5.0.0")
        .to_owned()
}

/// Send an RFC 3464 failure report for `failed` to the message's envelope
/// sender — never to the null sender (a bounce of a bounce) — through the
/// queue, with a null reverse-path of its own.
pub(crate) async fn bounce(
    spool: &Spool,
    handle: &Handle,
    hostname: &str,
    original: &StoredMessage,
    failed: &[(QueuedRecipient, String, String)],
    kind: ReportKind,
) {
    let env = &original.envelope;
    // RFC 3461 §4.1: NOTIFY says which reports a recipient's sender wants;
    // without it, failures and delays are reported.
    let wanted = |r: &QueuedRecipient| match (&r.notify, kind) {
        (None, _) => true,
        (Some(n), ReportKind::Failure) => n.contains("FAILURE"),
        (Some(n), ReportKind::Delay) => n.contains("DELAY"),
    };
    let failed: Vec<&(QueuedRecipient, String, String)> =
        failed.iter().filter(|(r, _, _)| wanted(r)).collect();
    if failed.is_empty() {
        return;
    }
    if env.sender.is_empty() {
        info!(event = "bounce_not_sent", id = %env.id, reason = "null sender");
        return;
    }
    let id = spool.new_id();
    let now = SystemTime::now();
    let report_recipients: Vec<FailedRecipient> = failed
        .iter()
        .map(|(r, status, why)| FailedRecipient {
            address: r.address.clone(),
            orcpt: r.orcpt.clone(),
            status: status.clone(),
            diagnostic: format!("smtp; {why}"),
        })
        .collect();
    let message_id = format!("<{id}.dsn@{hostname}>");
    let report = portcullis_queue::dsn::failure_report(&portcullis_queue::dsn::DsnRequest {
        reporting_mta: hostname,
        to: &env.sender,
        envid: env.envid.as_deref(),
        arrival_date: &portcullis_smtp::rfc5322_date(
            UNIX_EPOCH + Duration::from_secs(env.received_at),
        ),
        date: &portcullis_smtp::rfc5322_date(now),
        message_id: &message_id,
        recipients: &report_recipients,
        original: &original.data,
        ret_full: env.ret.as_deref() == Some("FULL"),
        kind,
    });
    let envelope = Envelope {
        id: id.clone(),
        sender: String::new(),
        recipients: vec![QueuedRecipient {
            address: env.sender.clone(),
            ..Default::default()
        }],
        received_at: now_secs(),
        client_ip: "127.0.0.1".into(),
        helo: hostname.to_owned(),
        ..Default::default()
    };
    let data = Arc::new(report);
    match spool.commit(envelope.clone(), data.clone()).await {
        Ok(()) => {
            info!(event = "bounce_queued", id = %id, original = %env.id, to = %env.sender, recipients = failed.len());
            handle.submit(StoredMessage { envelope, data });
        }
        Err(e) => warn!(event = "bounce_failed", original = %env.id, error = %e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_code_is_taken_from_the_reply() {
        assert_eq!(status_of("550 5.1.1 <x@y>: user unknown"), "5.1.1");
        assert_eq!(status_of("550 no such user"), "5.0.0");
    }
}
