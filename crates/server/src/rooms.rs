//! Open every room the config names and hand each the handles it needs:
//! the way in, the queue and its router, the report stores, the run-now
//! doors of the jobs, the HTTP room's context. Made once at start.

use crate::Context;
use anyhow::Context as _;
use portcullis_config::{Config, LiveConfig};
use portcullis_control::{Job, JobDoor};
use portcullis_pipeline::Inbound;
use portcullis_queue::{Queue, Spool, SpoolOptions};
use portcullis_reports::{DmarcReports, TlsReports};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::sync::Semaphore;
use tracing::info;

/// The DNS-backed verifier the config describes: its resolver (or the
/// given name servers), DMARC discovery and Public Suffix List.
pub fn verifier(
    config: &Config,
    nameservers: &[std::net::SocketAddr],
    timeout: std::time::Duration,
) -> anyhow::Result<portcullis_authn::Verifier> {
    let psl = suffix_list(config)?;
    let tree_walk = config.dmarc.discovery == portcullis_config::DmarcDiscovery::TreeWalk;
    Ok(
        portcullis_authn::Verifier::new(&config.hostname, nameservers, timeout)?
            .with_dmarc(tree_walk, psl),
    )
}

/// The Public Suffix List `[dmarc] public_suffix_list` names, or the
/// built-in copy.
pub(crate) fn suffix_list(config: &Config) -> anyhow::Result<Arc<portcullis_authn::SuffixList>> {
    portcullis_authn::SuffixList::for_config(config).map_err(anyhow::Error::msg)
}
/// The run-now doors of the jobs whose tasks run (a job whose task is
/// off has no door: the CLI is told why), and the tasks' ends.
pub(crate) fn job_doors(config: &Config) -> (HashMap<Job, JobDoor>, JobAsks) {
    let (acme_door, acme) = portcullis_control::job_door();
    let (dmarc_door, dmarc) = portcullis_control::job_door();
    let (tls_door, tls) = portcullis_control::job_door();
    let mut doors = HashMap::new();
    if config.dmarc.send_reports {
        doors.insert(Job::DmarcReports, dmarc_door);
    }
    if config.delivery.tls_rpt_interval_secs > 0 {
        doors.insert(Job::TlsReports, tls_door);
    }
    if config.acme.is_some() {
        doors.insert(Job::AcmeRenew, acme_door);
    }
    (doors, JobAsks { acme, dmarc, tls })
}

pub(crate) struct JobAsks {
    pub acme: portcullis_reports::RunRequests,
    pub dmarc: portcullis_reports::RunRequests,
    pub tls: portcullis_reports::RunRequests,
}

/// Reports are signed with the submission side's DKIM keys.
pub(crate) struct InboundSigner(pub Arc<Inbound>);

impl portcullis_reports::ReportSigner for InboundSigner {
    fn sign(&self, domain: &str, message: &[u8]) -> Result<String, String> {
        self.0
            .submission
            .dkim_keys()
            .sign(domain, message)
            .map_err(|e| e.to_string())
    }
}

/// DKIM rotation every `[submission] dkim_activate_check_secs`, with the
/// settings in force at each round.
pub(crate) async fn dkim_rotation(config: LiveConfig) {
    let c = config.get();
    let every = c.submission.dkim_activate_check_secs;
    let task = "dkim activation";
    let Some(resolver) =
        portcullis_dns::periodic_resolver(&c.dns_nameservers, c.dns_timeout, every, task)
    else {
        return;
    };
    let day = |n: u32| Duration::from_secs(u64::from(n) * 86_400);
    let settings = move || {
        let c = config.get();
        let s = &c.submission;
        portcullis_authn::RotationSettings {
            dir: c.data_dir.join("dkim"),
            rotate_after: (s.dkim_rotate_days > 0).then(|| day(s.dkim_rotate_days)),
            retire_after: day(s.dkim_retire_days),
        }
    };
    portcullis_authn::run_rotation(resolver, Duration::from_secs(every), settings).await
}

/// The HTTP room's handles.
pub(crate) fn http_context(
    ctx: &Context,
    config: &Config,
) -> anyhow::Result<portcullis_http::HttpContext> {
    Ok(portcullis_http::HttpContext {
        config: ctx.config.clone(),
        queue: ctx.queue.clone(),
        control: ctx.control.clone(),
        inbound: ctx.inbound.clone(),
        metrics: ctx.metrics.clone(),
        tls_reports: ctx.tls_reports.clone(),
        acme: ctx.acme.clone(),
        sessions: ctx.sessions.clone(),
        admin_token: portcullis_http::admin_token(config)?,
        https: ctx.https.clone(),
    })
}

/// Open every room the config names and wire them together.
pub(crate) fn context(
    config: Config,
    path: Option<std::path::PathBuf>,
    jobs: HashMap<Job, JobDoor>,
) -> anyhow::Result<Context> {
    let (certs, tls, https) = crate::tls::acceptors(&config)?;
    let metrics = Arc::new(portcullis_metrics::Metrics::default());
    let tls_reports = TlsReports::open(&config.data_dir, metrics.clone())
        .with_context(|| format!("cannot open {}", config.data_dir.join("tlsrpt").display()))?;
    let tls_reports = Arc::new(tls_reports);
    let complaints = Arc::new(portcullis_pipeline::containment::ComplaintCounter::default());
    let state = portcullis_state::Store::open(&config)?;
    let (queue, sites) = open_queue(
        &config,
        metrics.clone(),
        tls_reports.clone(),
        complaints.clone(),
        &state,
    )?;
    let dmarc = DmarcReports::open(&config.data_dir)
        .with_context(|| format!("cannot open {}", config.data_dir.join("dmarc").display()))?;
    let dmarc = Arc::new(dmarc);
    let mut inbound = inbound(&config, queue.clone(), metrics.clone(), state)?;
    if config.dmarc.send_reports {
        inbound.dmarc_observations = Some(dmarc.clone());
    }
    let inbound = Arc::new(inbound);
    info!(
        event = "state",
        backend = inbound.admission.state.backend_name()
    );
    let live = LiveConfig::new(config.clone());
    let log = inbound.submission.log.clone();
    complaints.connect(inbound.containment.clone(), log, live.clone());
    let control = portcullis_control::Control {
        queue: queue.clone(),
        state: inbound.admission.state.clone(),
        files: Some(Arc::new(LiveFiles(inbound.clone()))),
        jobs,
        accounts: Some(Arc::new(portcullis_pipeline::containment::AccountDoor {
            containment: inbound.containment.clone(),
            config: live.clone(),
        })),
        sites: Some(sites),
    };
    let policy = portcullis_policyd::PolicyService::new(inbound.clone(), Arc::new(config.clone()));
    queue.listen_to_outcomes(Arc::new(portcullis_pipeline::OutcomeListener {
        containment: inbound.containment.clone(),
        config: live.clone(),
    }));
    Ok(Context {
        policy: Arc::new(policy),
        inbound,
        queue,
        control,
        tls_reports,
        dmarc,
        metrics,
        sessions: Arc::new(Semaphore::new(config.limits.max_sessions)),
        refusals: Arc::new(portcullis_pipeline::RefusalLog::new(&config.admission)),
        config: live,
        config_path: path,
        tls,
        https,
        certs,
        acme: Arc::default(),
        shutdown: tokio::sync::watch::Sender::new(false),
        next_session: AtomicU64::new(1),
    })
}

/// The files the CLI changes, loaded as this server (its user) would.
struct LiveFiles(Arc<Inbound>);

impl portcullis_control::FileLoader for LiveFiles {
    fn check(&self, file: portcullis_control::LiveFile) -> Result<String, String> {
        use portcullis_control::LiveFile;
        match file {
            LiveFile::Accounts => self.0.submission.check_accounts(),
            LiveFile::DkimKeys => self.0.submission.check_dkim_keys(),
            LiveFile::Aliases => self.0.forwarding.check_aliases(),
        }
    }
}

/// The way in: DNS checks, class of service, submission, forwarding.
fn inbound(
    config: &Config,
    queue: Queue,
    metrics: Arc<portcullis_metrics::Metrics>,
    state: portcullis_state::Store,
) -> anyhow::Result<Inbound> {
    let verifier = verifier(config, &config.dns_nameservers, config.dns_timeout)?;
    let submission = portcullis_pipeline::Submission::new(config, metrics.clone())?;
    if let Err(e) = submission.log.expire(std::time::SystemTime::now()) {
        tracing::warn!(event = "log_expire_failed", error = %e);
    }
    let queue: Arc<dyn portcullis_pipeline::Intake> = Arc::new(queue);
    let mut containment =
        portcullis_pipeline::Containment::new(state.clone(), queue.clone(), metrics.clone());
    if let Some(settings) = portcullis_pipeline::containment::AlertSettings::from_config(config) {
        containment = containment.with_alerts(
            portcullis_pipeline::containment::Alerts::start(settings, queue.clone()).0,
        );
    }
    Ok(Inbound {
        containment: Arc::new(containment),
        checks: Arc::new(verifier),
        queue,
        admission: portcullis_pipeline::ClassOfService::new(config, state, metrics.clone())?,
        submission,
        forwarding: portcullis_pipeline::Forwarding::new(config)?,
        milters: portcullis_milter::Milters::new(&config.milters, metrics.clone()),
        metrics,
        dmarc_observations: None,
    })
}

/// The spool, with what it recovered handed to the queue.
fn open_queue(
    config: &Config,
    metrics: Arc<portcullis_metrics::Metrics>,
    tls_reports: Arc<TlsReports>,
    complaints: Arc<dyn portcullis_reportbox::ComplaintSink>,
    state: &portcullis_state::Store,
) -> anyhow::Result<(Queue, Arc<portcullis_delivery::SiteGate>)> {
    let spool_dir = config.data_dir.join("spool");
    let (spool, pending) = Spool::open(&spool_dir, SpoolOptions::default())
        .with_context(|| format!("cannot open spool {}", spool_dir.display()))?;
    if !pending.is_empty() {
        info!(
            event = "recovered",
            messages = pending.len(),
            "re-queueing messages accepted before the last stop"
        );
    }
    start_queue(
        config,
        spool,
        pending,
        metrics,
        tls_reports,
        complaints,
        state,
    )
}

/// The way out: the router over our mailboxes and DNS, and the queue
/// that schedules it, starting with what the spool recovered.
fn start_queue(
    config: &Config,
    spool: Spool,
    pending: Vec<portcullis_queue::StoredMessage>,
    metrics: Arc<portcullis_metrics::Metrics>,
    tls_reports: Arc<TlsReports>,
    complaints: Arc<dyn portcullis_reportbox::ComplaintSink>,
    state: &portcullis_state::Store,
) -> anyhow::Result<(Queue, Arc<portcullis_delivery::SiteGate>)> {
    use portcullis_delivery::{DnsRoutes, Mailboxes, MaildirStore, Router};
    let store = MaildirStore::new(config.data_dir.join("mail"), &config.hostname);
    let mailboxes = Mailboxes::start(store).context("cannot start the mailbox writer")?;
    let routes =
        DnsRoutes::new(&config.dns_nameservers, config.dns_timeout)?.trust_ad(config.dns_trust_ad);
    let mut router =
        Router::new(config, mailboxes, Arc::new(routes))?.with_metrics(metrics.clone());
    if config.delivery.mta_sts {
        let extra: Vec<_> = config.delivery.mta_sts_ca.iter().cloned().collect();
        let sts = portcullis_delivery::MtaSts::new(
            &config.dns_nameservers,
            config.dns_timeout,
            &extra,
            config.data_dir.join("mta-sts"),
            Duration::from_secs(config.delivery.mta_sts_timeout_secs),
        )
        .map_err(|e| anyhow::anyhow!("[delivery] mta_sts_ca: {e}"))?;
        router = router.with_sts(Arc::new(sts));
    }
    let mut router = router.with_tls_outcomes(tls_reports);
    if config.dmarc.report_mailbox.is_some() || config.containment.feedback_address.is_some() {
        let store = portcullis_reportbox::ReportStore::open(
            &config.data_dir,
            &config.dmarc,
            metrics.clone(),
        )
        .context("cannot open the report store (DATA/reports)")?;
        router = router.with_reports(Arc::new(store.with_complaints(complaints)));
    }
    let settings = portcullis_queue::QueueSettings {
        hostname: config.hostname.clone(),
        schedule: portcullis_queue::Schedule::from_config(&config.delivery),
        max_active: MAX_ACTIVE_DELIVERIES,
        suppression: (config.delivery.suppress_days > 0).then(|| portcullis_queue::Suppressing {
            days: config.delivery.suppress_days,
            store: Arc::new(state.clone()),
        }),
    };
    let sites = router.sites();
    if state.shares_sites() {
        sites.share(Arc::new(state.clone()), metrics.clone());
    }
    let (queue, _scheduler) =
        portcullis_queue::Queue::start(spool, pending, Arc::new(router), settings, metrics);
    Ok((queue, sites))
}

/// Messages being delivered at once (Postfix's active queue is bounded
/// the same way); the rest wait their turn in the queue.
const MAX_ACTIVE_DELIVERIES: usize = 512;
