//! `reputation`, `blocklist` and `known-senders`: the operator's view of
//! admission state. With Redis the CLI talks to Redis like any node; with
//! the embedded backend it edits the snapshot when no server runs, and
//! otherwise hands the change to the running server (which owns the
//! state) and waits for its answer.

use anyhow::Context as _;
use clap::Subcommand;
use portcullis_admission::{Identity, Policy, StateCommand};
use portcullis_config::{Cidr, Config, StateBackend};
use portcullis_state::{self as state, Store as AdmissionState};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Subcommand)]
pub enum ReputationAction {
    /// Volume, quality and class of one identity (a domain, `known:NAME`,
    /// `alloc:HOLDER` or `range:CIDR`).
    Show { identity: String },
    /// Every identity with a reputation.
    List,
    /// Count a verdict for an identity (operators, feedback loops).
    Report { identity: String, verdict: String },
}

#[derive(Subcommand)]
pub enum BlocklistAction {
    /// Block a range (or address) before the greeting, for a time.
    Add {
        range: Cidr,
        #[arg(long, default_value_t = 3600)]
        secs: u64,
        #[arg(long, default_value = "blocked by the operator")]
        reason: String,
    },
    Del {
        range: Cidr,
    },
    List,
    /// The blocklist as an nftables set, so the kernel drops these ranges
    /// before accept(): `portcullis blocklist export | nft -f -`.
    Export {
        #[arg(long, default_value = "portcullis")]
        table: String,
    },
}

#[derive(Subcommand)]
pub enum KnownSendersAction {
    /// List a range as a known sender: it leaves the default pool.
    Add {
        range: Cidr,
        name: String,
    },
    Del {
        range: Cidr,
    },
    List,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Apply a change wherever the state lives.
fn change(config: &Config, cmd: StateCommand) -> anyhow::Result<()> {
    if config.state_backend == StateBackend::Embedded && state::server_running(&config.data_dir) {
        return hand_to_server(config, &cmd);
    }
    let st = current(config)?;
    runtime()?
        .block_on(st.apply(&cmd))
        .map_err(anyhow::Error::msg)?;
    st.maintain().context("cannot write the state snapshot")?;
    Ok(())
}

/// The state to read from: with the embedded backend and a running
/// server, the server first writes a fresh snapshot.
fn current(config: &Config) -> anyhow::Result<AdmissionState> {
    if config.state_backend == StateBackend::Embedded && state::server_running(&config.data_dir) {
        hand_to_server(config, &StateCommand::Snapshot)?;
    }
    AdmissionState::open(config)
}

fn hand_to_server(config: &Config, cmd: &StateCommand) -> anyhow::Result<()> {
    let dir = state::commands_dir(&config.data_dir);
    std::fs::create_dir_all(&dir)?;
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let path = dir.join(format!("{stamp}-{}.json", std::process::id()));
    state::write_atomically(&path, &serde_json::to_vec(cmd)?)?;
    let done = path.with_extension("done");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if let Ok(answer) = std::fs::read_to_string(&done) {
            let _ = std::fs::remove_file(&done);
            return match answer.as_str() {
                "ok" => Ok(()),
                why => Err(anyhow::anyhow!("{why}")),
            };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!(
        "the running server did not take the change within 10 s; it is queued in {}",
        path.display()
    )
}

pub fn reputation(action: ReputationAction, config: &Config) -> anyhow::Result<()> {
    match action {
        ReputationAction::Report { identity, verdict } => {
            change(config, StateCommand::Report { identity, verdict })
        }
        ReputationAction::Show { identity } => {
            let st = current(config)?;
            let key = Identity::key_of(&identity);
            let rep = runtime()?.block_on(st.reputation(&key));
            let rep = rep.with_context(|| format!("no reputation for {key}"))?;
            let level = Policy::from_config(config).class_name(&key, &rep);
            println!("identity      {key}");
            println!("class         {level} (level {})", rep.level);
            println!("messages      {}", rep.messages);
            println!("verdicts      {} ham, {} spam", rep.ham, rep.spam);
            println!(
                "at this level {} ham, {} spam",
                rep.ham_at_level, rep.spam_at_level
            );
            println!("first seen    {}", when(rep.first_seen));
            println!("last seen     {}", when(rep.last_seen));
            Ok(())
        }
        ReputationAction::List => {
            let st = current(config)?;
            println!(
                "{:<40} {:<10} {:>9} {:>7} {:>7}",
                "IDENTITY", "CLASS", "MESSAGES", "HAM", "SPAM"
            );
            let policy = Policy::from_config(config);
            for (key, rep) in runtime()?.block_on(st.reputations()) {
                let level = policy.class_name(&key, &rep);
                println!(
                    "{key:<40} {level:<10} {:>9} {:>7} {:>7}",
                    rep.messages, rep.ham, rep.spam
                );
            }
            Ok(())
        }
    }
}

pub fn blocklist(action: BlocklistAction, config: &Config) -> anyhow::Result<()> {
    match action {
        BlocklistAction::Add {
            range,
            secs,
            reason,
        } => change(
            config,
            StateCommand::Block {
                range,
                secs,
                reason,
            },
        ),
        BlocklistAction::Del { range } => change(config, StateCommand::Unblock { range }),
        BlocklistAction::List => {
            let st = current(config)?;
            let now = portcullis_config::clock::now_secs();
            for (range, e) in runtime()?.block_on(st.blocklist()) {
                println!(
                    "{range:<43} {:>7}s  {}",
                    e.until.saturating_sub(now),
                    e.reason
                );
            }
            Ok(())
        }
        BlocklistAction::Export { table } => {
            let st = current(config)?;
            let entries = runtime()?.block_on(st.blocklist());
            print!(
                "{}",
                nft_sets(&table, &entries, portcullis_config::clock::now_secs())
            );
            Ok(())
        }
    }
}

/// Two timed sets (IPv4, IPv6) and the rule that drops them before any
/// connection is accepted; each element expires with its block.
fn nft_sets(table: &str, entries: &[(Cidr, portcullis_admission::BlockEntry)], now: u64) -> String {
    let elements = |v4: bool| {
        entries
            .iter()
            .filter(|(c, _)| c.is_ipv4() == v4)
            .map(|(c, e)| format!("{c} timeout {}s", e.until.saturating_sub(now).max(1)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let set = |name: &str, kind: &str, v4: bool| {
        let els = elements(v4);
        let body = if els.is_empty() {
            String::new()
        } else {
            format!("\n    elements = {{ {els} }}")
        };
        format!("  set {name} {{\n    type {kind}\n    flags interval, timeout{body}\n  }}\n")
    };
    format!(
        "table inet {table} {{\n{}{}  chain input {{\n    type filter hook input priority -10; policy accept;\n    ip saddr @blocked4 tcp dport {{ 25 }} drop\n    ip6 saddr @blocked6 tcp dport {{ 25 }} drop\n  }}\n}}\n",
        set("blocked4", "ipv4_addr", true),
        set("blocked6", "ipv6_addr", false),
    )
}

pub fn known_senders(action: KnownSendersAction, config: &Config) -> anyhow::Result<()> {
    match action {
        KnownSendersAction::Add { range, name } => {
            if name.is_empty() || name.contains(char::is_whitespace) {
                anyhow::bail!("the name {name:?} must be one word");
            }
            change(config, StateCommand::KnownAdd { range, name })
        }
        KnownSendersAction::Del { range } => change(config, StateCommand::KnownDel { range }),
        KnownSendersAction::List => {
            let st = current(config)?;
            for (range, name) in runtime()?.block_on(st.known()) {
                println!("{range:<43} {name}");
            }
            Ok(())
        }
    }
}

fn when(secs: u64) -> String {
    if secs == 0 {
        return "-".into();
    }
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
}
