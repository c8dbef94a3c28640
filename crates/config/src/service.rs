//! The sections that run the mail itself: `[limits]` of a session,
//! `[submission]`, `[auth]`, `[delivery]` and `[forwarding]`, with their
//! defaults. Each table refuses unknown keys so that a misspelt option is
//! an error, not a silently ignored line. Checks that need more than serde
//! (and their error texts) belong in [`crate::raw`].

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

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
    /// Connections at once to one site (the MX host set a destination
    /// resolves to) without its own `[[delivery.site]]` entry.
    pub max_per_domain: usize,
    /// A message still undelivered after this long gets one "delayed"
    /// DSN (RFC 3464) if its sender asked (NOTIFY=DELAY) or said nothing.
    pub delay_notice_secs: u64,
    /// Domains whose mail leaves only over TLS: without STARTTLS at the
    /// next hop it waits (and finally bounces) instead of going in clear.
    pub require_tls_for: Vec<String>,
    /// Messages per minute to one site without its own entry (0: no limit
    /// until a rate answer sets one), spaced evenly so a large queue does
    /// not hit a receiver in a burst.
    pub max_per_domain_per_minute: u32,
    /// Honour the destination's MTA-STS policy (RFC 8461): in `enforce`
    /// mode only the MX hosts it names, over TLS verified for their name.
    pub mta_sts: bool,
    /// A CA file trusted besides the system CAs for MTA-STS: the policy
    /// host's HTTPS and the MX hosts' certificates (private CAs, tests).
    pub mta_sts_ca: Option<PathBuf>,
    /// The whole policy fetch (connect, TLS, answer) takes at most this.
    pub mta_sts_timeout_secs: u64,
    /// How often TLS reports (RFC 8460) go to the policy domains we
    /// delivered to (a day; 0: never).
    pub tls_rpt_interval_secs: u64,
    /// Their From: (default postmaster@ the first local domain); its
    /// domain's DKIM key signs them.
    pub tls_rpt_from: Option<String>,
    /// `[[delivery.site]]`: providers' MX host patterns and their limits
    /// (changing or adding to the built-in Google, Microsoft, Yahoo and
    /// Apple entries).
    pub site: Vec<portcullis_shaping::SiteRule>,
    /// Messages one connection carries, for sites without their own entry
    /// (0: no limit).
    pub messages_per_connection: u32,
    /// A connection whose transaction ended well waits this long for the
    /// next transaction to the same place (Postfix's
    /// `smtp_connection_cache_time_limit`; 0: one message a connection).
    pub connection_cache_secs: u64,
    /// No connection is reused this long after it was opened (Postfix's
    /// `smtp_connection_reuse_time_limit`).
    pub connection_reuse_secs: u64,
    /// Connections opened a minute to one site without its own entry (0:
    /// no limit).
    pub connections_per_minute: u32,
    /// `[[delivery.reply_rule]]`: the operator's reply classes, before
    /// the built-in ones.
    pub reply_rule: Vec<portcullis_shaping::Rule>,
    /// The first pause of a site after a rate answer (at least 60) ...
    pub site_pause_secs: u64,
    /// ... doubling while they repeat, up to this.
    pub site_max_pause_secs: u64,
    /// Days an address stays suppressed after a remote "no such mailbox"
    /// (0: no suppression).
    pub suppress_days: u32,
    /// Outgoing connections over IPv4 leave from this address.
    pub source_ipv4: Option<std::net::Ipv4Addr>,
    /// Outgoing connections over IPv6 leave from this address.
    pub source_ipv6: Option<std::net::Ipv6Addr>,
    /// The name we give in EHLO (the hostname when absent); it should be
    /// the PTR name of the source addresses.
    pub helo_name: Option<String>,
    /// Which of an MX host's addresses are tried first.
    pub address_preference: AddressPreference,
}

/// `[delivery] address_preference` (Postfix's `smtp_address_preference`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AddressPreference {
    /// IPv6 addresses first, then IPv4.
    Ipv6,
    /// IPv4 addresses first, then IPv6.
    Ipv4,
    /// In the order DNS gave them.
    #[default]
    Any,
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
            mta_sts: true,
            mta_sts_ca: None,
            mta_sts_timeout_secs: 15,
            tls_rpt_interval_secs: 86_400,
            tls_rpt_from: None,
            site: Vec::new(),
            messages_per_connection: 0,
            connection_cache_secs: 2,
            connection_reuse_secs: 300,
            connections_per_minute: 0,
            reply_rule: Vec::new(),
            site_pause_secs: 60,
            site_max_pause_secs: 3600,
            suppress_days: 30,
            source_ipv4: None,
            source_ipv6: None,
            helo_name: None,
            address_preference: AddressPreference::Any,
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
    /// How often the server looks for a pending DKIM key (`dkim rotate`)
    /// whose record DNS now serves, and signs with it (0: only `dkim
    /// activate` switches).
    pub dkim_activate_check_secs: u64,
    /// Make a new DKIM key (pending, as `dkim rotate` does) for each
    /// domain whose newest key is this many days old (0: never). Signing
    /// switches to it once DNS serves its record.
    pub dkim_rotate_days: u32,
    /// With `dkim_rotate_days`, delete keys retired this many days ago
    /// (their records may then leave DNS).
    pub dkim_retire_days: u32,
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
            dkim_activate_check_secs: 3600,
            dkim_rotate_days: 0,
            dkim_retire_days: 7,
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

/// `[autoconfig]`: the mailbox servers mail clients are told about
/// (Thunderbird's autoconfig, Outlook's autodiscover, RFC 6186 SRV records
/// from `dns-records`). portcullis serves no IMAP or POP3 itself; these
/// name the server that does (e.g. Dovecot).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Autoconfig {
    pub imap: Option<MailboxServer>,
    pub pop3: Option<MailboxServer>,
}

/// One IMAP or POP3 server as clients reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailboxServer {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
}

/// How a client secures its connection to a mailbox server.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS from the first byte (993, 995; RFC 8314 prefers it).
    Tls,
    /// Plain connection, then STARTTLS/STLS (143, 110).
    Starttls,
}

impl TlsMode {
    /// The mode a port is usually run with: implicit TLS on 993 and 995,
    /// STARTTLS elsewhere.
    pub fn for_port(port: u16) -> TlsMode {
        match port {
            993 | 995 => TlsMode::Tls,
            _ => TlsMode::Starttls,
        }
    }
}

/// `[acme]`: certificates from an ACME CA (RFC 8555) instead of `[tls]`
/// files or the self-signed default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeSettings {
    /// The CA's directory URL (https).
    pub directory: String,
    /// `mailto:` URLs the CA may write to about the account.
    pub contact: Vec<String>,
    /// A CA file trusted for the ACME server's own HTTPS (a private ACME
    /// server, tests); None: the system's roots.
    pub directory_ca: Option<PathBuf>,
    /// The names on the certificate; the hostname first by default, then
    /// `mta-sts.DOMAIN` of each `[[domain]]` that publishes `mta_sts`.
    pub domains: Vec<String>,
    /// First retry after a failure; each further one waits twice as long
    /// ...
    pub retry_secs: u64,
    /// ... up to this.
    pub retry_max_secs: u64,
}
