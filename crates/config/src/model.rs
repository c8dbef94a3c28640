//! The validated [`Config`] the rest of the program uses, the small enums
//! it is made of, and its defaults (the embedded configuration, the data
//! directory, the system hostname). The section tables live in
//! [`crate::screening`] and [`crate::service`]; reading and checking the
//! file is [`crate::raw`]'s job, not this one's.

use crate::screening::builtin_classes;
use crate::{
    AcmeSettings, Admission, AuthPolicy, Autoconfig, Cidr, ClassLimits, Delivery, DmarcSettings,
    DnsList, Forwarding, Greylist, IdentityPolicy, Limits, PolicyService, ReputationRules,
    ReverseDns, Rspamd, Submission,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Postfix's policy delegation protocol (check_policy_service): the
    /// class of service, quotas and greylisting for a Postfix in front.
    Policy,
}

impl ListenerRole {
    pub fn name(self) -> &'static str {
        match self {
            ListenerRole::Mx => "mx",
            ListenerRole::Submission => "submission",
            ListenerRole::Submissions => "submissions",
            ListenerRole::Policy => "policy",
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

/// Which Redis holds the shared state, and how a node keeps its
/// concurrency leases alive there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisSettings {
    pub target: RedisTarget,
    /// A node that has not renewed its leases for this long is gone: its
    /// concurrency slots are counted no more (issue 18, item 5).
    pub node_timeout: Duration,
}

/// One Redis, a Sentinel-watched master, or a Redis Cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisTarget {
    /// `redis_url = "redis://host:6379/0"`.
    Single(String),
    /// `redis_url = "redis+sentinel://host:26379,host:26380/mymaster"`,
    /// or `sentinels` with `sentinel_master`: the nodes follow whichever
    /// replica the sentinels promote.
    Sentinel {
        sentinels: Vec<String>,
        master: String,
    },
    /// `cluster_nodes = ["redis://host:7000", ...]`: seed nodes.
    Cluster(Vec<String>),
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub hostname: String,
    /// Started as root, become this user once the ports are bound.
    pub user: Option<String>,
    pub data_dir: PathBuf,
    pub dns_nameservers: Vec<SocketAddr>,
    /// `[dns] trust_ad`: the (first) resolver validates DNSSEC and sits on
    /// loopback, so its AD bit can be believed (DANE, RFC 7672).
    pub dns_trust_ad: bool,
    /// Certificate and key files; `None` means a self-signed pair in
    /// `data_dir/tls`, generated on first start.
    pub tls: Option<TlsFiles>,
    /// `[acme]`: certificates from an ACME CA, kept in `data_dir/acme`.
    pub acme: Option<AcmeSettings>,
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
    /// Local domains' own MTA-STS policies (`[[domain]] mta_sts`), served
    /// at https://mta-sts.DOMAIN/.well-known/mta-sts.txt.
    pub mta_sts: BTreeMap<String, portcullis_mtasts::Policy>,
    /// Where that HTTPS host listens (`[http] mta_sts_bind`, port 443 in
    /// production); None: not served.
    pub mta_sts_bind: Option<SocketAddr>,
    /// How long one DNS query may take before it is a temporary error.
    pub dns_timeout: Duration,
    /// DNS block and reputation lists (RFC 5782), in the order given.
    pub dns_lists: Vec<DnsList>,
    pub state_backend: StateBackend,
    /// Where the Redis backend's state lives (issue 18); set whenever
    /// `[state]` names one, used when `state_backend` is Redis.
    pub redis: Option<RedisSettings>,
    /// Class-of-service limits by class name: `default` is the one pool
    /// every unknown sender shares; the reputation levels name the others.
    pub classes: BTreeMap<String, ClassLimits>,
    pub identity: IdentityPolicy,
    pub reputation: ReputationRules,
    pub admission: Admission,
    pub rspamd: Option<Rspamd>,
    /// Milters (`[[milter]]`), in the order every message passes them.
    pub milters: Vec<crate::Milter>,
    pub forwarding: Forwarding,
    pub dmarc: DmarcSettings,
    pub reverse_dns: ReverseDns,
    pub limits: Limits,
    pub submission: Submission,
    pub auth: AuthPolicy,
    pub delivery: Delivery,
    pub greylist: Greylist,
    pub policy: PolicyService,
    /// The IMAP/POP3 servers mail clients are told about.
    pub autoconfig: Autoconfig,
    /// Compromised accounts: signals and thresholds (issue 29).
    pub containment: crate::Containment,
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
    /// Who may connect (empty: anyone). Meant for the policy listener,
    /// whose clients are the operator's own Postfix hosts.
    pub allow_from: Vec<Cidr>,
    /// Every connection starts with a PROXY protocol header (v1 or v2)
    /// naming the real client, sent by a load balancer in `proxy_from`.
    pub proxy_protocol: bool,
    pub proxy_from: Vec<Cidr>,
}

pub const DEFAULT_DATA_DIR: &str = "./portcullis-data";

impl Config {
    /// The first address the listener with `role` binds (what clients
    /// are told: DNS records, autoconfig, the banner).
    pub fn listener_addr(&self, role: ListenerRole) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|l| l.role == role)
            .and_then(|l| l.bind.first().copied())
    }

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

    /// Whether `address` is `[dmarc] report_mailbox`: mail to it is a
    /// report to read and store, not a mailbox's (RCPT accepts it, the
    /// router hands it to the report intake).
    /// Whether `address` is where reports arrive: DMARC and TLS-RPT
    /// (`[dmarc] report_mailbox`) or ARF feedback
    /// (`[containment] feedback_address`).
    pub fn is_report_mailbox(&self, address: &str) -> bool {
        [
            self.dmarc.report_mailbox.as_deref(),
            self.containment.feedback_address.as_deref(),
        ]
        .into_iter()
        .flatten()
        .any(|m| m.eq_ignore_ascii_case(address))
    }

    /// The embedded default of `portcullis serve` without `--config`.
    pub fn embedded_default(data_dir: PathBuf, hostname: String) -> Config {
        let at = |port| vec![SocketAddr::from(([127, 0, 0, 1], port))];
        let listener = |role, port| Listener {
            role,
            bind: at(port),
            pregreet_wait: Duration::ZERO,
            allow_from: Vec::new(),
            proxy_protocol: false,
            proxy_from: Vec::new(),
        };
        Config {
            hostname,
            user: None,
            data_dir,
            dns_nameservers: Vec::new(),
            dns_trust_ad: false,
            tls: None,
            acme: None,
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
            mta_sts: BTreeMap::new(),
            mta_sts_bind: None,
            dns_lists: Vec::new(),
            dns_timeout: Duration::from_secs(5),
            state_backend: StateBackend::Embedded,
            redis: None,
            classes: builtin_classes(&ReputationRules::default()),
            identity: IdentityPolicy::default(),
            reputation: ReputationRules::default(),
            admission: Admission::default(),
            rspamd: None,
            milters: Vec::new(),
            forwarding: Forwarding::default(),
            dmarc: DmarcSettings::default(),
            reverse_dns: ReverseDns::default(),
            limits: Limits::default(),
            submission: Submission::default(),
            auth: AuthPolicy::default(),
            delivery: Delivery::default(),
            greylist: Greylist::default(),
            policy: PolicyService::default(),
            autoconfig: Autoconfig::default(),
            containment: crate::Containment::default(),
        }
    }
}

/// This machine's name, for the banner when the config gives none.
pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
