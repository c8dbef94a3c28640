//! `portcullis sendmail` (and the binary run as `sendmail`): the drop-in
//! for programs that hand mail to /usr/sbin/sendmail (cron, PHP's mail(),
//! appliances). The slides name them as the hard part of moving to port
//! 587; spamops §3.2 says to try the submission port first. This client
//! finds the submission server (RFC 6186 SRV, then autoconfig, then the
//! configured host), tries 465 then 587 (25 only when allowed), always
//! authenticates, never sends credentials without verified TLS, and keeps
//! what it could not send in an outbox for the next run.
//!
//! It must not queue or relay on its own: it is a client of a submission
//! server, nothing more. Exit codes are sendmail's (sysexits.h).

pub mod args;
pub mod config;
pub mod discover;
pub mod message;
pub mod outbox;

use config::ClientConfig;
use discover::{Candidate, Security};
use portcullis_delivery::client::{self as remote, Outgoing};
use portcullis_delivery::{FailureKind, RcptOutcome};
use std::io::Read as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// sysexits.h, as sendmail uses them.
pub mod exit {
    pub const OK: i32 = 0;
    pub const USAGE: i32 = 64;
    pub const DATAERR: i32 = 65;
    pub const NOUSER: i32 = 67;
    pub const UNAVAILABLE: i32 = 69;
    pub const SOFTWARE: i32 = 70;
    pub const IOERR: i32 = 74;
    pub const TEMPFAIL: i32 = 75;
    pub const NOPERM: i32 = 77;
    pub const CONFIG: i32 = 78;
}

/// Why a submission did not happen, with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    fn new(code: i32, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    fn is_temporary(&self) -> bool {
        self.code == exit::TEMPFAIL
    }
}

/// Run with the arguments after the program name; returns the exit code.
pub fn run(args: &[String]) -> i32 {
    match run_inner(args) {
        Ok(()) => exit::OK,
        Err(f) => {
            eprintln!("sendmail: {}", f.message);
            f.code
        }
    }
}

fn run_inner(args: &[String]) -> Result<(), Failure> {
    let inv = args::parse(args).map_err(|e| Failure::new(exit::USAGE, e.0))?;
    if inv.help {
        print!("{}", args::USAGE);
        return Ok(());
    }
    let path = inv
        .config
        .clone()
        .or_else(|| std::env::var("PORTCULLIS_SENDMAIL_CONFIG").ok());
    let cfg = ClientConfig::load(path.as_deref().map(std::path::Path::new))
        .map_err(|e| Failure::new(exit::CONFIG, e))?;
    let prepared = if inv.flush_only {
        None
    } else {
        let mut raw = Vec::new();
        std::io::stdin()
            .read_to_end(&mut raw)
            .map_err(|e| Failure::new(exit::IOERR, e.to_string()))?;
        let sender = inv.sender.as_deref().or(cfg.sender.as_deref());
        let p = message::prepare(
            &raw,
            inv.ignore_dots,
            inv.recipients_from_headers,
            &inv.recipients,
            sender,
            inv.full_name.as_deref(),
        )
        .map_err(|e| {
            let code = match e {
                message::MessageError::Malformed => exit::DATAERR,
                _ => exit::USAGE,
            };
            Failure::new(code, e.to_string())
        })?;
        Some(p)
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(exit::SOFTWARE, e.to_string()))?;
    rt.block_on(async {
        let waiting = flush_outbox(&cfg).await;
        let Some(p) = prepared else {
            return match waiting {
                0 => Ok(()),
                n => Err(Failure::new(
                    exit::TEMPFAIL,
                    format!("{n} message(s) still wait in the outbox"),
                )),
            };
        };
        let envelope = outbox::Envelope {
            sender: p.sender.clone(),
            recipients: p.recipients.clone(),
        };
        match submit(&cfg, &envelope, &p.data).await {
            Ok(()) => Ok(()),
            Err(f) if f.is_temporary() && cfg.outbox.is_some() => {
                let dir = cfg.outbox.as_deref().unwrap_or(std::path::Path::new("."));
                outbox::store(dir, &envelope, &p.data).map_err(|e| {
                    Failure::new(
                        exit::IOERR,
                        format!("cannot keep the message in {}: {e}", dir.display()),
                    )
                })?;
                // Queued, as sendmail does: the caller's mail is safe.
                eprintln!(
                    "sendmail: {}; kept in {} for the next run",
                    f.message,
                    dir.display()
                );
                Ok(())
            }
            Err(f) => Err(f),
        }
    })
}

/// Send what waits in the outbox; how many still wait.
async fn flush_outbox(cfg: &ClientConfig) -> usize {
    let Some(dir) = &cfg.outbox else {
        return 0;
    };
    let entries = match outbox::list(dir) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("sendmail: cannot read the outbox {}: {e}", dir.display());
            return 0;
        }
    };
    let mut waiting = 0;
    for e in entries {
        match submit(cfg, &e.envelope, &e.data).await {
            Ok(()) => {
                if let Err(err) = outbox::remove(&e) {
                    eprintln!("sendmail: sent, but cannot remove it from the outbox: {err}");
                }
            }
            Err(f) if f.is_temporary() => waiting += 1,
            Err(f) => {
                // A permanent refusal: keeping it would retry forever.
                eprintln!(
                    "sendmail: an outbox message was refused and is dropped: {}",
                    f.message
                );
                let _ = outbox::remove(&e);
            }
        }
    }
    waiting
}

fn domain_of(address: &str) -> Option<&str> {
    address
        .rsplit_once('@')
        .map(|(_, d)| d)
        .filter(|d| !d.is_empty())
}

async fn candidates(
    cfg: &ClientConfig,
    sender: &str,
    r: &hickory_resolver::TokioResolver,
) -> Vec<Candidate> {
    if let Some(domain) = cfg.domain.as_deref().or(domain_of(sender)) {
        let found = discover::srv(r, domain).await;
        if !found.is_empty() {
            return found;
        }
        let found = discover::autoconfig(domain, cfg.autoconfig_port, Duration::from_secs(5)).await;
        if !found.is_empty() {
            return found;
        }
    }
    cfg.server
        .as_deref()
        .map(|h| discover::configured(h, cfg.allow_port25))
        .unwrap_or_default()
}

async fn addresses(r: &hickory_resolver::TokioResolver, c: &Candidate) -> Vec<SocketAddr> {
    if let Ok(ip) = c.host.parse::<IpAddr>() {
        return vec![SocketAddr::new(ip, c.port)];
    }
    match r.lookup_ip(format!("{}.", c.host)).await {
        Ok(ips) => ips.iter().map(|ip| SocketAddr::new(ip, c.port)).collect(),
        Err(_) => Vec::new(),
    }
}

fn helo(cfg: &ClientConfig) -> String {
    cfg.helo.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into())
    })
}

/// One message, through the first candidate that takes it.
async fn submit(cfg: &ClientConfig, env: &outbox::Envelope, data: &[u8]) -> Result<(), Failure> {
    let r = discover::resolver(&cfg.nameservers).map_err(|e| Failure::new(exit::CONFIG, e))?;
    let list = candidates(cfg, &env.sender, &r).await;
    if list.is_empty() {
        return Err(Failure::new(
            exit::CONFIG,
            "no submission server: no SRV records, no autoconfig, and no `server` in the config",
        ));
    }
    let tls = match cfg.pin().map_err(|e| Failure::new(exit::CONFIG, e))? {
        Some(pin) => {
            remote::pinned_tls(pin).map_err(|e| Failure::new(exit::SOFTWARE, e.to_string()))?
        }
        None => remote::verified_tls(cfg.ca_file.as_slice())
            .map_err(|e| Failure::new(exit::CONFIG, e))?,
    };
    let (user, password) = cfg
        .credentials(&env.sender)
        .map_err(|e| Failure::new(exit::CONFIG, e))?;
    let helo = helo(cfg);
    let msg = Outgoing {
        helo: &helo,
        sender: &env.sender,
        recipients: &env.recipients,
        data,
        smtputf8: env
            .recipients
            .iter()
            .chain([&env.sender])
            .any(|a| !a.is_ascii()),
        eight_bit: !data.is_ascii(),
        require_tls: true,
        requiretls: false,
        auth: Some((&user, &password)),
        source: None,
    };
    let limit = Duration::from_secs(cfg.timeout_secs.max(1));
    let mut last = Failure::new(exit::TEMPFAIL, "no server could be reached");
    for c in &list {
        for addr in addresses(&r, c).await {
            let attempt = async {
                match c.security {
                    Security::Implicit => {
                        remote::deliver_implicit_tls(addr, &msg, &tls, &c.host).await
                    }
                    Security::StartTls => remote::deliver(addr, &msg, &tls, &c.host).await,
                }
            };
            let outcome = tokio::time::timeout(limit, attempt).await;
            let where_ = format!("{}:{} (found by {})", c.host, c.port, c.via);
            match outcome {
                Err(_) => last = Failure::new(exit::TEMPFAIL, format!("{where_}: timed out")),
                Ok(Ok(outcomes)) => return judge(&env.recipients, &outcomes, &where_),
                Ok(Err(f)) => {
                    let failure = match f.kind {
                        FailureKind::Connect => {
                            Failure::new(exit::TEMPFAIL, format!("{where_}: {}", f.reason))
                        }
                        // A certificate that is not trusted, or TLS missing:
                        // never fall back to sending credentials in clear.
                        FailureKind::Tls => {
                            Failure::new(exit::UNAVAILABLE, format!("{where_}: {}", f.reason))
                        }
                        FailureKind::Auth => {
                            return Err(Failure::new(
                                exit::NOPERM,
                                format!("{where_}: {}", f.reason),
                            ));
                        }
                        FailureKind::Other if f.permanent => {
                            return Err(Failure::new(
                                exit::UNAVAILABLE,
                                format!("{where_}: {}", f.reason),
                            ));
                        }
                        FailureKind::Other => {
                            Failure::new(exit::TEMPFAIL, format!("{where_}: {}", f.reason))
                        }
                    };
                    // A TLS failure outranks "could not connect" in the report.
                    if !(last.code == exit::UNAVAILABLE && failure.code == exit::TEMPFAIL) {
                        last = failure;
                    }
                }
            }
        }
    }
    Err(last)
}

/// Every recipient must have been taken; a refused one is reported.
fn judge(recipients: &[String], outcomes: &[RcptOutcome], at: &str) -> Result<(), Failure> {
    let mut refused = Vec::new();
    let mut deferred = Vec::new();
    for (r, o) in recipients.iter().zip(outcomes) {
        match o {
            RcptOutcome::Delivered(_) => {}
            RcptOutcome::Permanent(why) => refused.push(format!("<{r}>: {why}")),
            RcptOutcome::Temporary(why) => deferred.push(format!("<{r}>: {why}")),
        }
    }
    if !refused.is_empty() {
        return Err(Failure::new(
            exit::NOUSER,
            format!("{at} refused {}", refused.join("; ")),
        ));
    }
    if !deferred.is_empty() {
        return Err(Failure::new(
            exit::TEMPFAIL,
            format!("{at} deferred {}", deferred.join("; ")),
        ));
    }
    Ok(())
}
