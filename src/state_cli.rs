//! `reputation`, `blocklist` and `known-senders`: the operator's view of
//! admission state. A running server is asked through its control socket
//! (it owns the live state); with no server, the CLI works on the state
//! itself: the embedded snapshot, or Redis like any node.

use anyhow::Context as _;
use clap::Subcommand;
use portcullis_admission::{BlockEntry, Policy, Reputation, StateCommand};
use portcullis_config::{Cidr, Config, StateBackend};
use portcullis_control::Request;
use portcullis_state::Store as AdmissionState;
use std::time::{Duration, UNIX_EPOCH};

#[derive(Subcommand)]
pub enum ReputationAction {
    /// Volume, quality and class of one identity: a domain, `known:NAME`,
    /// `alloc:HOLDER`, or an address or range (the identity range holding
    /// it, as the server keys it).
    Show {
        /// e.g. `example.org`, `known:corp`, `192.0.2.7`, `2001:db8::/64`.
        identity: String,
    },
    /// Every identity with a reputation.
    List,
    /// Count a verdict for an identity (operators, feedback loops).
    Report {
        /// The identity, as for `show`.
        identity: String,
        /// `ham` or `spam`.
        verdict: String,
    },
}

#[derive(Subcommand)]
pub enum BlocklistAction {
    /// Block a range (or address) before the greeting, for a time.
    Add {
        /// ADDR/PREFIX, or a bare address.
        range: Cidr,
        /// How long the block lasts, in seconds.
        #[arg(long, default_value_t = 3600)]
        secs: u64,
        /// Shown to the client in the refusal, and in `blocklist list`.
        #[arg(long, default_value = "blocked by the operator")]
        reason: String,
    },
    /// Lift a block before it expires.
    Del {
        /// The range as it was added.
        range: Cidr,
    },
    /// Every block and the seconds it has left.
    List,
    /// The blocklist as an nftables set, so the kernel drops these ranges
    /// before accept(): `portcullis blocklist export | nft -f -`.
    Export {
        /// The nftables table to write.
        #[arg(long, default_value = "portcullis")]
        table: String,
    },
}

#[derive(Subcommand)]
pub enum KnownSendersAction {
    /// List a range as a known sender: it leaves the default pool.
    Add {
        /// ADDR/PREFIX, or a bare address.
        range: Cidr,
        /// One word naming the sender (its reputation is `known:NAME`).
        name: String,
    },
    /// Take a range off the known-sender list.
    Del {
        /// The range as it was added.
        range: Cidr,
    },
    /// Every known-sender range and its name.
    List,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Where the state is read and changed: through the running server's
/// control socket when one answers (it owns the embedded state, and its
/// answer is the live one), otherwise the state itself (the snapshot on
/// disk, or Redis).
enum View {
    Live(portcullis_control::Client),
    Offline(AdmissionState, tokio::runtime::Runtime),
}

impl View {
    fn open(config: &Config) -> anyhow::Result<View> {
        if let Some(c) = portcullis_control::Client::connect(&config.data_dir) {
            return Ok(View::Live(c));
        }
        if config.state_backend == StateBackend::Embedded
            && portcullis_control::server_running(&config.data_dir)
        {
            anyhow::bail!(
                "a server holds {} but does not answer on its control socket",
                config.data_dir.display()
            );
        }
        Ok(View::Offline(AdmissionState::open(config)?, runtime()?))
    }

    fn ask<T: serde::de::DeserializeOwned>(
        c: &mut portcullis_control::Client,
        r: Request,
    ) -> anyhow::Result<T> {
        Ok(serde_json::from_value(c.request(&r)?)?)
    }

    fn apply(&mut self, cmd: StateCommand) -> anyhow::Result<()> {
        match self {
            View::Live(c) => {
                c.request(&Request::StateApply { command: cmd })?;
                Ok(())
            }
            View::Offline(st, rt) => {
                rt.block_on(st.apply(&cmd)).map_err(anyhow::Error::msg)?;
                st.maintain().context("cannot write the state snapshot")
            }
        }
    }

    fn blocklist(&mut self) -> anyhow::Result<Vec<(Cidr, BlockEntry)>> {
        match self {
            View::Live(c) => Self::ask(c, Request::StateBlocklist),
            View::Offline(st, rt) => Ok(rt.block_on(st.blocklist())),
        }
    }

    fn known(&mut self) -> anyhow::Result<Vec<(Cidr, String)>> {
        match self {
            View::Live(c) => Self::ask(c, Request::StateKnown),
            View::Offline(st, rt) => Ok(rt.block_on(st.known())),
        }
    }

    fn reputations(&mut self) -> anyhow::Result<Vec<(String, Reputation)>> {
        match self {
            View::Live(c) => Self::ask(c, Request::StateReputations),
            View::Offline(st, rt) => Ok(rt.block_on(st.reputations())),
        }
    }

    fn reputation(&mut self, key: &str) -> anyhow::Result<Reputation> {
        let found = match self {
            View::Live(c) => {
                let r = Request::StateReputation {
                    key: key.to_owned(),
                };
                return Self::ask(c, r);
            }
            View::Offline(st, rt) => rt.block_on(st.reputation(key)),
        };
        found.with_context(|| format!("no reputation for {key}"))
    }
}

/// Apply a change wherever the state lives.
fn change(config: &Config, cmd: StateCommand) -> anyhow::Result<()> {
    View::open(config)?.apply(cmd)
}

pub fn reputation(action: ReputationAction, config: &Config) -> anyhow::Result<()> {
    match action {
        ReputationAction::Report { identity, verdict } => {
            change(config, StateCommand::Report { identity, verdict })
        }
        ReputationAction::Show { identity } => {
            let policy = Policy::from_config(config);
            let key = policy.key_of(&identity);
            let rep = View::open(config)?.reputation(&key)?;
            let level = policy.class_name(&key, &rep);
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
            let all = View::open(config)?.reputations()?;
            println!(
                "{:<40} {:<10} {:>9} {:>7} {:>7}",
                "IDENTITY", "CLASS", "MESSAGES", "HAM", "SPAM"
            );
            let policy = Policy::from_config(config);
            for (key, rep) in all {
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
        } => {
            let cmd = StateCommand::Block {
                range,
                secs,
                reason,
            };
            change(config, cmd)?;
            println!("{range} blocked for {secs}s");
            Ok(())
        }
        BlocklistAction::Del { range } => {
            change(config, StateCommand::Unblock { range })?;
            println!("{range} unblocked");
            Ok(())
        }
        BlocklistAction::List => {
            let now = portcullis_config::clock::now_secs();
            for (range, e) in View::open(config)?.blocklist()? {
                println!(
                    "{range:<43} {:>7}s  {}",
                    e.until.saturating_sub(now),
                    e.reason
                );
            }
            Ok(())
        }
        BlocklistAction::Export { table } => {
            let entries = View::open(config)?.blocklist()?;
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
            let line = format!("{range} is known sender {name}");
            change(config, StateCommand::KnownAdd { range, name })?;
            println!("{line}");
            Ok(())
        }
        KnownSendersAction::Del { range } => {
            change(config, StateCommand::KnownDel { range })?;
            println!("{range} is no longer a known sender");
            Ok(())
        }
        KnownSendersAction::List => {
            for (range, name) in View::open(config)?.known()? {
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
