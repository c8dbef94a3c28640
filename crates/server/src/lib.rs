//! Wiring only: open every room the config names, bind the listeners,
//! start the tasks, drop privileges, and stop in order. The accept path
//! (`listen.rs`), the mechanical session driver (`driver.rs`), TLS, the
//! reload on SIGHUP (`signals.rs`) and the privilege drop live here; every
//! feature lives in its own room (reports in `portcullis-reports`, HTTP in
//! `portcullis-http`, ACME in `portcullis-acme`, the kernel's blocklist in
//! `portcullis-firewall`, DKIM rotation in `portcullis-authn`).
//!
//! What this crate must not do: decide anything. The `smtp` session
//! decides what to say, the way in (`portcullis-pipeline`) who may send
//! what to whom, the queue when mail goes out. [`Server::start`] is what a
//! test calls; the binary adds the signals.

mod driver;
mod listen;
mod preflight;
mod privileges;
mod proxied;
mod signals;
mod tls;

use anyhow::Context as _;
use portcullis_config::{Config, ListenerRole, LiveConfig};
use portcullis_control::{Job, JobDoor};
use portcullis_pipeline::Inbound;
use portcullis_queue::{Queue, Spool, SpoolOptions};
use portcullis_reports::{DmarcReports, TlsReports};
use portcullis_smtp::{Limits, Role, SessionConfig};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{error, info};

pub use portcullis_http::srv_records;
pub use preflight::preflight;
pub use tls::certificate_paths;

/// What every connection task shares.
pub(crate) struct Context {
    /// The configuration in force; SIGHUP swaps it. A connection keeps the
    /// one it started with.
    config: LiveConfig,
    config_path: Option<std::path::PathBuf>,
    /// The way in: the services every stage consults.
    pub inbound: Arc<Inbound>,
    pub queue: Queue,
    /// The operator's operations on the live queue and state.
    pub control: portcullis_control::Control,
    /// Postfix's policy delegation protocol, for policy listeners.
    pub policy: Arc<portcullis_policyd::PolicyService>,
    pub metrics: Arc<portcullis_metrics::Metrics>,
    /// Sessions held to MTA-STS or DANE, for TLS-RPT (RFC 8460).
    pub tls_reports: Arc<TlsReports>,
    /// Accepted mail's rows for DMARC aggregate reports (RFC 7489 §7.2).
    pub dmarc: Arc<DmarcReports>,
    /// The SMTP listeners' TLS (STARTTLS and implicit) ...
    tls: tokio_rustls::TlsAcceptor,
    /// ... and the HTTPS host's, which also answers ACME's TLS-ALPN-01;
    /// both serve the certificate `certs` holds.
    https: tokio_rustls::TlsAcceptor,
    pub(crate) certs: Arc<tls::Certificates>,
    /// The ACME certificate's expiry and failed orders, for /metrics.
    pub(crate) acme: Arc<portcullis_acme::AcmeStatus>,
    pub sessions: Arc<Semaphore>,
    /// Refused connections, summed up in the log.
    pub refusals: Arc<portcullis_pipeline::RefusalLog>,
    /// Set on stop: sessions finish the message they are sending, then
    /// are told 421 and closed.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    next_session: AtomicU64,
}

impl Context {
    pub(crate) fn config(&self) -> Arc<Config> {
        self.config.get()
    }

    pub(crate) fn tls(&self) -> tokio_rustls::TlsAcceptor {
        self.tls.clone()
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
    portcullis_authn::SuffixList::for_config(config).map_err(anyhow::Error::msg)
}

/// A running server: its listeners and tasks, and the addresses it bound
/// (a test binds port 0 and reads them here).
pub struct Server {
    ctx: Arc<Context>,
    listeners: tokio::task::JoinSet<()>,
    background: tokio::task::JoinSet<()>,
    bound: Vec<(Bound, std::net::SocketAddr)>,
    /// Held for the server's life: a second server on the same data
    /// directory stops at start.
    _ownership: portcullis_control::Ownership,
}

/// What a bound address serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    Smtp(ListenerRole),
    Http,
    MtaSts,
}

/// Run the server until `shutdown` completes, then stop in order. The
/// binary passes its signals; SIGHUP is [`Server::reload`].
pub async fn serve(
    config: Config,
    path: Option<std::path::PathBuf>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let server = Server::start(config, path).await?;
    server.print_banner();
    shutdown.await;
    server.stop().await;
    Ok(())
}

impl Server {
    /// Open every room, bind every listener, start every task, and drop
    /// to `user`.
    pub async fn start(config: Config, path: Option<std::path::PathBuf>) -> anyhow::Result<Server> {
        preflight::data_dir_usable(&config.data_dir)?;
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!("cannot create data directory {}", config.data_dir.display())
        })?;
        // First, before anything in the data directory is read or changed:
        // a second server on the same directory stops here, whatever its
        // state backend, and never touches the spool the first one writes.
        let ownership = portcullis_control::claim(&config.data_dir)?;
        let control_socket = portcullis_control::bind(&config.data_dir)?;
        let (doors, asks) = job_doors(&config);
        let ctx = Arc::new(context(config, path, doors)?);
        let config = ctx.config();
        let mut server = Server {
            ctx: ctx.clone(),
            listeners: tokio::task::JoinSet::new(),
            background: tokio::task::JoinSet::new(),
            bound: Vec::new(),
            _ownership: ownership,
        };
        server.start_tasks(&config, control_socket, asks.dmarc, asks.tls)?;
        // HTTP first: a client (or a test) that sees an SMTP port open
        // finds /metrics and the admin API answering too.
        server.bind_http(&config).await?;
        server.bind_smtp(&config).await?;
        // Every port is bound: root is no longer needed.
        privileges::drop_to(config.user.as_deref(), &config.data_dir)?;
        // After the HTTPS host is bound (the CA validates there) and as
        // the user who owns DATA/acme.
        if let Some(settings) = config.acme.clone() {
            let task = portcullis_acme::AcmeTask {
                settings,
                data_dir: config.data_dir.clone(),
                certificate: ctx.certs.clone(),
                status: ctx.acme.clone(),
                metrics: ctx.metrics.clone(),
            };
            server
                .background
                .spawn(portcullis_acme::run_acme(task, asks.acme));
        }
        Ok(server)
    }

    /// The addresses bound, each with what it serves.
    pub fn bound(&self) -> &[(Bound, std::net::SocketAddr)] {
        &self.bound
    }

    /// The first address serving `what`.
    pub fn address(&self, what: Bound) -> Option<std::net::SocketAddr> {
        self.bound.iter().find(|(b, _)| *b == what).map(|(_, a)| *a)
    }

    /// SIGHUP: read the config file again (or, on the embedded default,
    /// the certificate files).
    pub fn reload(&self) {
        signals::reload(&self.ctx)
    }

    fn start_tasks(
        &mut self,
        config: &Config,
        control_socket: tokio::net::UnixListener,
        dmarc_asks: portcullis_reports::RunRequests,
        tls_asks: portcullis_reports::RunRequests,
    ) -> anyhow::Result<()> {
        let ctx = &self.ctx;
        let bg = &mut self.background;
        let state = ctx.inbound.admission.state.clone();
        bg.spawn(portcullis_state::maintain(state.clone()));
        bg.spawn(ctx.control.clone().serve(control_socket));
        let outbox = portcullis_reports::Outbox {
            config: ctx.config.clone(),
            queue: ctx.queue.clone(),
            signer: Arc::new(InboundSigner(ctx.inbound.clone())),
        };
        bg.spawn(ctx.tls_reports.clone().run(outbox.clone(), tls_asks));
        bg.spawn(ctx.dmarc.clone().run(outbox, dmarc_asks));
        bg.spawn(dkim_rotation(ctx.config.clone()));
        let every = Duration::from_secs(config.admission.refusal_log_secs);
        bg.spawn(ctx.refusals.clone().run(every));
        if let Some(k) = portcullis_firewall::KernelBlocklist::from_config(config)? {
            bg.spawn(k.run(state.clone()));
        }
        bg.spawn(state.follow_cluster());
        Ok(())
    }

    async fn bind_smtp(&mut self, config: &Config) -> anyhow::Result<()> {
        for l in &config.listeners {
            for addr in &l.bind {
                let sock = TcpListener::bind(addr).await.with_context(|| {
                    format!("cannot listen on {addr} ({} listener)", l.role.name())
                })?;
                self.bound.push((Bound::Smtp(l.role), sock.local_addr()?));
                let ctx = self.ctx.clone();
                match l.role {
                    ListenerRole::Policy => {
                        self.listeners
                            .spawn(listen::policy_loop(ctx, sock, l.clone()))
                    }
                    _ => self
                        .listeners
                        .spawn(listen::accept_loop(ctx, sock, l.clone())),
                };
            }
        }
        Ok(())
    }

    async fn bind_http(&mut self, config: &Config) -> anyhow::Result<()> {
        let http = Arc::new(http_context(&self.ctx, config)?);
        if let Some(addr) = config.http_bind {
            let sock = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (http)"))?;
            self.bound.push((Bound::Http, sock.local_addr()?));
            self.background
                .spawn(portcullis_http::serve_site(http.clone(), sock));
        }
        if let Some(addr) = config.mta_sts_bind {
            let sock = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (MTA-STS policy host)"))?;
            self.bound.push((Bound::MtaSts, sock.local_addr()?));
            self.background
                .spawn(portcullis_http::serve_mta_sts(http, sock));
        }
        Ok(())
    }

    /// Stop: no new connections, sessions finish the message they are
    /// sending, deliveries under way finish, the state and the report
    /// periods are saved.
    pub async fn stop(mut self) {
        let ctx = &self.ctx;
        info!(
            event = "shutdown",
            "stopping: no new connections; sessions finish the message they are sending"
        );
        self.listeners.shutdown().await;
        ctx.shutdown.send_replace(true);
        let config = ctx.config();
        drain(ctx, config.limits.max_sessions).await;
        ctx.queue.settle(Duration::from_secs(10)).await;
        self.background.shutdown().await;
        if let Err(e) = ctx.inbound.admission.state.maintain() {
            error!(event = "state_snapshot_failed", error = %e);
        }
        if let Err(e) = ctx.dmarc.save() {
            error!(event = "dmarc_period_save_failed", error = %e);
        }
        if let Err(e) = ctx.tls_reports.save() {
            error!(event = "tls_period_save_failed", error = %e);
        }
        if config.admission.kernel_blocklist {
            portcullis_firewall::KernelBlocklist::remove();
        }
        info!(event = "stopped", "accepted mail is safe in the spool");
    }

    /// One line per listener, and how to send a first message.
    pub fn print_banner(&self) {
        let lines: Vec<String> = self
            .bound
            .iter()
            .map(|(what, addr)| match what {
                Bound::Smtp(role) => listener_line(*role, *addr),
                Bound::Http => format!("  http         http://{addr}/"),
                Bound::MtaSts => {
                    format!("  mta-sts      https://{addr}/.well-known/mta-sts.txt")
                }
            })
            .collect();
        print_banner(&self.ctx.config(), &lines);
    }
}

/// The run-now doors of the jobs whose tasks run (a job whose task is
/// off has no door: the CLI is told why), and the tasks' ends.
fn job_doors(config: &Config) -> (HashMap<Job, JobDoor>, JobAsks) {
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

struct JobAsks {
    acme: portcullis_reports::RunRequests,
    dmarc: portcullis_reports::RunRequests,
    tls: portcullis_reports::RunRequests,
}

/// Reports are signed with the submission side's DKIM keys.
struct InboundSigner(Arc<Inbound>);

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
async fn dkim_rotation(config: LiveConfig) {
    let c = config.get();
    let every = c.submission.dkim_activate_check_secs;
    let Some(resolver) = portcullis_reports::periodic_resolver(&c, every, "dkim activation") else {
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
fn http_context(ctx: &Context, config: &Config) -> anyhow::Result<portcullis_http::HttpContext> {
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
fn context(
    config: Config,
    path: Option<std::path::PathBuf>,
    jobs: HashMap<Job, JobDoor>,
) -> anyhow::Result<Context> {
    let (certs, tls, https) = tls::acceptors(&config)?;
    let metrics = Arc::new(portcullis_metrics::Metrics::default());
    let tls_reports = TlsReports::open(&config.data_dir, metrics.clone())
        .with_context(|| format!("cannot open {}", config.data_dir.join("tlsrpt").display()))?;
    let tls_reports = Arc::new(tls_reports);
    let queue = open_queue(&config, metrics.clone(), tls_reports.clone())?;
    let dmarc = DmarcReports::open(&config.data_dir)
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
        inbound,
        queue,
        control,
        tls_reports,
        dmarc,
        metrics,
        sessions: Arc::new(Semaphore::new(config.limits.max_sessions)),
        refusals: Arc::new(portcullis_pipeline::RefusalLog::new(&config.admission)),
        config: LiveConfig::new(config),
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
    tls_reports: Arc<TlsReports>,
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
    tls_reports: Arc<TlsReports>,
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
        let store = portcullis_reportbox::ReportStore::open(
            &config.data_dir,
            &config.dmarc,
            metrics.clone(),
        )
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
