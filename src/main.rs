//! The `portcullis` command line: wiring only. Each subcommand parses its
//! arguments, loads the config and calls into the crate that does the work.

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use portcullis_config::{Config, DEFAULT_DATA_DIR};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "A mail server that stops abuse at the door"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (with no --config: the embedded default on loopback).
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a config file; errors name the file, line and key.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Look at and manage the mail queue.
    Queue {
        #[command(subcommand)]
        action: QueueAction,
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum QueueAction {
    /// One line per queued message.
    List,
    /// Envelope and content of one message.
    Show { id: String },
    /// Remove a message from the queue for good.
    Delete { id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => serve(load(config.as_deref())?),
        Command::CheckConfig { config } => {
            let c = portcullis_config::load(&config)?;
            println!(
                "{}: ok ({} listeners, local domains: {})",
                config.display(),
                c.listeners.len(),
                c.local_domains.join(", ")
            );
            Ok(())
        }
        Command::Queue { action, config } => queue(action, &load(config.as_deref())?),
    }
}

/// The config file, or the embedded default (data in `$PORTCULLIS_DATA` or
/// `./portcullis-data`).
fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(portcullis_config::load(p)?),
        None => {
            let data = std::env::var_os("PORTCULLIS_DATA")
                .map_or_else(|| PathBuf::from(DEFAULT_DATA_DIR), PathBuf::from);
            Ok(Config::embedded_default(
                data,
                portcullis_config::system_hostname(),
            ))
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    raise_open_file_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(portcullis_server::serve(config))
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

fn queue(action: QueueAction, config: &Config) -> anyhow::Result<()> {
    let dir = config.data_dir.join("spool");
    match action {
        QueueAction::List => {
            let messages = portcullis_queue::inspect(&dir)?;
            for m in &messages {
                let e = &m.envelope;
                let rcpts: Vec<&str> = e.recipients.iter().map(|r| r.address.as_str()).collect();
                println!(
                    "{}  {:>8}  <{}>  {}",
                    e.id,
                    m.data.len(),
                    e.sender,
                    rcpts.join(" ")
                );
            }
            println!("{} message(s) queued", messages.len());
            Ok(())
        }
        QueueAction::Show { id } => {
            let messages = portcullis_queue::inspect(&dir)?;
            let Some(m) = messages.iter().find(|m| m.envelope.id == id) else {
                bail!("no message {id} in the queue");
            };
            println!("{}", serde_json::to_string_pretty(&m.envelope)?);
            println!();
            print!("{}", String::from_utf8_lossy(&m.data));
            Ok(())
        }
        QueueAction::Delete { id } => {
            if portcullis_queue::delete_offline(&dir, &id)? {
                println!("{id} deleted");
                Ok(())
            } else {
                bail!("no message {id} in the queue")
            }
        }
    }
}
