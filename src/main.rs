//! The `portcullis` command line: wiring only. Each subcommand parses its
//! arguments, loads the config and calls into the crate that does the work.

mod account_cli;
mod acme_cli;
mod actions;
mod config_file;
mod dns_cli;
mod docs_cli;
mod forwarding_cli;
mod op25b_cli;
mod policy_cli;
mod queue_cli;
mod reports_cli;
mod serve_cli;
mod settle;
mod shaping_cli;
mod state_cli;
mod user_cli;

use actions::*;
use anyhow::bail;
use clap::{Parser, Subcommand};
use portcullis_config::Config;
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
    /// Write the man pages and shell completions into a directory (for
    /// packagers).
    #[command(hide = true)]
    GenerateDocs {
        /// The directory: man/ and completions/ are made inside it.
        #[arg(long)]
        out: PathBuf,
    },
    /// Run the server (with no config file found: the embedded default on
    /// loopback).
    Serve {
        /// The config file (default: PORTCULLIS_CONFIG, then
        /// /etc/portcullis/portcullis.toml, then the embedded default).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a config file (errors name the file, line and key) and
    /// check what `serve` would refuse: the certificate and key, the data
    /// directory.
    CheckConfig {
        /// The config file (default: PORTCULLIS_CONFIG, then
        /// /etc/portcullis/portcullis.toml, then the embedded default).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Manage submission accounts.
    User {
        #[command(subcommand)]
        action: UserAction,
        /// The config file (default: PORTCULLIS_CONFIG, then
        /// /etc/portcullis/portcullis.toml, then the embedded default).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// Find submitted messages in the submission log by queue id,
    /// Message-ID or account.
    Trace {
        /// A queue id, a Message-ID or an account.
        query: String,
        /// The config file (default: PORTCULLIS_CONFIG, then
        /// /etc/portcullis/portcullis.toml, then the embedded default).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// DKIM signing keys.
    Dkim {
        #[command(subcommand)]
        action: DkimAction,
        /// The config file (default: PORTCULLIS_CONFIG, then
        /// /etc/portcullis/portcullis.toml, then the embedded default).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// Print the DNS records to publish for a domain: MX, SPF, DKIM, DMARC
    /// and the RFC 6186 SRV records for submission.
    DnsRecords {
        /// The domain to publish records for.
        domain: String,
        /// The config file (default: PORTCULLIS_CONFIG, then
        /// /etc/portcullis/portcullis.toml, then the embedded default).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Evaluate SPF (RFC 7208) for a client address, HELO and MAIL FROM,
    /// with the server's own resolver and code: why did this get softfail?
    Spf {
        /// The client's address.
        #[arg(long)]
        ip: std::net::IpAddr,
        /// The name the client gave in HELO/EHLO.
        #[arg(long)]
        helo: String,
        /// The envelope sender; omit for the null sender (HELO is checked).
        #[arg(long)]
        mail_from: Option<String>,
        #[command(flatten)]
        resolver: ResolverArgs,
    },
    /// Evaluate DMARC (RFC 7489 with mail-auth's DMARCbis discovery) for a
    /// From: domain and given SPF/DKIM outcomes, with the server's own
    /// resolver and code; or parse a DMARC record (--record).
    Dmarc {
        /// The RFC5322.From domain.
        #[arg(long, required_unless_present_any = ["record", "org_domain"])]
        from: Option<String>,
        /// SPF as RESULT:DOMAIN (the MAIL FROM domain), e.g. pass:example.org.
        #[arg(long, default_value = "none:")]
        spf: String,
        /// DKIM as RESULT:D, e.g. pass:example.org.
        #[arg(long)]
        dkim: Option<String>,
        /// Parse this record instead and print p, sp, adkim, aspf and pct.
        #[arg(long)]
        record: Option<String>,
        /// Print the organizational domain (RFC 7489 §3.2, from the
        /// built-in Public Suffix List) of each name, or "null".
        #[arg(long, num_args = 1.., conflicts_with = "record")]
        org_domain: Vec<String>,
        #[command(flatten)]
        resolver: ResolverArgs,
    },
    /// Fetch a domain's MTA-STS policy (RFC 8461) now, as delivery would
    /// (the config's resolvers and `[delivery] mta_sts_ca`, no cache):
    /// prints `valid`, `none`, or `fetch-error` and why.
    MtaSts {
        /// The destination domain.
        domain: String,
        /// The config file (default: PORTCULLIS_CONFIG, then
        /// /etc/portcullis/portcullis.toml, then the embedded default).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Answer one Postfix policy request read on stdin (`name=value`
    /// lines) as the policy listener would, and say why (as `postmap -q`
    /// helps with maps). Budgets are counted in memory only: the live
    /// state is not charged.
    PolicyTest {
        /// The config file (default: PORTCULLIS_CONFIG, then
        /// /etc/portcullis/portcullis.toml, then the embedded default).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print OP25B access-list rules (draft-akagiri-op25b-dynamicip) for a
    /// network described in a TOML file.
    Op25b {
        /// The network description (see examples/op25b-network.toml).
        #[arg(long)]
        input: PathBuf,
        /// Whose syntax to write the rules in.
        #[arg(long, value_enum)]
        format: Op25bFormat,
        /// Also print (to stderr) the draft's predicted rule count beside
        /// the count emitted after merging prefixes.
        #[arg(long)]
        stats: bool,
    },
    /// Local aliases: addresses that expand to mailboxes here and/or
    /// addresses elsewhere (forwarded with SRS and an ARC seal).
    Alias {
        #[command(subcommand)]
        action: AliasAction,
        /// The config file (default: PORTCULLIS_CONFIG, then
        /// /etc/portcullis/portcullis.toml, then the embedded default).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// The Sender Rewriting Scheme's secrets.
    Srs {
        #[command(subcommand)]
        action: SrsAction,
        /// The config file (default: PORTCULLIS_CONFIG, then
        /// /etc/portcullis/portcullis.toml, then the embedded default).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// Sender reputation: volume, quality and class of service.
    Reputation {
        #[command(subcommand)]
        action: state_cli::ReputationAction,
        /// The config file (default: PORTCULLIS_CONFIG, then
        /// /etc/portcullis/portcullis.toml, then the embedded default).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// Addresses suppressed after a remote "no such mailbox".
    Suppression {
        #[command(subcommand)]
        action: shaping_cli::SuppressionAction,
        /// The config file (default: PORTCULLIS_CONFIG, then
        /// /etc/portcullis/portcullis.toml, then the embedded default).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// Outbound delivery: the sites in force, and our source addresses
    /// as receivers see them.
    Delivery {
        #[command(subcommand)]
        action: shaping_cli::DeliveryAction,
        /// The config file (default: PORTCULLIS_CONFIG, then
        /// /etc/portcullis/portcullis.toml, then the embedded default).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// The temporal blocklist, checked before the greeting.
    Blocklist {
        #[command(subcommand)]
        action: state_cli::BlocklistAction,
        /// The config file (default: PORTCULLIS_CONFIG, then
        /// /etc/portcullis/portcullis.toml, then the embedded default).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// Address ranges identified as known senders.
    KnownSenders {
        #[command(subcommand)]
        action: state_cli::KnownSendersAction,
        /// The config file (default: PORTCULLIS_CONFIG, then
        /// /etc/portcullis/portcullis.toml, then the embedded default).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// Submit a message the way programs call /usr/sbin/sendmail (-t, -i,
    /// -f, -F, recipients; the message on stdin): found by SRV records,
    /// 465 then 587, always AUTH over verified TLS. Also runs when the
    /// binary is called as `sendmail`.
    Sendmail {
        /// sendmail's flags and the recipients (`portcullis sendmail
        /// --help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Certificates from the ACME CA of `[acme]`.
    Acme {
        #[command(subcommand)]
        action: acme_cli::AcmeAction,
        /// The config file (default: as for `serve`).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// Containment of a submitting account: show, hold, release, list
    /// (through the running server).
    Account {
        #[command(subcommand)]
        command: account_cli::AccountCommand,
        /// The config file (default: as for `queue`).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// Look at and manage the mail queue.
    Queue {
        #[command(subcommand)]
        action: queue_cli::QueueAction,
        /// The config file (default: PORTCULLIS_CONFIG, then
        /// /etc/portcullis/portcullis.toml, then the embedded default).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// DMARC aggregate reports (RFC 7489 §7.2) of the running server.
    DmarcReports {
        #[command(subcommand)]
        action: reports_cli::ReportsAction,
        /// The config file (default: as for `queue`).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// SMTP TLS reports (RFC 8460) of the running server.
    TlsReports {
        #[command(subcommand)]
        action: reports_cli::ReportsAction,
        /// The config file (default: as for `queue`).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
}

/// Which resolver the diagnostic commands (`spf`, `dmarc`) use.
#[derive(clap::Args)]
struct ResolverArgs {
    /// DNS server (ADDR:PORT) to ask instead of the configured ones
    /// (repeatable).
    #[arg(long)]
    dns: Vec<std::net::SocketAddr>,
    /// How long one DNS query may take, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    dns_timeout_ms: u64,
    /// The config file (default: PORTCULLIS_CONFIG, then
    /// /etc/portcullis/portcullis.toml, then the embedded default).
    #[arg(long)]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    // Programs call sendmail with sendmail's own flags (-t, -oi, -fADDR),
    // which are not this CLI's: as `sendmail` (a link) or `portcullis
    // sendmail`, the arguments go to the sendmail client untouched.
    let args: Vec<String> = std::env::args().collect();
    let called = args.first().map(|a| {
        Path::new(a)
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    });
    let sendmail_args = match (called.as_deref(), args.get(1).map(String::as_str)) {
        (Some("sendmail"), _) => Some(&args[1..]),
        (_, Some("sendmail")) => Some(&args[2..]),
        _ => None,
    };
    if let Some(rest) = sendmail_args {
        let code = portcullis_sendmail::run(rest);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
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
        Command::Serve { config } => {
            // The banner says where the data is: no notice on stderr.
            let source = config_file::locate(config.as_deref());
            let c = config_file::load(&source, true)?;
            serve_cli::serve(c, source.path().map(Path::to_owned))
        }
        Command::CheckConfig { config } => {
            serve_cli::check_config(&config_file::locate(config.as_deref()))
        }
        Command::GenerateDocs { out } => docs_cli::generate(&out),
        Command::Queue { action, config } => queue_cli::queue(action, &load(config.as_deref())?),
        Command::Account { command, config } => {
            account_cli::account(command, &load(config.as_deref())?)
        }
        Command::DmarcReports { action, config } => {
            let job = portcullis_control::Job::DmarcReports;
            reports_cli::reports(job, action, &load(config.as_deref())?)
        }
        Command::TlsReports { action, config } => {
            let job = portcullis_control::Job::TlsReports;
            reports_cli::reports(job, action, &load(config.as_deref())?)
        }
        Command::Acme { action, config } => acme_cli::acme(action, &load(config.as_deref())?),
        Command::Alias { action, config } => {
            forwarding_cli::alias(action, &load(config.as_deref())?)
        }
        Command::Srs {
            action: SrsAction::Rotate,
            config,
        } => forwarding_cli::srs_rotate(&load(config.as_deref())?),
        // Reached only through clap (e.g. `portcullis help`); main()
        // hands `sendmail` to the client before clap sees it.
        Command::Sendmail { args } => match portcullis_sendmail::run(&args) {
            0 => Ok(()),
            code => bail!("sendmail exited with {code}"),
        },
        Command::Reputation { action, config } => {
            state_cli::reputation(action, &load(config.as_deref())?)
        }
        Command::Suppression { action, config } => {
            shaping_cli::suppression(action, &load(config.as_deref())?)
        }
        Command::Delivery { action, config } => {
            shaping_cli::delivery(action, &load(config.as_deref())?)
        }
        Command::Blocklist { action, config } => {
            state_cli::blocklist(action, &load(config.as_deref())?)
        }
        Command::KnownSenders { action, config } => {
            state_cli::known_senders(action, &load(config.as_deref())?)
        }
        Command::User { action, config } => user_cli::user(action, &load(config.as_deref())?),
        Command::Dkim {
            action: DkimAction::Keygen { key },
            config,
        } => dns_cli::dkim_keygen(
            &load(config.as_deref())?,
            &key.domain,
            &key.selector,
            key.algorithm,
        ),
        Command::Dkim {
            action: DkimAction::Rotate { key },
            config,
        } => dns_cli::dkim_rotate(
            &load(config.as_deref())?,
            &key.domain,
            &key.selector,
            key.algorithm,
        ),
        Command::Dkim {
            action: DkimAction::Activate { domain, selector },
            config,
        } => dns_cli::dkim_activate(&load(config.as_deref())?, &domain, &selector),
        Command::Dkim {
            action: DkimAction::Retire { domain, grace_days },
            config,
        } => dns_cli::dkim_retire(&load(config.as_deref())?, &domain, grace_days),
        Command::Spf {
            ip,
            helo,
            mail_from,
            resolver,
        } => dns_cli::spf(ip, helo, mail_from, resolver),
        Command::Dmarc {
            from,
            spf,
            dkim,
            record,
            org_domain,
            resolver,
        } => dns_cli::dmarc(from, spf, dkim, record, org_domain, resolver),
        Command::Op25b {
            input,
            format,
            stats,
        } => op25b_cli::op25b(input, format, stats),
        Command::PolicyTest { config } => policy_cli::policy_test(&load(config.as_deref())?),
        Command::MtaSts { domain, config } => dns_cli::mta_sts(&load(config.as_deref())?, &domain),
        Command::DnsRecords { domain, config } => {
            dns_cli::dns_records(&load(config.as_deref())?, &domain)
        }
        Command::Trace { query, config } => user_cli::trace(&load(config.as_deref())?, query),
    }
}

/// The configuration a command works on (see `config_file`): `--config`,
/// `PORTCULLIS_CONFIG`, `/etc/portcullis/portcullis.toml`, or the
/// embedded default, which is then announced on stderr.
fn load(flag: Option<&Path>) -> anyhow::Result<Config> {
    config_file::load(&config_file::locate(flag), false)
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory as _;

    /// Every subcommand and every option or argument of every subcommand,
    /// with the path to it, that has no help text.
    fn undocumented(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for a in cmd.get_arguments() {
            let builtin = matches!(a.get_id().as_str(), "help" | "version");
            if !builtin && a.get_help().is_none() {
                out.push(format!("{path} {}", a.get_id()));
            }
        }
        for sub in cmd.get_subcommands() {
            let here = format!("{path} {}", sub.get_name());
            if sub.get_about().is_none() && sub.get_name() != "help" {
                out.push(here.clone());
            }
            undocumented(sub, &here, out);
        }
    }

    #[test]
    fn every_subcommand_and_option_has_help_text() {
        let mut missing = Vec::new();
        undocumented(&Cli::command(), "portcullis", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
