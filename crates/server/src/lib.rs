//! The edge where sockets, files and tokio live: listeners and the accept
//! path (`listen.rs`), the mechanical session driver (`driver.rs`), TLS,
//! signals, the HTTP listener (admin API, dashboard, autoconfig) and the
//! privilege drop. It wires the rooms together and decides nothing: the
//! `smtp` session decides what to say, the way in (`portcullis-pipeline`)
//! who may send what to whom, the queue when mail goes out.

mod acme;
mod admin;
mod autoconfig;
mod dkim_rotation;
mod dmarc_reports;
mod driver;
mod http;
mod kernel;
mod listen;
mod mta_sts_host;
mod preflight;
mod privileges;
mod proxied;
mod refusals;
mod report_mail;
mod report_store;
mod signals;
mod tls;
mod tls_reports;

use anyhow::Context as _;
use portcullis_config::{Config, ListenerRole};
use portcullis_pipeline::Inbound;
use portcullis_queue::{Queue, Spool, SpoolOptions};
use portcullis_smtp::{Limits, Role, SessionConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{error, info};

pub use autoconfig::srv_records;
pub use preflight::preflight;
pub use tls::certificate_paths;

/// What every connection task shares.
pub(crate) struct Context {
    /// The configuration in force; SIGHUP swaps it. A connection keeps the
    /// one it started with.
    config: std::sync::RwLock<Arc<Config>>,
    config_path: Option<std::path::PathBuf>,
    /// The way in: the services every stage consults.
    pub inbound: Arc<Inbound>,
    pub queue: Queue,
    /// The operator's operations on the live queue and state.
    pub control: portcullis_control::Control,
    /// Postfix's policy delegation protocol, for policy listeners.
    pub policy: Arc<portcullis_policyd::PolicyService>,
    pub admin_token: String,
    pub metrics: Arc<portcullis_metrics::Metrics>,
    /// Sessions held to MTA-STS or DANE, for TLS-RPT (RFC 8460).
    pub tls_reports: Arc<tls_reports::TlsReports>,
    /// Accepted mail's rows for DMARC aggregate reports (RFC 7489 §7.2).
    pub dmarc: Arc<dmarc_reports::DmarcStore>,
    /// The SMTP listeners' TLS (STARTTLS and implicit) ...
    tls: tokio_rustls::TlsAcceptor,
    /// ... and the HTTPS host's, which also answers ACME's TLS-ALPN-01;
    /// both serve the certificate `certs` holds.
    https: tokio_rustls::TlsAcceptor,
    pub(crate) certs: Arc<tls::Certificates>,
    /// The ACME certificate's expiry and failed orders, for /metrics.
    pub(crate) acme: acme::Status,
    pub sessions: Arc<Semaphore>,
    /// Refused connections, summed up in the log.
    pub refusals: Arc<refusals::RefusalLog>,
    /// Set on SIGTERM: sessions finish the message they are sending, then
    /// are told 421 and closed.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    next_session: AtomicU64,
}

impl Context {
    pub(crate) fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn tls(&self) -> tokio_rustls::TlsAcceptor {
        self.tls.clone()
    }

    pub(crate) fn https(&self) -> tokio_rustls::TlsAcceptor {
        self.https.clone()
    }

    fn session_config(config: &Config, role: ListenerRole) -> Arc<SessionConfig> {
        let l = &config.limits;
        Arc::new(SessionConfig {
            hostname: config.hostname.clone(),
            role: match role {
                // A policy listener has no SMTP session (listen.rs serves
                // it with the policy service); its limits are the mx one's.
                ListenerRole::Mx | ListenerRole::Policy => Role::Mx,
                ListenerRole::Submission => Role::Submission,
                ListenerRole::Submissions => Role::Submissions,
            },
            limits: Limits {
                command_line: l.command_line_octets,
                text_line: l.text_line_octets,
                max_recipients: l.max_recipients,
                max_message_size: l.max_message_size,
                max_errors: l.max_errors,
                command_timeout: Duration::from_secs(l.command_timeout_secs),
                data_timeout: Duration::from_secs(l.data_timeout_secs),
            },
            tls_available: true,
        })
    }

    fn session_id(&self) -> String {
        format!("{:06x}", self.next_session.fetch_add(1, Ordering::Relaxed))
    }
}

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
    let Some(path) = &config.dmarc.public_suffix_list else {
        return Ok(portcullis_authn::SuffixList::built_in());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("[dmarc] public_suffix_list: cannot read {}", path.display()))?;
    let list = portcullis_authn::SuffixList::parse(&text)
        .with_context(|| format!("[dmarc] public_suffix_list: {}", path.display()))?;
    Ok(Arc::new(list))
}

/// Run the server until SIGINT or SIGTERM; SIGHUP reloads `path`.
pub async fn serve(config: Config, path: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    preflight::data_dir_usable(&config.data_dir)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    // First, before anything in the data directory is read or changed: a
    // second server on the same directory stops here, whatever its state
    // backend, and never touches the spool the first one is writing.
    let _ownership = portcullis_control::claim(&config.data_dir)?;
    let control_socket = portcullis_control::bind(&config.data_dir)?;
    use portcullis_control::Job;
    let (acme_door, acme_asks) = portcullis_control::job_door();
    let (dmarc_door, dmarc_asks) = portcullis_control::job_door();
    // A job whose task is off has no door: the CLI is told why.
    let mut jobs = std::collections::HashMap::new();
    if config.dmarc.send_reports {
        jobs.insert(Job::DmarcReports, dmarc_door);
    }
    if config.acme.is_some() {
        jobs.insert(Job::AcmeRenew, acme_door);
    }
    let ctx = Arc::new(context(config, path, jobs)?);
    let config = ctx.config();
    let mut background = tokio::task::JoinSet::new();
    background.spawn(portcullis_state::maintain(
        ctx.inbound.admission.state.clone(),
    ));
    background.spawn(ctx.control.clone().serve(control_socket));
    background.spawn(tls_reports::run(ctx.clone()));
    background.spawn(dmarc_reports::run(ctx.clone(), dmarc_asks));
    background.spawn(dkim_rotation::run(ctx.clone()));
    let every = Duration::from_secs(config.admission.refusal_log_secs);
    background.spawn(ctx.refusals.clone().run(every));
    let kernel = kernel_blocklist(&config)?;
    if let Some(k) = kernel {
        background.spawn(k.run(ctx.inbound.admission.state.clone()));
    }
    background.spawn(ctx.inbound.admission.state.clone().follow_cluster());
    let mut listeners = tokio::task::JoinSet::new();
    let mut banner = Vec::new();
    for l in &config.listeners {
        for addr in &l.bind {
            let sock = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} ({} listener)", l.role.name()))?;
            banner.push(listener_line(l.role, sock.local_addr()?));
            match l.role {
                ListenerRole::Policy => {
                    listeners.spawn(listen::policy_loop(ctx.clone(), sock, l.clone()))
                }
                _ => listeners.spawn(listen::accept_loop(ctx.clone(), sock, l.clone())),
            };
        }
    }
    if let Some(addr) = config.http_bind {
        let sock = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (http)"))?;
        banner.push(format!("  http         http://{}/", sock.local_addr()?));
        background.spawn(http::serve(ctx.clone(), sock));
    }
    if let Some(addr) = config.mta_sts_bind {
        let sock = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (MTA-STS policy host)"))?;
        banner.push(format!(
            "  mta-sts      https://{}/.well-known/mta-sts.txt",
            sock.local_addr()?
        ));
        background.spawn(mta_sts_host::serve(ctx.clone(), sock));
    }
    // Every port is bound: root is no longer needed.
    privileges::drop_to(config.user.as_deref(), &config.data_dir)?;
    // After the HTTPS host is bound (the CA validates there) and as the
    // user who owns DATA/acme.
    background.spawn(acme::run(ctx.clone(), acme_asks));
    print_banner(&config, &banner);
    signals::run(&ctx).await;
    stop(&ctx, listeners, background, config.limits.max_sessions).await;
    if config.admission.kernel_blocklist {
        kernel::KernelBlocklist::remove();
    }
    Ok(())
}

/// The kernel's copy of the blocklist, for the mx listeners' ports.
fn kernel_blocklist(config: &Config) -> anyhow::Result<Option<kernel::KernelBlocklist>> {
    if !config.admission.kernel_blocklist {
        return Ok(None);
    }
    if config.user.is_some() {
        // After the drop to `user` nft would no longer be allowed.
        anyhow::bail!(
            "[admission] kernel_blocklist keeps CAP_NET_ADMIN, which dropping to `user` gives up: run as that user with the capability instead (systemd: User= and AmbientCapabilities=CAP_NET_ADMIN)"
        );
    }
    let ports = config
        .listeners
        .iter()
        .filter(|l| l.role == ListenerRole::Mx)
        .flat_map(|l| l.bind.iter().map(|a| a.port()))
        .collect();
    kernel::KernelBlocklist::start(ports).map(Some)
}

/// SIGTERM: no new connections, sessions finish the message they are
/// sending, deliveries under way finish, the state is saved.
async fn stop(
    ctx: &Context,
    mut listeners: tokio::task::JoinSet<()>,
    mut background: tokio::task::JoinSet<()>,
    max_sessions: usize,
) {
    info!(
        event = "shutdown",
        "stopping: no new connections; sessions finish the message they are sending"
    );
    listeners.shutdown().await;
    ctx.shutdown.send_replace(true);
    drain(ctx, max_sessions).await;
    ctx.queue.settle(Duration::from_secs(10)).await;
    background.shutdown().await;
    if let Err(e) = ctx.inbound.admission.state.maintain() {
        error!(event = "state_snapshot_failed", error = %e);
    }
    if let Err(e) = ctx.dmarc.save() {
        error!(event = "dmarc_period_save_failed", error = %e);
    }
    info!(event = "stopped", "accepted mail is safe in the spool");
}

/// Open every room the config names and wire them together.
fn context(
    config: Config,
    path: Option<std::path::PathBuf>,
    jobs: std::collections::HashMap<portcullis_control::Job, portcullis_control::JobDoor>,
) -> anyhow::Result<Context> {
    let (certs, tls, https) = tls::acceptors(&config)?;
    let metrics = Arc::new(portcullis_metrics::Metrics::default());
    let tls_reports = Arc::new(tls_reports::TlsReports::new(metrics.clone()));
    let queue = open_queue(&config, metrics.clone(), tls_reports.clone())?;
    let dmarc = dmarc_reports::DmarcStore::open(&config.data_dir)
        .with_context(|| format!("cannot open {}", config.data_dir.join("dmarc").display()))?;
    let dmarc = Arc::new(dmarc);
    let mut inbound = inbound(&config, queue.clone(), metrics.clone())?;
    if config.dmarc.send_reports {
        inbound.dmarc_observations = Some(dmarc.clone());
    }
    let inbound = Arc::new(inbound);
    info!(
        event = "state",
        backend = inbound.admission.state.backend_name()
    );
    let control = portcullis_control::Control {
        queue: queue.clone(),
        state: inbound.admission.state.clone(),
        files: Some(Arc::new(LiveFiles(inbound.clone()))),
        jobs,
    };
    let policy = portcullis_policyd::PolicyService::new(inbound.clone(), Arc::new(config.clone()));
    Ok(Context {
        policy: Arc::new(policy),
        admin_token: admin::admin_token(&config)?,
        inbound,
        queue,
        control,
        tls_reports,
        dmarc,
        metrics,
        sessions: Arc::new(Semaphore::new(config.limits.max_sessions)),
        refusals: Arc::new(refusals::RefusalLog::new(&config.admission)),
        config: std::sync::RwLock::new(Arc::new(config)),
        config_path: path,
        tls,
        https,
        certs,
        acme: acme::Status::default(),
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
) -> anyhow::Result<Inbound> {
    let verifier = verifier(config, &config.dns_nameservers, config.dns_timeout)?;
    let submission = portcullis_pipeline::Submission::new(config, metrics.clone())?;
    if let Err(e) = submission.log.expire(std::time::SystemTime::now()) {
        tracing::warn!(event = "log_expire_failed", error = %e);
    }
    let state = portcullis_state::Store::open(config)?;
    Ok(Inbound {
        checks: Arc::new(verifier),
        queue: Arc::new(queue),
        admission: portcullis_pipeline::ClassOfService::new(config, state, metrics.clone())?,
        submission,
        forwarding: portcullis_pipeline::Forwarding::new(config)?,
        metrics,
        dmarc_observations: None,
    })
}

/// The spool, with what it recovered handed to the queue.
fn open_queue(
    config: &Config,
    metrics: Arc<portcullis_metrics::Metrics>,
    tls_reports: Arc<tls_reports::TlsReports>,
) -> anyhow::Result<Queue> {
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
    start_queue(config, spool, pending, metrics, tls_reports)
}

/// The way out: the router over our mailboxes and DNS, and the queue
/// that schedules it, starting with what the spool recovered.
fn start_queue(
    config: &Config,
    spool: Spool,
    pending: Vec<portcullis_queue::StoredMessage>,
    metrics: Arc<portcullis_metrics::Metrics>,
    tls_reports: Arc<tls_reports::TlsReports>,
) -> anyhow::Result<portcullis_queue::Queue> {
    use portcullis_delivery::{DnsRoutes, Mailboxes, MaildirStore, Router};
    let store = MaildirStore::new(config.data_dir.join("mail"), &config.hostname);
    let mailboxes = Mailboxes::start(store).context("cannot start the mailbox writer")?;
    let routes =
        DnsRoutes::new(&config.dns_nameservers, config.dns_timeout)?.trust_ad(config.dns_trust_ad);
    let mut router = Router::new(config, mailboxes, Arc::new(routes))?;
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
    if config.dmarc.report_mailbox.is_some() {
        let store =
            report_store::ReportStore::open(&config.data_dir, &config.dmarc, metrics.clone())
                .context("cannot open the report store (DATA/reports)")?;
        router = router.with_reports(Arc::new(store));
    }
    let settings = portcullis_queue::QueueSettings {
        hostname: config.hostname.clone(),
        schedule: portcullis_queue::Schedule::from_config(&config.delivery),
        max_active: MAX_ACTIVE_DELIVERIES,
    };
    let (queue, _scheduler) =
        portcullis_queue::Queue::start(spool, pending, Arc::new(router), settings, metrics);
    Ok(queue)
}

/// Messages being delivered at once (Postfix's active queue is bounded
/// the same way); the rest wait their turn in the queue.
const MAX_ACTIVE_DELIVERIES: usize = 512;

/// Longest a stop waits for sessions to finish their messages.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Wait until every session has ended (each holds a permit), or give up
/// after `DRAIN_TIMEOUT`: nothing unanswered was accepted, so what is cut
/// off is sent again by its client.
async fn drain(ctx: &Context, max_sessions: usize) {
    let all = u32::try_from(max_sessions).unwrap_or(u32::MAX);
    match tokio::time::timeout(DRAIN_TIMEOUT, ctx.sessions.acquire_many(all)).await {
        Ok(_) => info!(event = "drained", "every session has ended"),
        Err(_) => {
            let open = max_sessions - ctx.sessions.available_permits();
            tracing::warn!(
                event = "drain_timeout",
                sessions = open,
                "closing the sessions still open"
            );
        }
    }
}

fn listener_line(role: ListenerRole, addr: std::net::SocketAddr) -> String {
    match role {
        ListenerRole::Mx => {
            format!("  mx           smtp://{addr}   (transfer: no AUTH, never relays)")
        }
        ListenerRole::Submission => {
            format!("  submission   smtp://{addr}   (STARTTLS, then AUTH for every message)")
        }
        ListenerRole::Policy => {
            format!("  policy       tcp://{addr}    (Postfix check_policy_service)")
        }
        ListenerRole::Submissions => {
            format!("  submissions  smtps://{addr}  (implicit TLS, AUTH for every message)")
        }
    }
}

fn print_banner(config: &Config, lines: &[String]) {
    let domain = config
        .local_domains
        .first()
        .map_or("localhost", String::as_str);
    let mx = config.listener_addr(ListenerRole::Mx);
    println!(
        "portcullis is running as {}; data in {}",
        config.hostname,
        config.data_dir.display()
    );
    for l in lines {
        println!("{l}");
    }
    if let Some(mx) = mx {
        let server = match mx.ip() {
            ip if ip.is_unspecified() => format!("127.0.0.1:{}", mx.port()),
            _ => mx.to_string(),
        };
        println!("Send a first message:  swaks --server {server} --to postmaster@{domain}");
        println!(
            "It lands in:           {}/mail/{domain}/postmaster/new/",
            config.data_dir.display()
        );
    }
}

/// The config's resolver for a periodic task, or None (said in the log)
/// when the task is off (`every` 0) or no resolver can be made.
pub(crate) fn periodic_resolver(
    ctx: &Context,
    every: u64,
    task: &'static str,
) -> Option<portcullis_dns::hickory_resolver::TokioResolver> {
    if every == 0 {
        return None;
    }
    let c = ctx.config();
    match portcullis_dns::resolver_without_negative_cache(&c.dns_nameservers, c.dns_timeout) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(event = "periodic_task_off", task, error = %e);
            None
        }
    }
}
