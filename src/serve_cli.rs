//! `serve` and `check-config`: start the server with logging and process
//! limits set up, or only check that a config file is valid. The server
//! itself lives in crates/server; this file only prepares the process.

use crate::config_file::Source;
use anyhow::Context as _;
use portcullis_config::Config;
use std::path::PathBuf;

/// The config is valid and `serve` would start on it: its certificate
/// and key load and match, its data directory is usable.
pub fn check_config(source: &Source) -> anyhow::Result<()> {
    let c = crate::config_file::load(source, false)?;
    portcullis_server::preflight(&c)?;
    crate::shaping_cli::check_sources(&c)?;
    let name = source.path().map_or_else(
        || "embedded default".to_owned(),
        |p| p.display().to_string(),
    );
    println!(
        "{name}: ok ({} listeners, local domains: {})",
        c.listeners.len(),
        c.local_domains.join(", ")
    );
    check_milters(&c)?;
    Ok(())
}

/// Connect to each milter and say what it negotiated; one that cannot be
/// reached is reported, not an error of the config (it may start later).
fn check_milters(c: &Config) -> anyhow::Result<()> {
    if c.milters.is_empty() {
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    for m in &c.milters {
        match rt.block_on(portcullis_milter::probe(m)) {
            Ok(n) => println!("milter {} ({}): {n}", m.name, m.socket),
            Err(e) => println!("milter {} ({}): cannot use it: {e}", m.name, m.socket),
        }
    }
    Ok(())
}

pub fn serve(config: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| "info".into());
    // PORTCULLIS_LOG_FORMAT=json: one JSON object per line, the event's
    // fields at the top level, for log shippers (and the tests' oracle).
    if std::env::var("PORTCULLIS_LOG_FORMAT").is_ok_and(|f| f == "json") {
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    raise_open_file_limit();
    return_large_allocations();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(async {
        let server = portcullis_server::Server::start(config, path).await?;
        server.print_banner();
        until_stopped(&server).await;
        server.stop().await;
        Ok(())
    })
}

/// Wait for SIGTERM or SIGINT, reloading on every SIGHUP meanwhile.
async fn until_stopped(server: &portcullis_server::Server) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut hup), Ok(mut term)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!(
            event = "signals_unavailable",
            "cannot install signal handlers; stopping on Ctrl-C only"
        );
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => server.reload(),
            _ = term.recv() => return,
            _ = tokio::signal::ctrl_c() => return,
        }
    }
}

/// glibc serves large blocks (argon2id's memory, big messages) from
/// per-thread arenas once its dynamic mmap threshold has risen, and keeps
/// them after they are freed: a burst of AUTH attempts on many blocking
/// threads then leaves hundreds of MiB resident. A fixed threshold makes
/// every block of 1 MiB or more its own mapping, returned when freed.
fn return_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any
    // other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Each SMTP session holds a socket: lift the soft limit on open files to
/// the hard limit so `max_sessions` is what bounds them, not a default of
/// 1024 that fails accept() with EMFILE.
fn raise_open_file_limit() {
    #[cfg(unix)]
    // SAFETY: getrlimit/setrlimit with a valid, initialised struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
