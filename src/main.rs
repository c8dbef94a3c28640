//! The `portcullis` command line: wiring only. Each subcommand parses its
//! arguments, loads the config and calls into the crate that does the work.

mod state_cli;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use portcullis_config::{Config, DEFAULT_DATA_DIR};
use portcullis_control::Request;
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
    /// Manage submission accounts.
    User {
        #[command(subcommand)]
        action: UserAction,
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// Find submitted messages in the submission log by queue id,
    /// Message-ID or account.
    Trace {
        query: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// DKIM signing keys.
    Dkim {
        #[command(subcommand)]
        action: DkimAction,
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// Print the DNS records to publish for a domain: MX, SPF, DKIM, DMARC
    /// and the RFC 6186 SRV records for submission.
    DnsRecords {
        domain: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Evaluate SPF (RFC 7208) for a client address, HELO and MAIL FROM,
    /// with the server's own resolver and code: why did this get softfail?
    Spf {
        #[arg(long)]
        ip: std::net::IpAddr,
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
    /// Print OP25B access-list rules (draft-akagiri-op25b-dynamicip) for a
    /// network described in a TOML file.
    Op25b {
        #[arg(long)]
        input: PathBuf,
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
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// The Sender Rewriting Scheme's secrets.
    Srs {
        #[command(subcommand)]
        action: SrsAction,
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// Sender reputation: volume, quality and class of service.
    Reputation {
        #[command(subcommand)]
        action: state_cli::ReputationAction,
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// The temporal blocklist, checked before the greeting.
    Blocklist {
        #[command(subcommand)]
        action: state_cli::BlocklistAction,
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// Address ranges identified as known senders.
    KnownSenders {
        #[command(subcommand)]
        action: state_cli::KnownSendersAction,
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// Submit a message the way programs call /usr/sbin/sendmail (-t, -i,
    /// -f, -F, recipients; the message on stdin): found by SRV records,
    /// 465 then 587, always AUTH over verified TLS. Also runs when the
    /// binary is called as `sendmail`.
    Sendmail {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Look at and manage the mail queue.
    Queue {
        #[command(subcommand)]
        action: QueueAction,
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
}

/// Which resolver the diagnostic commands (`spf`, `dmarc`) use.
#[derive(clap::Args)]
struct ResolverArgs {
    /// DNS server to ask instead of the configured ones (repeatable).
    #[arg(long)]
    dns: Vec<std::net::SocketAddr>,
    #[arg(long, default_value_t = 5000)]
    dns_timeout_ms: u64,
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum DkimAction {
    /// Generate a signing key and print the TXT record to publish.
    Keygen {
        #[arg(long)]
        domain: String,
        #[arg(long)]
        selector: String,
        #[arg(long, value_enum, default_value = "rsa")]
        algorithm: KeyAlgorithm,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Op25bFormat {
    Nftables,
    Iptables,
    Ip6tables,
    Cisco,
    Juniper,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum KeyAlgorithm {
    Ed25519,
    Rsa,
}

#[derive(Subcommand)]
enum UserAction {
    /// Create an account (password from a prompt, or --password-stdin).
    Add {
        address: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove an account.
    Del { address: String },
    /// List accounts and the addresses they may send as.
    List,
    /// Change an account's password.
    Passwd {
        address: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Import a Dovecot passwd-file ({ARGON2ID}, {BLF-CRYPT},
    /// {SHA512-CRYPT}, {SHA256-CRYPT} hashes).
    Import { file: PathBuf },
    /// Let an account send as another address, or as `@domain`.
    Grant { address: String, owned: String },
    /// Allow or forbid an account any sender address.
    AnySender {
        address: String,
        #[arg(action = clap::ArgAction::Set)]
        allowed: bool,
    },
}

#[derive(Subcommand)]
enum AliasAction {
    /// Add targets (local mailboxes or external addresses) to an alias.
    Add {
        alias: String,
        #[arg(required = true)]
        targets: Vec<String>,
    },
    /// Remove an alias.
    Del { alias: String },
    /// Every alias and its targets.
    List,
}

#[derive(Subcommand)]
enum SrsAction {
    /// Start signing with a new secret; the previous two still verify, so
    /// addresses already handed out stay valid for their lifetime.
    Rotate,
}

#[derive(Subcommand)]
enum QueueAction {
    /// One line per queued message.
    List,
    /// Envelope and content of one message.
    Show { id: String },
    /// Remove a message from the queue for good.
    Delete { id: String },
    /// Retry every deferred message now.
    Flush,
    /// Keep a message from being delivered until released.
    Hold { id: String },
    /// Let a held message go.
    Release { id: String },
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
        Command::Serve { config } => serve(load(config.as_deref())?, config),
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
        Command::Alias { action, config } => alias(action, &load(config.as_deref())?),
        Command::Srs {
            action: SrsAction::Rotate,
            config,
        } => {
            let config = load(config.as_deref())?;
            let path = portcullis_pipeline::forwarding::secrets_path(&config.data_dir);
            portcullis_pipeline::forwarding::rotate_secret(&path, 3)
                .with_context(|| format!("cannot write {}", path.display()))?;
            println!(
                "new SRS secret in {}; the two before it still verify",
                path.display()
            );
            Ok(())
        }
        // Reached only through clap (e.g. `portcullis help`); main()
        // hands `sendmail` to the client before clap sees it.
        Command::Sendmail { args } => match portcullis_sendmail::run(&args) {
            0 => Ok(()),
            code => bail!("sendmail exited with {code}"),
        },
        Command::Reputation { action, config } => {
            state_cli::reputation(action, &load(config.as_deref())?)
        }
        Command::Blocklist { action, config } => {
            state_cli::blocklist(action, &load(config.as_deref())?)
        }
        Command::KnownSenders { action, config } => {
            state_cli::known_senders(action, &load(config.as_deref())?)
        }
        Command::User { action, config } => user(action, &load(config.as_deref())?),
        Command::Dkim {
            action:
                DkimAction::Keygen {
                    domain,
                    selector,
                    algorithm,
                },
            config,
        } => {
            let c = load(config.as_deref())?;
            let alg = match algorithm {
                KeyAlgorithm::Ed25519 => portcullis_authn::DkimAlgorithm::Ed25519,
                KeyAlgorithm::Rsa => portcullis_authn::DkimAlgorithm::Rsa,
            };
            let record =
                portcullis_authn::generate_key(&c.data_dir.join("dkim"), &domain, &selector, alg)?;
            println!("{record}");
            Ok(())
        }
        Command::Spf {
            ip,
            helo,
            mail_from,
            resolver,
        } => {
            let verifier = diagnostic_verifier(resolver)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let check = rt.block_on(
                verifier.spf(
                    ip,
                    &helo,
                    mail_from.as_deref().filter(|m| !m.is_empty()),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                ),
            );
            println!("{}", check.result().as_str());
            if !check.reason.is_empty() {
                eprintln!("reason: {}", check.reason);
            }
            if let Some(exp) = &check.explanation {
                println!("explanation: {exp}");
            }
            Ok(())
        }
        Command::Dmarc {
            from,
            spf,
            dkim,
            record,
            org_domain,
            resolver,
        } => {
            if let Some(r) = record {
                let d = portcullis_authn::parse_dmarc_record(&r)
                    .map_err(|e| anyhow::anyhow!("invalid record: {e}"))?;
                println!(
                    "p={} sp={} adkim={} aspf={} pct={}",
                    d.p.as_str(),
                    d.sp.as_str(),
                    d.adkim.as_str(),
                    d.aspf.as_str(),
                    d.pct
                );
                return Ok(());
            }
            if !org_domain.is_empty() {
                let list = portcullis_authn::SuffixList::built_in();
                for name in &org_domain {
                    let org = list.organizational_domain(name);
                    println!("{name} {}", org.as_deref().unwrap_or("null"));
                }
                return Ok(());
            }
            let verifier = diagnostic_verifier(resolver)?;
            let mechanism = |s: &str| {
                let (result, domain) = s.split_once(':').unwrap_or((s, ""));
                portcullis_authn::Mechanism {
                    result: result.to_ascii_lowercase(),
                    domain: domain.to_owned(),
                }
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let dkim = dkim.as_deref().map(mechanism);
            let e = rt
                .block_on(verifier.evaluate_dmarc(
                    from.as_deref().unwrap_or(""),
                    &mechanism(&spf),
                    dkim.as_ref(),
                ))
                .map_err(anyhow::Error::msg)?;
            println!(
                "dmarc={} dkim_aligned={} spf_aligned={} policy={} record={}",
                e.dmarc.as_str(),
                e.dkim_aligned.as_str(),
                e.spf_aligned.as_str(),
                e.policy.as_str(),
                if e.record_found { "found" } else { "absent" }
            );
            Ok(())
        }
        Command::Op25b {
            input,
            format,
            stats,
        } => {
            let text = std::fs::read_to_string(&input)
                .with_context(|| format!("cannot read {}", input.display()))?;
            let network = portcullis_op25b::parse(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", input.display()))?;
            let format = match format {
                Op25bFormat::Nftables => portcullis_op25b::Format::Nftables,
                Op25bFormat::Iptables => portcullis_op25b::Format::Iptables,
                Op25bFormat::Ip6tables => portcullis_op25b::Format::Ip6tables,
                Op25bFormat::Cisco => portcullis_op25b::Format::Cisco,
                Op25bFormat::Juniper => portcullis_op25b::Format::Juniper,
            };
            let (rules, s) = portcullis_op25b::render(&network, format);
            print!("{rules}");
            if stats {
                eprintln!(
                    "predicted by the draft's formula: {} dynamic x ({} MSA + 1) = {}
emitted after merging: {} dynamic blocks, {} MSA blocks, {} port-25 rules",
                    s.dynamic_blocks,
                    s.msa_blocks,
                    s.predicted,
                    s.dynamic_merged,
                    s.msa_merged,
                    s.emitted
                );
            }
            Ok(())
        }
        Command::DnsRecords { domain, config } => dns_records(&load(config.as_deref())?, &domain),
        Command::Trace { query, config } => {
            let c = load(config.as_deref())?;
            let log = portcullis_pipeline::trace::SubmissionLog::new(
                &c.data_dir,
                c.submission.log_retention_days,
            );
            let hits = log.search(&query)?;
            for h in &hits {
                println!("{h}");
            }
            if hits.is_empty() {
                bail!("nothing in the submission log matches {query}");
            }
            Ok(())
        }
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

fn serve(config: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
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
    rt.block_on(portcullis_server::serve(config, path))
}

/// What an operator publishes so that others can find, trust and reach
/// this server for `domain`.
fn dns_records(config: &Config, domain: &str) -> anyhow::Result<()> {
    use portcullis_config::ListenerRole;
    let host = &config.hostname;
    let port = |role| {
        config
            .listeners
            .iter()
            .find(|l| l.role == role)
            .and_then(|l| l.bind.first())
            .map(|a| a.port())
    };
    println!("; DNS records for {domain} served by {host}");
    println!("{domain}. IN MX 10 {host}.");
    // The slides' advice: start with ~all (softfail), so that forwarded
    // mail is labelled, not lost, and bounces to forged senders can be
    // suppressed; tighten to -all when confident.
    println!("{domain}. IN TXT \"v=spf1 mx ~all\"");
    let dkim = portcullis_authn::published_records(&config.data_dir.join("dkim"), domain)?;
    if dkim.is_empty() {
        println!("; no DKIM key yet: portcullis dkim keygen --domain {domain} --selector s1");
    }
    for r in dkim {
        println!("{r}");
    }
    println!("_dmarc.{domain}. IN TXT \"v=DMARC1; p=none; rua=mailto:postmaster@{domain}\"");
    // RFC 6186: mail clients find the submission service by SRV; 465 first
    // (RFC 8314 prefers implicit TLS).
    if let Some(p) = port(ListenerRole::Submissions) {
        println!("_submissions._tcp.{domain}. IN SRV 0 1 {p} {host}.");
    }
    if let Some(p) = port(ListenerRole::Submission) {
        println!("_submission._tcp.{domain}. IN SRV 10 1 {p} {host}.");
    }
    Ok(())
}

fn user(action: UserAction, config: &Config) -> anyhow::Result<()> {
    use portcullis_accounts::AccountStore;
    let path = config.data_dir.join("accounts.json");
    let mut store = AccountStore::load(&path)?;
    match action {
        UserAction::Add {
            address,
            password_stdin,
        } => {
            let pw = read_password(password_stdin)?;
            store.add(&address, &pw)?;
            println!("{} added", address.to_ascii_lowercase());
        }
        UserAction::Del { address } => {
            store.remove(&address)?;
            println!("{address} removed");
        }
        UserAction::List => {
            for a in store.list() {
                let mut owns = a.owns.clone();
                if a.any_sender {
                    owns.push("(any sender)".into());
                }
                println!("{}  {}", a.address, owns.join(" "));
            }
            return Ok(());
        }
        UserAction::Passwd {
            address,
            password_stdin,
        } => {
            if store.get(&address).is_none() {
                bail!("no account {address}");
            }
            let pw = read_password(password_stdin)?;
            store.set_password(&address, &pw)?;
            println!("password of {address} changed");
        }
        UserAction::Import { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let r = store.import_passwd_file(&text);
            for (line, why) in &r.skipped {
                eprintln!("{}:{line}: skipped: {why}", file.display());
            }
            println!(
                "{} added, {} updated, {} skipped",
                r.added.len(),
                r.updated.len(),
                r.skipped.len()
            );
        }
        UserAction::Grant { address, owned } => {
            store.grant(&address, &owned)?;
            println!("{address} may now send as {owned}");
        }
        UserAction::AnySender { address, allowed } => {
            store.set_any_sender(&address, allowed)?;
            println!(
                "{address}: any sender {}",
                if allowed { "allowed" } else { "forbidden" }
            );
        }
    }
    store.save()?;
    Ok(())
}

/// A password from the first line of stdin, or from a prompt on the
/// terminal with echo off. Never echoed, never logged.
fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    use std::io::BufRead;
    let mut line = String::new();
    if from_stdin {
        std::io::stdin().lock().read_line(&mut line)?;
    } else {
        eprint!("Password: ");
        let _echo = EchoOff::new();
        std::io::stdin().lock().read_line(&mut line)?;
        eprintln!();
    }
    let pw = line.trim_end_matches(['\r', '\n']).to_owned();
    if pw.is_empty() {
        bail!("empty password refused");
    }
    Ok(pw)
}

/// Turns terminal echo off while alive (no-op when stdin is not a tty).
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> EchoOff {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a zeroed termios that
        // tcgetattr fills in; nothing else touches it.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::isatty(0) != 1 || libc::tcgetattr(0, &mut t) != 0 {
                return EchoOff(None);
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            libc::tcsetattr(0, libc::TCSANOW, &t);
            EchoOff(Some(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(t) = self.0 {
            // SAFETY: restores the attributes read in `new`.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, &t);
            }
        }
    }
}

/// Each SMTP session holds a socket: lift the soft limit on open files to
/// the hard limit so `max_sessions` is what bounds them, not a default of
/// 1024 that fails accept() with EMFILE.
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

/// The server's own resolver and checks for `spf` and `dmarc`: the
/// config's name servers unless `--dns` names others.
fn diagnostic_verifier(r: ResolverArgs) -> anyhow::Result<portcullis_authn::Verifier> {
    let c = load(r.config.as_deref())?;
    let servers = if r.dns.is_empty() {
        c.dns_nameservers.clone()
    } else {
        r.dns
    };
    let timeout = std::time::Duration::from_millis(r.dns_timeout_ms);
    portcullis_server::verifier(&c, &servers, timeout)
}

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

fn alias(action: AliasAction, config: &Config) -> anyhow::Result<()> {
    let path = config.data_dir.join("aliases.json");
    let mut aliases = portcullis_forwarding::Aliases::load(&path)?;
    match action {
        AliasAction::Add { alias, targets } => {
            aliases.add(&alias, &targets)?;
            aliases.save()?;
        }
        AliasAction::Del { alias } => {
            aliases.remove(&alias)?;
            aliases.save()?;
        }
        AliasAction::List => {
            for (a, targets) in aliases.list() {
                println!("{a}  ->  {}", targets.join(", "));
            }
        }
    }
    Ok(())
}

fn queue(action: QueueAction, config: &Config) -> anyhow::Result<()> {
    let dir = config.data_dir.join("spool");
    match action {
        QueueAction::List => {
            let messages = portcullis_queue::inspect(&dir)?;
            for m in &messages {
                let e = &m.envelope;
                let rcpts: Vec<&str> = e.recipients.iter().map(|r| r.address.as_str()).collect();
                let held = if portcullis_queue::is_held(&dir, &e.id) {
                    "  (held)"
                } else {
                    ""
                };
                println!(
                    "{}  {:>8}  <{}>  {}{held}",
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
            match portcullis_queue::read_status(&dir, &id) {
                Some(s) => {
                    println!(
                        "attempts: {}, next attempt at {} (epoch seconds)",
                        s.attempts, s.next_attempt
                    );
                    for (rcpt, reply) in &s.waiting {
                        println!("  waiting  <{rcpt}>  last reply: {reply}");
                    }
                }
                None => println!("not attempted yet"),
            }
            println!();
            print!("{}", String::from_utf8_lossy(&m.data));
            Ok(())
        }
        QueueAction::Flush => {
            let Some(mut server) = portcullis_control::Client::connect(&config.data_dir) else {
                println!("no server is running: every queued message is tried when it starts");
                return Ok(());
            };
            server.request(&Request::QueueFlush)?;
            println!("flush requested: deferred messages are retried now");
            Ok(())
        }
        QueueAction::Hold { id } => queue_change(config, Request::QueueHold { id }, "held"),
        QueueAction::Release { id } => {
            queue_change(config, Request::QueueRelease { id }, "released")
        }
        QueueAction::Delete { id } => queue_change(config, Request::QueueDelete { id }, "deleted"),
    }
}

/// Hold, release or delete: through the running server when there is
/// one (it holds the message), else in the spool on disk.
fn queue_change(config: &Config, r: Request, done: &str) -> anyhow::Result<()> {
    let (Request::QueueHold { id } | Request::QueueRelease { id } | Request::QueueDelete { id }) =
        r.clone()
    else {
        bail!("not a queue change");
    };
    if let Some(mut server) = portcullis_control::Client::connect(&config.data_dir) {
        server.request(&r)?;
        println!("{id} {done}");
        return Ok(());
    }
    let dir = config.data_dir.join("spool");
    let found = match r {
        Request::QueueHold { .. } => portcullis_queue::set_held(&dir, &id, true)?,
        Request::QueueRelease { .. } => portcullis_queue::set_held(&dir, &id, false)?,
        _ => portcullis_queue::delete_offline(&dir, &id)?,
    };
    if !found {
        bail!("no message {id} in the queue");
    }
    println!("{id} {done}");
    Ok(())
}
