//! Listeners, TLS and the I/O driver: the edge where sockets, files and
//! tokio live. It wires the rooms together (the SMTP session, the spool,
//! local delivery) and holds no protocol logic of its own: the session
//! decides what to say, the checks in `checks.rs` decide who may send to
//! whom.

mod admin;
mod admission;
mod checks;
mod connection;
mod dnslists;
mod http;
mod local;
mod metrics;
mod reloading;
mod rspamd;
pub mod state;
mod submission;
mod tls;
pub mod trace;

use anyhow::Context as _;
use portcullis_config::{Config, ListenerRole};
use portcullis_queue::{Spool, SpoolOptions};
use portcullis_smtp::{Limits, Role, SessionConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{error, info};

pub use tls::certificate_paths;

/// What every connection task shares.
pub(crate) struct Context {
    pub config: Config,
    pub spool: Spool,
    pub local: local::Handle,
    pub submission: submission::Submission,
    pub verifier: portcullis_authn::Verifier,
    pub admission: admission::Admission,
    pub admin_token: String,
    pub metrics: Arc<metrics::Metrics>,
    pub tls: tokio_rustls::TlsAcceptor,
    pub sessions: Arc<Semaphore>,
    next_session: AtomicU64,
}

impl Context {
    fn session_config(&self, role: ListenerRole) -> Arc<SessionConfig> {
        let l = &self.config.limits;
        Arc::new(SessionConfig {
            hostname: self.config.hostname.clone(),
            role: match role {
                ListenerRole::Mx => Role::Mx,
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

/// Run the server until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let tls = tls::acceptor(&config)?;
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
    let verifier = portcullis_authn::Verifier::new(
        &config.hostname,
        &config.dns_nameservers,
        config.dns_timeout,
    )?;
    let local = local::start(&config, spool.clone(), verifier.clone(), pending)?;
    let submission = submission::Submission::new(&config)?;
    if let Err(e) = submission.log.expire(std::time::SystemTime::now()) {
        tracing::warn!(event = "log_expire_failed", error = %e);
    }

    let admission = admission::Admission::new(&config, submission.metrics.clone())?;
    let _state_lock = state::lock_or_share(&config)?;
    info!(event = "state", backend = admission.state.backend_name());
    let admin_token = admin::admin_token(&config)?;
    let ctx = Arc::new(Context {
        admin_token,
        admission,
        metrics: submission.metrics.clone(),
        verifier,
        submission,
        sessions: Arc::new(Semaphore::new(config.limits.max_sessions)),
        config,
        spool,
        local,
        tls,
        next_session: AtomicU64::new(1),
    });
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(state::maintain(
        ctx.admission.state.clone(),
        ctx.config.data_dir.clone(),
    ));
    let mut banner = Vec::new();
    for l in &ctx.config.listeners {
        for addr in &l.bind {
            let sock = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} ({} listener)", l.role.name()))?;
            banner.push(listener_line(l.role, sock.local_addr()?));
            tasks.spawn(accept_loop(ctx.clone(), sock, l.clone()));
        }
    }
    if let Some(addr) = ctx.config.http_bind {
        let sock = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (http)"))?;
        banner.push(format!("  http         http://{}/", sock.local_addr()?));
        tasks.spawn(http::serve(ctx.clone(), sock));
    }
    print_banner(&ctx.config, &banner);
    shutdown_signal().await;
    info!(
        event = "shutdown",
        "stopping: accepted mail is safe in the spool"
    );
    tasks.abort_all();
    if let Err(e) = ctx.admission.state.maintain() {
        error!(event = "state_snapshot_failed", error = %e);
    }
    Ok(())
}

fn listener_line(role: ListenerRole, addr: std::net::SocketAddr) -> String {
    match role {
        ListenerRole::Mx => {
            format!("  mx           smtp://{addr}   (transfer: no AUTH, never relays)")
        }
        ListenerRole::Submission => {
            format!("  submission   smtp://{addr}   (STARTTLS, then AUTH for every message)")
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
    let mx = config
        .listeners
        .iter()
        .find(|l| l.role == ListenerRole::Mx)
        .and_then(|l| l.bind.first());
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

async fn accept_loop(ctx: Arc<Context>, sock: TcpListener, listener: portcullis_config::Listener) {
    let scfg = ctx.session_config(listener.role);
    loop {
        let (stream, peer) = match sock.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                error!(event = "accept_error", error = %e);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let permit = ctx.sessions.clone().try_acquire_owned().ok();
        let conn = connection::Connection {
            ctx: ctx.clone(),
            id: ctx.session_id(),
            role: listener.role,
            pregreet_wait: listener.pregreet_wait,
            session_config: scfg.clone(),
            peer,
            account_session: std::sync::Mutex::new(None),
            spf: std::sync::Mutex::new(None),
            tarpit: std::sync::atomic::AtomicU32::new(0),
            gate: tokio::sync::Mutex::new(None),
            client_labels: std::sync::Mutex::new(Vec::new()),
            list_labels: std::sync::Mutex::new(Vec::new()),
        };
        tokio::spawn(conn.run(stream, permit));
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
