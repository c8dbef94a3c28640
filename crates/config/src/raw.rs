//! The shape of the file (`Raw*`, as serde reads it) and its validation
//! into a [`Config`]: what serde cannot check (names are names, files
//! exist, limits make sense), each error with the byte offset of the
//! offending value. Every table refuses unknown keys so that a misspelt
//! option is an error, not a silently ignored line. The public types are
//! not defined here.

use crate::screening::builtin_classes;
use crate::{
    Admission, AuthPolicy, Autoconfig, Cidr, ClassLimits, Config, DEFAULT_DATA_DIR, Delivery,
    DmarcSettings, DnsList, Forwarding, Greylist, IdentityPolicy, InboundPolicy, Limits, Listener,
    ListenerRole, MailboxServer, PolicyService, RecipientPolicy, ReputationRules, ReverseDns,
    Rspamd, StateBackend, Submission, TlsFiles, TlsMode, system_hostname,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

mod acme;
mod dmarc;
mod milter;
mod state;
use state::RawState;

mod checked;
use checked::{
    checked_admission, checked_containment, checked_delivery, checked_greylist, checked_limits,
    checked_submission,
};

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
    admission: Option<Spanned<Admission>>,
    rspamd: Option<Rspamd>,
    #[serde(default)]
    forwarding: Forwarding,
    dmarc: Option<Spanned<DmarcSettings>>,
    #[serde(default)]
    reverse_dns: ReverseDns,
    limits: Option<Spanned<Limits>>,
    #[serde(default)]
    dnsbl: Vec<DnsList>,
    submission: Option<Spanned<Submission>>,
    #[serde(default)]
    auth: AuthPolicy,
    delivery: Option<Spanned<Delivery>>,
    greylist: Option<Spanned<Greylist>>,
    #[serde(default)]
    policy: PolicyService,
    autoconfig: Option<RawAutoconfig>,
    acme: Option<acme::RawAcme>,
    containment: Option<Spanned<crate::Containment>>,
    #[serde(default)]
    milter: Vec<milter::RawMilter>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAutoconfig {
    imap: Option<Spanned<String>>,
    imap_tls: Option<TlsMode>,
    pop3: Option<Spanned<String>>,
    pop3_tls: Option<TlsMode>,
}

impl RawAutoconfig {
    fn validate(self) -> Result<Autoconfig, Invalid> {
        let server = |at: Option<Spanned<String>>, tls: Option<TlsMode>| {
            at.map(|a| {
                let (host, port) = host_port(&a)?;
                Ok(MailboxServer {
                    host,
                    port,
                    tls: tls.unwrap_or(TlsMode::for_port(port)),
                })
            })
            .transpose()
        };
        Ok(Autoconfig {
            imap: server(self.imap, self.imap_tls)?,
            pop3: server(self.pop3, self.pop3_tls)?,
        })
    }
}

/// `host:port` with a host name (as clients will connect to it, so it must
/// be a name or an address they can reach) and a port above 0.
fn host_port(value: &Spanned<String>) -> Result<(String, u16), Invalid> {
    let at = value.span().start;
    let bad = || {
        (
            at,
            format!(
                "{:?} is not host:port (e.g. \"imap.example.com:993\")",
                value.get_ref()
            ),
        )
    };
    let (host, port) = value.get_ref().rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok((host.to_owned(), port));
    }
    let name = checked_domain(&Spanned::new(value.span(), host.to_owned()))?;
    Ok((name, port))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    #[serde(default)]
    nameservers: Vec<SocketAddr>,
    timeout_ms: Option<u64>,
    trust_ad: Option<Spanned<bool>>,
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
    #[serde(default)]
    allow_from: Vec<Cidr>,
    #[serde(default)]
    proxy_protocol: Option<Spanned<bool>>,
    #[serde(default)]
    proxy_from: Vec<Cidr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    bind: SocketAddr,
    admin_token: Option<String>,
    /// HTTPS for the MTA-STS policy host (`mta-sts.DOMAIN`, port 443).
    mta_sts_bind: Option<SocketAddr>,
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
    /// This domain's own MTA-STS policy, served on `[http] mta_sts_bind`.
    mta_sts: Option<portcullis_mtasts::Mode>,
    /// The MX host names the policy lists (default: `hostname`).
    mx: Option<Vec<String>>,
    mta_sts_max_age: Option<u64>,
}

pub(crate) type Invalid = (usize, String);

/// How long senders cache our own MTA-STS policy: a week, as RFC 8461's
/// examples suggest (long enough to outlast an attack on DNS).
const DEFAULT_STS_MAX_AGE: u64 = 604_800;

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
        let tls_at = self.tls.as_ref().map(|t| t.cert.span().start);
        let tls = self.tls.map(|t| tls_files(t, base)).transpose()?;
        let listeners = listeners(self.listener)?;
        let local_domains = self
            .domain
            .iter()
            .map(|d| checked_domain(&d.name))
            .collect::<Result<Vec<_>, _>>()?;
        let (state_backend, redis) = match self.state {
            None => (StateBackend::Embedded, None),
            Some(mut st) => {
                let backend = st.backend.take();
                let redis = st.redis()?;
                match backend {
                    None => (StateBackend::Embedded, redis),
                    Some(b) if *b.get_ref() == StateBackend::Redis && redis.is_none() => {
                        return Err((
                            b.span().start,
                            "backend = \"redis\" needs redis_url, sentinels or cluster_nodes"
                                .into(),
                        ));
                    }
                    Some(b) => (b.into_inner(), redis),
                }
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
        if let Some(d) = &self.dns
            && let Some(trust) = d.trust_ad.as_ref().filter(|t| *t.get_ref())
        {
            // An AD bit is only as good as the path it came over (RFC 6698
            // §A.3): the validating resolver must be this machine.
            if d.nameservers.is_empty() || !d.nameservers.iter().all(|a| a.ip().is_loopback()) {
                return Err((
                    trust.span().start,
                    "dns.trust_ad: needs nameservers on loopback (a validating resolver such as unbound on 127.0.0.1)".into(),
                ));
            }
        }
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
        let mta_sts: BTreeMap<String, portcullis_mtasts::Policy> = self
            .domain
            .iter()
            .filter_map(|d| {
                let policy = portcullis_mtasts::Policy {
                    mode: d.mta_sts?,
                    mx: d
                        .mx
                        .clone()
                        .unwrap_or_else(|| vec![defaults.hostname.clone()]),
                    max_age: d.mta_sts_max_age.unwrap_or(DEFAULT_STS_MAX_AGE),
                };
                // What we serve must be what a sender can parse (§3.2).
                let served = portcullis_mtasts::parse_policy(&policy.to_text())
                    .map(|_| policy)
                    .map_err(|e| (d.name.span().start, format!("domain.mx: {e}")));
                Some(served.map(|p| {
                    (
                        d.name.get_ref().trim_end_matches('.').to_ascii_lowercase(),
                        p,
                    )
                }))
            })
            .collect::<Result<_, _>>()?;
        let mta_sts_bind = self.http.as_ref().and_then(|h| h.mta_sts_bind);
        let acme = self
            .acme
            .map(|a| {
                let mta_sts_names = mta_sts.keys().map(|d| format!("mta-sts.{d}")).collect();
                let around = acme::Around {
                    hostname: &defaults.hostname,
                    mta_sts_names,
                    mta_sts_bind: mta_sts_bind.is_some(),
                    tls_at,
                };
                a.validate(base, around)
            })
            .transpose()?;
        let milters = self
            .milter
            .into_iter()
            .map(milter::RawMilter::validate)
            .collect::<Result<_, _>>()?;
        Ok(Config {
            acme,
            milters,
            user: self.user,
            lmtp,
            mta_sts,
            mta_sts_bind,
            dns_lists: self.dnsbl,
            inbound_policy,
            recipient_policy,
            dns_timeout,
            dns_trust_ad: self
                .dns
                .as_ref()
                .and_then(|d| d.trust_ad.as_ref())
                .is_some_and(|t| *t.get_ref()),
            dns_nameservers: self.dns.map(|d| d.nameservers).unwrap_or_default(),
            tls,
            admin_token: self.http.as_ref().and_then(|h| h.admin_token.clone()),
            http_bind: self.http.map(|h| h.bind).or(defaults.http_bind),
            state_backend,
            redis,
            classes,
            identity: IdentityPolicy {
                allocations: self.identity.allocations.map(|p| base.join(p)),
                ..self.identity
            },
            reputation,
            admission: self
                .admission
                .map(checked_admission)
                .transpose()?
                .unwrap_or_default(),
            rspamd: self.rspamd,
            forwarding: self.forwarding,
            reverse_dns: self.reverse_dns,
            dmarc: self
                .dmarc
                .map(|d| dmarc::checked_dmarc(d, base))
                .transpose()?
                .unwrap_or_default(),
            limits,
            submission,
            auth: self.auth,
            delivery: self
                .delivery
                .map(checked_delivery)
                .transpose()?
                .unwrap_or_default(),
            greylist: self
                .greylist
                .map(checked_greylist)
                .transpose()?
                .unwrap_or_default(),
            policy: self.policy,
            autoconfig: self
                .autoconfig
                .map(RawAutoconfig::validate)
                .transpose()?
                .unwrap_or_default(),
            containment: self
                .containment
                .map(checked_containment)
                .transpose()?
                .unwrap_or_default(),
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
            let proxy_protocol = match l.proxy_protocol {
                Some(p) if *p.get_ref() && l.proxy_from.is_empty() => {
                    return Err((
                        p.span().start,
                        "proxy_protocol needs proxy_from: the load balancers' addresses (a header from anyone else would let a client choose its own address)".into(),
                    ));
                }
                Some(p) => p.into_inner(),
                None => false,
            };
            Ok(Listener {
                role: l.role,
                bind: l.bind.into_inner(),
                pregreet_wait: Duration::from_millis(l.pregreet_wait_ms),
                allow_from: l.allow_from,
                proxy_protocol,
                proxy_from: l.proxy_from,
            })
        })
        .collect()
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
