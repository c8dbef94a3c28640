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
mod rooms;
mod signals;
mod tls;

use anyhow::Context as _;
use portcullis_config::{Config, ListenerRole, LiveConfig};
use portcullis_pipeline::Inbound;
use portcullis_queue::Queue;
use portcullis_reports::{DmarcReports, TlsReports};
use portcullis_smtp::{Limits, Role, SessionConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{error, info};

pub use portcullis_http::srv_records;
pub use preflight::preflight;
pub use rooms::verifier;
use rooms::{InboundSigner, context, dkim_rotation, http_context, job_doors};
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

/// A running server: its listeners and tasks, and the addresses it bound
/// (a test binds port 0 and reads them here).
pub struct Server {
    ctx: Arc<Context>,
    listeners: tokio::task::JoinSet<()>,
    background: tokio::task::JoinSet<()>,
    bound: Vec<(Bound, std::net::SocketAddr)>,
    /// The thread that runs `nft`, when the kernel keeps the blocklist.
    nft: Option<portcullis_firewall::Nft>,
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
            nft: None,
            _ownership: ownership,
        };
        server.start_tasks(&config, control_socket, asks.dmarc, asks.tls)?;
        // Its table is made while the server still has every privilege it
        // started with; the log says whether it runs, and why.
        let kernel = portcullis_firewall::KernelBlocklist::from_config(
            &config,
            portcullis_firewall::caps::holds_net_admin(),
        )?;
        // HTTP first: a client (or a test) that sees an SMTP port open
        // finds /metrics and the admin API answering too.
        server.bind_http(&config).await?;
        server.bind_smtp(&config).await?;
        // Every port is bound: root is no longer needed. With the kernel's
        // blocklist the drop runs on the thread that will run `nft`, the
        // one thread that keeps CAP_NET_ADMIN.
        let user = config.user.clone();
        let data_dir = config.data_dir.clone();
        match kernel {
            Some(k) => {
                let nft = portcullis_firewall::Nft::spawn(move || {
                    privileges::drop_to(user.as_deref(), &data_dir, privileges::Keep::NetAdmin)
                })?;
                let state = ctx.inbound.admission.state.clone();
                let metrics = ctx.metrics.clone();
                server.background.spawn(k.run(state, nft.clone(), metrics));
                server.nft = Some(nft);
            }
            None => privileges::drop_to(user.as_deref(), &data_dir, privileges::Keep::Nothing)?,
        }
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
            state: state.clone(),
        };
        bg.spawn(ctx.tls_reports.clone().run(outbox.clone(), tls_asks));
        bg.spawn(ctx.dmarc.clone().run(outbox, dmarc_asks));
        bg.spawn(dkim_rotation(ctx.config.clone()));
        let every = Duration::from_secs(config.admission.refusal_log_secs);
        bg.spawn(ctx.refusals.clone().run(every));
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
        if let Some(nft) = &self.nft {
            nft.remove_table().await;
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
