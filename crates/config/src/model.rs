//! The shape of the file (`Raw*`, as serde reads it) and of the validated
//! [`Config`] the rest of the program uses. Every table refuses unknown keys
//! so that a misspelt option is an error, not a silently ignored line.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// What a listener is for. The role decides the session rules, never the
/// port number.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ListenerRole {
    /// Transfer from other servers (port 25): no AUTH needed, never relays.
    Mx,
    /// Message submission with STARTTLS (port 587, RFC 6409).
    Submission,
    /// Message submission over implicit TLS (port 465, RFC 8314).
    Submissions,
}

impl ListenerRole {
    pub fn name(self) -> &'static str {
        match self {
            ListenerRole::Mx => "mx",
            ListenerRole::Submission => "submission",
            ListenerRole::Submissions => "submissions",
        }
    }
}

/// The stages of moving to domain authentication, as the "Anti-spam
/// Technologies" slides describe them.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum InboundPolicy {
    /// Accept and label with Authentication-Results.
    #[default]
    Label,
    /// Accept when SPF or DKIM passes; reject when neither does.
    RejectBothFail,
    /// Apply the From: domain's DMARC policy (reject, or quarantine to the
    /// recipient's Junk folder).
    Dmarc,
}

/// `[reverse_dns]`: what the client's reverse name must be on port 25.
/// Its PTR name, forward-confirmed (FCrDNS), is always recorded in
/// Received and as `iprev` in Authentication-Results (RFC 8601 §3).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReverseDns {
    /// Refuse clients without a forward-confirmed PTR name at connect:
    /// 550 5.7.25, or 450 4.7.25 when DNS failed (RFC 7372 §3.3).
    #[serde(default)]
    pub require_confirmed: bool,
}

/// `[dmarc]`: how the organizational domain of RFC 7489 §3.2 is found.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DmarcSettings {
    #[serde(default)]
    pub discovery: DmarcDiscovery,
    /// A Public Suffix List file to use instead of the built-in copy.
    #[serde(default)]
    pub public_suffix_list: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DmarcDiscovery {
    /// RFC 7489: the record at the From: domain, else at its
    /// organizational domain from the Public Suffix List.
    #[default]
    Psl,
    /// DMARCbis: the DNS tree walk (np=, psd=), as mail-auth does it.
    TreeWalk,
}

/// A DNS list: addresses (DNSBL) or domains (RHSBL) under `zone`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DnsList {
    pub zone: String,
    /// Shown in replies and headers; the zone when absent.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub kind: ListKind,
    #[serde(default)]
    pub action: ListAction,
    /// A list of dynamic (consumer) address space, like Spamhaus PBL: port
    /// 25 from it is refused with advice to use the provider's submission
    /// service — the receiving side of OP25B.
    #[serde(default)]
    pub dynamic: bool,
    /// Rating zones: a domain rated below this is treated as listed (a
    /// `Status: Bad` answer always is).
    #[serde(default)]
    pub min_rating: Option<i64>,
}

impl DnsList {
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.zone)
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ListKind {
    /// Client addresses, checked at connect.
    #[default]
    Address,
    /// Domains: the MAIL FROM domain at MAIL, DKIM d= domains at the end
    /// of data.
    Domain,
    /// Domain reputation as TXT at `DOMAIN.ZONE` ("Status: Good",
    /// "Rating: 100"), for the same domains as `domain` lists.
    Rating,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ListAction {
    /// Refuse, naming the list.
    #[default]
    Reject,
    /// Accept and add a header naming the list.
    Label,
}

/// Which recipients of a local domain exist, and what happens to mail for
/// the others (the slides' "Error mails on ISPes").
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RecipientPolicy {
    /// Only accounts (and postmaster, abuse) exist; others get 550 5.1.1
    /// at RCPT, and the client is slowed down (tarpit).
    #[default]
    RejectUnknown,
    /// Accept every recipient at RCPT (no address harvesting), then bounce
    /// mail for unknown ones — unless SPF says the sender is forged
    /// (fail/softfail), in which case the bounce is suppressed.
    AcceptAll,
    /// Every local part is a mailbox of its own (a catch-all by name, for
    /// single-user hosts and tests).
    Any,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StateBackend {
    #[default]
    Embedded,
    Redis,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub hostname: String,
    /// Started as root, become this user once the ports are bound.
    pub user: Option<String>,
    pub data_dir: PathBuf,
    pub dns_nameservers: Vec<SocketAddr>,
    /// Certificate and key files; `None` means a self-signed pair in
    /// `data_dir/tls`, generated on first start.
    pub tls: Option<TlsFiles>,
    pub listeners: Vec<Listener>,
    pub http_bind: Option<SocketAddr>,
    /// Bearer token of the admin API; `None`: generated into
    /// `data_dir/admin.token` on first start.
    pub admin_token: Option<String>,
    /// Domains we receive mail for and deliver locally, lower case.
    pub local_domains: Vec<String>,
    /// What each local domain does with the SPF/DKIM/DMARC results of
    /// inbound mail (absent: label only).
    pub inbound_policy: BTreeMap<String, InboundPolicy>,
    /// How each local domain treats recipients that do not exist.
    pub recipient_policy: BTreeMap<String, RecipientPolicy>,
    /// Local domains delivered over LMTP (RFC 2033, e.g. to Dovecot)
    /// instead of into Maildirs.
    pub lmtp: BTreeMap<String, SocketAddr>,
    /// How long one DNS query may take before it is a temporary error.
    pub dns_timeout: Duration,
    /// DNS block and reputation lists (RFC 5782), in the order given.
    pub dns_lists: Vec<DnsList>,
    pub state_backend: StateBackend,
    pub redis_url: Option<String>,
    /// Class-of-service limits by class name: `default` is the one pool
    /// every unknown sender shares; the reputation levels name the others.
    pub classes: BTreeMap<String, ClassLimits>,
    pub identity: IdentityPolicy,
    pub reputation: ReputationRules,
    pub admission: Admission,
    pub rspamd: Option<Rspamd>,
    pub forwarding: Forwarding,
    pub dmarc: DmarcSettings,
    pub reverse_dns: ReverseDns,
    pub limits: Limits,
    pub submission: Submission,
    pub auth: AuthPolicy,
    pub delivery: Delivery,
}

/// Outbound delivery to other domains' MX hosts (RFC 5321 §4.5.4, §5).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    /// The port of the next hop (25; tests and smarthost setups change it).
    pub port: u16,
    /// First retry after this long; each further one waits twice as long ...
    pub retry_base_secs: u64,
    /// ... up to this.
    pub retry_max_secs: u64,
    /// After this long in the queue, give up and bounce (RFC 5321
    /// §4.5.4.1 suggests 4-5 days).
    pub max_lifetime_secs: u64,
    /// Send all remote mail through this host instead of MX hosts.
    pub smarthost: Option<SocketAddr>,
    /// Log in to the smarthost with this account (TLS is then required).
    pub smarthost_user: Option<String>,
    /// A file holding the smarthost password (not the password itself,
    /// so the config can be shown without it).
    pub smarthost_password_file: Option<PathBuf>,
    /// The login goes only over TLS whose certificate is verified: against
    /// the system CAs plus this CA file ...
    pub smarthost_ca: Option<PathBuf>,
    /// ... or pinned: the SHA-256 of the smarthost's certificate (DER).
    pub smarthost_pin_sha256: Option<String>,
    /// The name the certificate must carry; the smarthost's IP address
    /// when absent.
    pub smarthost_name: Option<String>,
    /// Concurrent deliveries to one destination domain.
    pub max_per_domain: usize,
    /// A message still undelivered after this long gets one "delayed"
    /// DSN (RFC 3464) if its sender asked (NOTIFY=DELAY) or said nothing.
    pub delay_notice_secs: u64,
    /// Domains whose mail leaves only over TLS: without STARTTLS at the
    /// next hop it waits (and finally bounces) instead of going in clear.
    pub require_tls_for: Vec<String>,
    /// Transactions per minute with one destination domain (0: no limit),
    /// spaced evenly so a large queue does not hit a receiver in a burst.
    pub max_per_domain_per_minute: u32,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            port: 25,
            retry_base_secs: 300,
            retry_max_secs: 3600,
            max_lifetime_secs: 5 * 86400,
            smarthost: None,
            smarthost_user: None,
            smarthost_password_file: None,
            smarthost_ca: None,
            smarthost_pin_sha256: None,
            smarthost_name: None,
            max_per_domain: 20,
            delay_notice_secs: 4 * 3600,
            require_tls_for: Vec::new(),
            max_per_domain_per_minute: 0,
        }
    }
}

/// Per-account limits of the submission service (OP25B draft §4.4.3,
/// spamops §3.1) and how long the submission log is kept.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Submission {
    /// Accepted RCPTs per account per UTC hour.
    pub recipients_per_hour: u32,
    /// Accepted RCPTs per account per UTC day.
    pub recipients_per_day: u32,
    /// Messages (MAIL commands accepted) per account per UTC hour.
    pub messages_per_hour: u32,
    /// Concurrent authenticated sessions per account.
    pub max_sessions_per_account: u32,
    /// Days the submission log is kept (at least 7).
    pub log_retention_days: u32,
    /// Client networks whose legacy devices may still send on port 25
    /// (the mx listener) with a sender in our local domains — to local
    /// recipients only, since port 25 never relays. Empty by default:
    /// everyone else must submit on 587/465 with AUTH.
    pub port25_networks: Vec<crate::Cidr>,
}

impl Default for Submission {
    fn default() -> Self {
        Submission {
            recipients_per_hour: 500,
            recipients_per_day: 2000,
            messages_per_hour: 200,
            max_sessions_per_account: 10,
            log_retention_days: 14,
            port25_networks: Vec::new(),
        }
    }
}

/// Brute-force protection of SMTP AUTH.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthPolicy {
    /// Delay before answering the first failure from an address; doubles
    /// with each further failure.
    pub failure_delay_ms: u64,
    pub max_failure_delay_ms: u64,
    /// Failures from one address (IPv6: /64) before it is locked out.
    pub address_lock_after: u32,
    /// Failures on one account, from any addresses, before it is locked
    /// for addresses it was never used from.
    pub account_lock_after: u32,
    pub lock_secs: u64,
}

impl Default for AuthPolicy {
    fn default() -> Self {
        AuthPolicy {
            failure_delay_ms: 100,
            max_failure_delay_ms: 2000,
            address_lock_after: 10,
            account_lock_after: 30,
            lock_secs: 900,
        }
    }
}

#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Listener {
    pub role: ListenerRole,
    pub bind: Vec<SocketAddr>,
    /// How long to wait before the greeting, watching for a client that
    /// talks first (postscreen's "pregreet" test). Zero still catches a
    /// client whose first bytes arrived with the connection.
    pub pregreet_wait: Duration,
}

/// Per-class limits of the class-of-service policy.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClassLimits {
    pub max_connections: Option<u32>,
    pub connections_per_minute: Option<u32>,
    pub messages_per_minute: Option<u32>,
    pub recipients_per_message: Option<u32>,
    pub recipients_per_minute: Option<u32>,
    pub bytes_per_minute: Option<u64>,
}

impl ClassLimits {
    /// These limits where given, `base`'s elsewhere. A limit of 0 means
    /// "no limit", so a built-in one can be switched off.
    pub fn over(&self, base: &ClassLimits) -> ClassLimits {
        ClassLimits {
            max_connections: self.max_connections.or(base.max_connections),
            connections_per_minute: self.connections_per_minute.or(base.connections_per_minute),
            messages_per_minute: self.messages_per_minute.or(base.messages_per_minute),
            recipients_per_message: self.recipients_per_message.or(base.recipients_per_message),
            recipients_per_minute: self.recipients_per_minute.or(base.recipients_per_minute),
            bytes_per_minute: self.bytes_per_minute.or(base.bytes_per_minute),
        }
    }

    /// The embedded defaults: a tight shared pool for strangers (the
    /// paper: "extremely limited"), and per-sender levels that each give
    /// one identified sender more than all strangers together.
    pub fn builtin(class: &str) -> Option<ClassLimits> {
        let c = |conns, cpm, mpm, rpm_msg, rpm, bpm| ClassLimits {
            max_connections: Some(conns),
            connections_per_minute: Some(cpm),
            messages_per_minute: Some(mpm),
            recipients_per_message: Some(rpm_msg),
            recipients_per_minute: Some(rpm),
            bytes_per_minute: Some(bpm),
        };
        const MIB: u64 = 1024 * 1024;
        Some(match class {
            "default" => c(50, 300, 120, 50, 500, 50 * MIB),
            "new" => c(20, 300, 240, 100, 1000, 100 * MIB),
            "trusted" => c(50, 1200, 1200, 100, 5000, 500 * MIB),
            "high" => c(200, 6000, 6000, 1000, 30000, 2048 * MIB),
            _ => return None,
        })
    }
}

/// How a sender is identified (the paper's "Identification" section).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityPolicy {
    /// Address-based state aggregates IPv4 by this prefix ...
    pub ipv4_prefix: u8,
    /// ... and IPv6 by this one, so rotating through a /64 is one sender.
    pub ipv6_prefix: u8,
    /// Allocation data (an RDAP/WHOIS export): one `PREFIX HOLDER` per
    /// line; a client inside a prefix is identified as its holder.
    pub allocations: Option<PathBuf>,
    /// Allocations coarser than these are disregarded: they would lump
    /// unrelated senders into one reputation (the paper, WEIRDS item).
    pub allocation_min_ipv4: u8,
    pub allocation_min_ipv6: u8,
}

impl Default for IdentityPolicy {
    fn default() -> Self {
        IdentityPolicy {
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            allocations: None,
            allocation_min_ipv4: 16,
            allocation_min_ipv6: 32,
        }
    }
}

/// Promotion and demotion between per-sender classes (the paper,
/// "Adjusting Class of Service"). The gap between the promotion and the
/// demotion thresholds is the hysteresis.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ReputationRules {
    /// Per-sender classes from lowest to highest; identified senders
    /// start at the first.
    pub levels: Vec<String>,
    /// Good messages needed at a level before promotion ...
    pub promote_after: u32,
    /// ... with at most this share of spam among the verdicts there.
    pub promote_max_spam_percent: u32,
    /// Demotion needs at least this many verdicts at the level ...
    pub demote_min_verdicts: u32,
    /// ... and at least this share of spam among them.
    pub demote_spam_percent: u32,
}

impl Default for ReputationRules {
    fn default() -> Self {
        ReputationRules {
            levels: vec!["new".into(), "trusted".into(), "high".into()],
            promote_after: 50,
            promote_max_spam_percent: 5,
            demote_min_verdicts: 5,
            demote_spam_percent: 30,
        }
    }
}

/// Connection-level limits that apply to everyone (the "Rate control"
/// slides), the temporal blocklist, and what deferrals say.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Admission {
    /// Named in every deferral, so a sender learns how to get out of the
    /// default class (the paper, "Practical Considerations").
    pub remediation_url: String,
    /// Concurrent connections from one range (the identity prefix).
    pub per_range_max_connections: u32,
    /// New connections per minute from one range.
    pub per_range_connections_per_minute: u32,
    /// Refuse mail that does not authenticate from a range that earlier
    /// delivered authenticated mail for a domain (the paper's "aggressive
    /// action"). Off for hosts shared by many senders.
    pub enforce_domain_ranges: bool,
    /// Spam verdicts from an unidentified range that put it on the
    /// temporal blocklist for `block_secs` (0: never).
    pub spam_strikes: u32,
    pub block_secs: u64,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            remediation_url: String::new(),
            per_range_max_connections: 20,
            per_range_connections_per_minute: 120,
            enforce_domain_ranges: true,
            spam_strikes: 3,
            block_secs: 3600,
        }
    }
}

/// Aliases, SRS and ARC for forwarded mail (issue 10).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Forwarding {
    /// The domain of rewritten senders (SRS) and of the ARC seal; it
    /// needs an SPF record allowing this host and an RSA DKIM key
    /// (`portcullis dkim keygen --algorithm rsa`). Default: the first
    /// local domain.
    pub srs_domain: Option<String>,
    /// Days an SRS address stays valid for bounces.
    pub srs_max_age_days: u64,
    /// Received: fields beyond this mean a loop: the message is refused
    /// (554 5.4.6). RFC 5321 §6.3.
    pub max_hops: usize,
    /// Aliases within aliases, at most this deep.
    pub alias_max_depth: usize,
    /// Sealers whose valid ARC chain turns a DMARC failure into a pass of
    /// the domain policy (mailing lists and forwarders one trusts).
    pub arc_trusted_sealers: Vec<String>,
}

impl Default for Forwarding {
    fn default() -> Self {
        Forwarding {
            srs_domain: None,
            srs_max_age_days: 21,
            max_hops: 30,
            alias_max_depth: 8,
            arc_trusted_sealers: Vec::new(),
        }
    }
}

/// Spam verdicts from rspamd's `/checkv2` (its normal worker).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rspamd {
    /// `host:port` of the normal worker (rspamd's default 127.0.0.1:11333).
    pub address: SocketAddr,
    #[serde(default = "Rspamd::default_timeout_ms")]
    pub timeout_ms: u64,
    /// Refuse messages rspamd's action says to reject (550 5.7.1).
    #[serde(default = "Rspamd::default_reject")]
    pub reject: bool,
}

impl Rspamd {
    fn default_timeout_ms() -> u64 {
        10_000
    }
    fn default_reject() -> bool {
        true
    }
}

/// Session limits. Defaults are the RFC 5321 minimums where the RFC gives
/// one (4.5.3.1 sizes, 4.5.3.2 timeouts).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Command line including CRLF (RFC 5321 4.5.3.1.4: 512).
    pub command_line_octets: usize,
    /// Text line of the message including CRLF (4.5.3.1.6: 1000).
    pub text_line_octets: usize,
    /// Recipients per message (4.5.3.1.8: at least 100).
    pub max_recipients: usize,
    /// Message size in octets, advertised with SIZE (RFC 1870).
    pub max_message_size: u64,
    /// Bad commands before the session is closed with 421.
    pub max_errors: u32,
    /// Waiting for a command (4.5.3.2.7: at least 5 minutes).
    pub command_timeout_secs: u64,
    /// Waiting for the next chunk of DATA (4.5.3.2.5: 3 minutes).
    pub data_timeout_secs: u64,
    /// Concurrent SMTP sessions over all listeners.
    pub max_sessions: usize,
    /// After a "user unknown", every further reply of the session waits
    /// this much longer (a tarpit for address harvesters) ...
    pub tarpit_step_ms: u64,
    /// ... up to this.
    pub tarpit_max_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            command_line_octets: 512,
            text_line_octets: 1000,
            max_recipients: 100,
            max_message_size: 25 * 1024 * 1024,
            max_errors: 10,
            command_timeout_secs: 300,
            data_timeout_secs: 180,
            max_sessions: 10_000,
            tarpit_step_ms: 1000,
            tarpit_max_ms: 10_000,
        }
    }
}

pub const DEFAULT_DATA_DIR: &str = "./portcullis-data";

impl Config {
    /// Whether mail for `domain` stays here: a configured domain, or our
    /// own hostname (`<postmaster>` is addressed to it, RFC 5321 4.1.1.3).
    /// The mx listener's relay check and the delivery router both ask this.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        domain.eq_ignore_ascii_case(&self.hostname)
            || self
                .local_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain))
    }

    /// The embedded default of `portcullis serve` without `--config`.
    pub fn embedded_default(data_dir: PathBuf, hostname: String) -> Config {
        let at = |port| vec![SocketAddr::from(([127, 0, 0, 1], port))];
        let listener = |role, port| Listener {
            role,
            bind: at(port),
            pregreet_wait: Duration::ZERO,
        };
        Config {
            hostname,
            user: None,
            data_dir,
            dns_nameservers: Vec::new(),
            tls: None,
            listeners: vec![
                listener(ListenerRole::Mx, 2525),
                listener(ListenerRole::Submission, 2587),
                listener(ListenerRole::Submissions, 2465),
            ],
            http_bind: Some(SocketAddr::from(([127, 0, 0, 1], 8025))),
            admin_token: None,
            local_domains: vec!["localhost".to_owned()],
            inbound_policy: BTreeMap::new(),
            recipient_policy: BTreeMap::new(),
            lmtp: BTreeMap::new(),
            dns_lists: Vec::new(),
            dns_timeout: Duration::from_secs(5),
            state_backend: StateBackend::Embedded,
            redis_url: None,
            classes: builtin_classes(&ReputationRules::default()),
            identity: IdentityPolicy::default(),
            reputation: ReputationRules::default(),
            admission: Admission::default(),
            rspamd: None,
            forwarding: Forwarding::default(),
            dmarc: DmarcSettings::default(),
            reverse_dns: ReverseDns::default(),
            limits: Limits::default(),
            submission: Submission::default(),
            auth: AuthPolicy::default(),
            delivery: Delivery::default(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    hostname: Option<Spanned<String>>,
    user: Option<String>,
    data_dir: Option<PathBuf>,
    dns: Option<RawDns>,
    tls: Option<RawTls>,
    #[serde(default)]
    listener: Vec<RawListener>,
    http: Option<RawHttp>,
    #[serde(default)]
    domain: Vec<RawDomain>,
    state: Option<RawState>,
    #[serde(default)]
    class: BTreeMap<String, ClassLimits>,
    #[serde(default)]
    identity: IdentityPolicy,
    reputation: Option<Spanned<ReputationRules>>,
    #[serde(default)]
    admission: Admission,
    rspamd: Option<Rspamd>,
    #[serde(default)]
    forwarding: Forwarding,
    #[serde(default)]
    dmarc: DmarcSettings,
    #[serde(default)]
    reverse_dns: ReverseDns,
    limits: Option<Spanned<Limits>>,
    #[serde(default)]
    dnsbl: Vec<DnsList>,
    submission: Option<Spanned<Submission>>,
    #[serde(default)]
    auth: AuthPolicy,
    #[serde(default)]
    delivery: Delivery,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    #[serde(default)]
    nameservers: Vec<SocketAddr>,
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Spanned<PathBuf>,
    key: Spanned<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    role: ListenerRole,
    bind: Spanned<Vec<SocketAddr>>,
    #[serde(default)]
    pregreet_wait_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    bind: SocketAddr,
    admin_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDomain {
    name: Spanned<String>,
    #[serde(default)]
    policy: InboundPolicy,
    #[serde(default)]
    recipients: RecipientPolicy,
    /// `host:port` of an LMTP server for this domain's mailboxes.
    lmtp: Option<SocketAddr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    backend: Option<Spanned<StateBackend>>,
    redis_url: Option<String>,
}

type Invalid = (usize, String);

impl RawConfig {
    /// Check what serde cannot: names are names, files exist, limits make
    /// sense. Errors carry the byte offset of the offending value.
    pub(crate) fn validate(self, base: &Path) -> Result<Config, Invalid> {
        let hostname = match self.hostname {
            Some(h) => checked_domain(&h)?,
            None => system_hostname(),
        };
        let data_dir = self
            .data_dir
            .map(|d| base.join(d))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let tls = self.tls.map(|t| tls_files(t, base)).transpose()?;
        let listeners = listeners(self.listener)?;
        let local_domains = self
            .domain
            .iter()
            .map(|d| checked_domain(&d.name))
            .collect::<Result<Vec<_>, _>>()?;
        let (state_backend, redis_url) = match self.state {
            None => (StateBackend::Embedded, None),
            Some(RawState {
                backend: None,
                redis_url,
            }) => (StateBackend::Embedded, redis_url),
            Some(RawState {
                backend: Some(b),
                redis_url,
            }) => {
                if *b.get_ref() == StateBackend::Redis && redis_url.is_none() {
                    return Err((b.span().start, "backend = \"redis\" needs redis_url".into()));
                }
                (b.into_inner(), redis_url)
            }
        };
        let reputation = match self.reputation {
            Some(r) => {
                let at = r.span().start;
                let r = r.into_inner();
                if r.levels.is_empty() {
                    return Err((at, "levels must name at least one class".into()));
                }
                if r.promote_max_spam_percent >= r.demote_spam_percent {
                    return Err((
                        at,
                        "promote_max_spam_percent must be below demote_spam_percent (hysteresis)"
                            .into(),
                    ));
                }
                if let Some(l) = r.levels.iter().find(|l| {
                    !self.class.contains_key(l.as_str()) && ClassLimits::builtin(l).is_none()
                }) {
                    return Err((at, format!("level {l:?} has no [class.{l}] section")));
                }
                r
            }
            None => ReputationRules::default(),
        };
        let mut classes = builtin_classes(&reputation);
        for (name, given) in self.class {
            let merged = match classes.get(&name) {
                Some(builtin) => given.over(builtin),
                None => given,
            };
            classes.insert(name, merged);
        }
        let limits = self
            .limits
            .map(checked_limits)
            .transpose()?
            .unwrap_or_default();
        let submission = self
            .submission
            .map(checked_submission)
            .transpose()?
            .unwrap_or_default();
        let mut defaults = Config::embedded_default(data_dir, hostname);
        if !listeners.is_empty() {
            defaults.listeners = listeners;
        }
        if !local_domains.is_empty() {
            defaults.local_domains = local_domains.clone();
        }
        let recipient_policy = local_domains
            .iter()
            .cloned()
            .zip(self.domain.iter().map(|d| d.recipients))
            .collect();
        let inbound_policy = local_domains
            .into_iter()
            .zip(self.domain.iter().map(|d| d.policy))
            .collect();
        let dns_timeout = self
            .dns
            .as_ref()
            .and_then(|d| d.timeout_ms)
            .map_or(defaults.dns_timeout, Duration::from_millis);
        let lmtp = self
            .domain
            .iter()
            .filter_map(|d| {
                d.lmtp.map(|a| {
                    (
                        d.name.get_ref().trim_end_matches('.').to_ascii_lowercase(),
                        a,
                    )
                })
            })
            .collect();
        Ok(Config {
            user: self.user,
            lmtp,
            dns_lists: self.dnsbl,
            inbound_policy,
            recipient_policy,
            dns_timeout,
            dns_nameservers: self.dns.map(|d| d.nameservers).unwrap_or_default(),
            tls,
            admin_token: self.http.as_ref().and_then(|h| h.admin_token.clone()),
            http_bind: self.http.map(|h| h.bind).or(defaults.http_bind),
            state_backend,
            redis_url,
            classes,
            identity: IdentityPolicy {
                allocations: self.identity.allocations.map(|p| base.join(p)),
                ..self.identity
            },
            reputation,
            admission: self.admission,
            rspamd: self.rspamd,
            forwarding: self.forwarding,
            reverse_dns: self.reverse_dns,
            dmarc: DmarcSettings {
                public_suffix_list: self.dmarc.public_suffix_list.map(|p| base.join(p)),
                ..self.dmarc
            },
            limits,
            submission,
            auth: self.auth,
            delivery: self.delivery,
            ..defaults
        })
    }
}

fn tls_files(t: RawTls, base: &Path) -> Result<TlsFiles, Invalid> {
    let exists = |p: &Spanned<PathBuf>| {
        let path = base.join(p.get_ref());
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(path),
            Ok(_) => Err((p.span().start, format!("{} is not a file", path.display()))),
            Err(e) => Err((
                p.span().start,
                format!("cannot open {}: {e}", path.display()),
            )),
        }
    };
    Ok(TlsFiles {
        cert: exists(&t.cert)?,
        key: exists(&t.key)?,
    })
}

fn listeners(raw: Vec<RawListener>) -> Result<Vec<Listener>, Invalid> {
    raw.into_iter()
        .map(|l| {
            if l.bind.get_ref().is_empty() {
                return Err((
                    l.bind.span().start,
                    "a listener needs at least one address".into(),
                ));
            }
            Ok(Listener {
                role: l.role,
                bind: l.bind.into_inner(),
                pregreet_wait: Duration::from_millis(l.pregreet_wait_ms),
            })
        })
        .collect()
}

/// The built-in limits of `default` and of the levels that have them.
fn builtin_classes(rules: &ReputationRules) -> BTreeMap<String, ClassLimits> {
    std::iter::once("default")
        .chain(rules.levels.iter().map(String::as_str))
        .filter_map(|c| ClassLimits::builtin(c).map(|l| (c.to_owned(), l)))
        .collect()
}

fn checked_limits(l: Spanned<Limits>) -> Result<Limits, Invalid> {
    let at = l.span().start;
    let l = l.into_inner();
    let rules: [(bool, &str); 5] = [
        (
            l.command_line_octets < 512,
            "command_line_octets must be at least 512 (RFC 5321 4.5.3.1.4)",
        ),
        (
            l.text_line_octets < 1000,
            "text_line_octets must be at least 1000 (RFC 5321 4.5.3.1.6)",
        ),
        (
            l.max_recipients < 100,
            "max_recipients must be at least 100 (RFC 5321 4.5.3.1.8)",
        ),
        (l.max_errors == 0, "max_errors must be at least 1"),
        (l.max_sessions == 0, "max_sessions must be at least 1"),
    ];
    match rules.iter().find(|(bad, _)| *bad) {
        Some((_, why)) => Err((at, (*why).to_owned())),
        None => Ok(l),
    }
}

fn checked_submission(s: Spanned<Submission>) -> Result<Submission, Invalid> {
    let at = s.span().start;
    let s = s.into_inner();
    if s.log_retention_days < 7 {
        // spamops §3.1: enough to trace a complaint, at least a week.
        return Err((
            at,
            "log_retention_days must be at least 7 (draft-hutzler-spamops 3.1)".into(),
        ));
    }
    if s.max_sessions_per_account == 0 {
        return Err((at, "max_sessions_per_account must be at least 1".into()));
    }
    Ok(s)
}

/// A host or domain name as RFC 5321 4.1.2 allows it, lower-cased.
fn checked_domain(name: &Spanned<String>) -> Result<String, Invalid> {
    let n = name.get_ref().trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if n.is_empty() || n.len() > 253 || !n.split('.').all(label_ok) {
        return Err((
            name.span().start,
            format!("{:?} is not a valid domain name", name.get_ref()),
        ));
    }
    Ok(n)
}

/// This machine's name, for the banner when the config gives none.
pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
