//! The router: which courier carries each recipient of a message. Local
//! mailboxes (one leg for all of them, written with others' in one sync),
//! an LMTP server per domain that has one, and for every other domain one
//! SMTP transaction, to the smarthost or to the domain's MX hosts in
//! order. Remote transactions start through their site's gate
//! (`crate::sites`): the destinations that share MX hosts share one set
//! of limits and one back-off, and every outcome is classified.

use crate::client::{self, CacheSettings, ConnKey, Outgoing, TlsRules};
use crate::dane::{DnsTlsa, TlsaSource};
use crate::mailboxes::{MailboxDrop, Mailboxes};
use crate::mta_sts::StsSource;
use crate::outcome::{Answer, FailureKind, HostFailure, RcptOutcome, Status};
use crate::route::{MxResolver, Route};
use crate::sites::SiteGate;
use crate::{Addressee, BoxFuture, Courier, Leg, Parcel};
use portcullis_config::Config;
use portcullis_metrics::Metrics;
use portcullis_shaping::{Action, SiteLimits};
use rules::{Session, Skip, Target, no_host_in_policy};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tracing::{info, warn};

/// Where one leg goes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Destination {
    /// Our own Maildirs.
    Mailboxes,
    /// `[dmarc] report_mailbox`: read and stored by the report intake.
    Reports,
    /// A local domain's mail store behind LMTP.
    Lmtp(String, SocketAddr),
    /// Another domain: its MX hosts, or the smarthost.
    Remote(String),
}

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("cannot read the smarthost password file {path}: {source}")]
    PasswordFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("[delivery] smarthost_user needs smarthost_password_file")]
    PasswordMissing,
    #[error("[delivery] {key}: {why}")]
    Tls { key: &'static str, why: String },
}

/// The smarthost login: only ever over TLS that proved who it talks to.
struct Login {
    user: String,
    password: String,
    tls: tokio_rustls::TlsConnector,
    name: String,
}

pub struct Router {
    config: Config,
    mailboxes: Mailboxes,
    routes: Arc<dyn MxResolver>,
    /// Opportunistic STARTTLS to MX hosts (RFC 7435).
    tls: tokio_rustls::TlsConnector,
    /// The destination's MTA-STS policy, when `[delivery] mta_sts`.
    sts: Option<Arc<dyn StsSource>>,
    /// MX hosts' TLSA records, when `[dns] trust_ad` (DANE, RFC 7672).
    tlsa: Option<Arc<dyn TlsaSource>>,
    /// Where sessions held to a policy are counted (TLS-RPT, RFC 8460).
    tls_outcomes: Option<Arc<dyn TlsOutcomes>>,
    /// Where mail to `[dmarc] report_mailbox` goes.
    reports: Option<Arc<dyn ReportIntake>>,
    /// STARTTLS verified for the MX host's name (system CAs plus
    /// `mta_sts_ca`): what an enforced MTA-STS policy demands.
    verified: tokio_rustls::TlsConnector,
    login: Option<Login>,
    /// The sites' limits and back-off, and the reply table.
    sites: Arc<SiteGate>,
    /// Sessions kept for the next transaction to the same place.
    pool: client::Pool,
    /// Where reused and opened connections are counted.
    metrics: Option<Arc<Metrics>>,
}

impl Router {
    pub fn new(
        config: &Config,
        mailboxes: Mailboxes,
        routes: Arc<dyn MxResolver>,
    ) -> Result<Router, RouterError> {
        let tls = client::opportunistic_tls().map_err(|e| RouterError::Tls {
            key: "tls",
            why: e.to_string(),
        })?;
        let extra: Vec<_> = config.delivery.mta_sts_ca.iter().cloned().collect();
        let verified = client::verified_tls(&extra).map_err(|why| RouterError::Tls {
            key: "delivery.mta_sts_ca",
            why,
        })?;
        Ok(Router {
            login: smarthost_login(&config.delivery)?,
            config: config.clone(),
            mailboxes,
            routes,
            tls,
            sts: None,
            tlsa: tlsa_source(config),
            tls_outcomes: None,
            reports: None,
            verified,
            sites: Arc::new(SiteGate::new(config)),
            pool: client::Pool::new(CacheSettings::of(&config.delivery)),
            metrics: None,
        })
    }

    /// Count connections opened and reused in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Router {
        self.metrics = Some(metrics);
        self
    }

    /// The sites' state, for the operator's views.
    pub fn sites(&self) -> Arc<SiteGate> {
        self.sites.clone()
    }

    /// Honour destinations' MTA-STS policies from `sts`.
    pub fn with_sts(mut self, sts: Arc<dyn StsSource>) -> Router {
        self.sts = Some(sts);
        self
    }

    /// Ask `tlsa` for MX hosts' TLSA records instead of the `[dns]
    /// trust_ad` resolver.
    pub fn with_tlsa(mut self, tlsa: Arc<dyn TlsaSource>) -> Router {
        self.tlsa = Some(tlsa);
        self
    }

    /// Count sessions held to an MTA-STS or DANE policy in `outcomes`.
    pub fn with_tls_outcomes(mut self, outcomes: Arc<dyn TlsOutcomes>) -> Router {
        self.tls_outcomes = Some(outcomes);
        self
    }

    /// Hand mail for `[dmarc] report_mailbox` to `intake`.
    pub fn with_reports(mut self, intake: Arc<dyn ReportIntake>) -> Router {
        self.reports = Some(intake);
        self
    }

    fn destination(&self, address: &str) -> Destination {
        let domain = address
            .rsplit_once('@')
            .map_or("", |(_, d)| d)
            .to_ascii_lowercase();
        if self.reports.is_some() && self.config.is_report_mailbox(address) {
            return Destination::Reports;
        }
        match self.config.lmtp.get(&domain) {
            Some(addr) => Destination::Lmtp(domain, *addr),
            None if self.config.is_local_domain(&domain) => Destination::Mailboxes,
            None => Destination::Remote(domain),
        }
    }

    async fn to_mailboxes(&self, parcel: &Parcel, to: &[&Addressee]) -> Vec<RcptOutcome> {
        let to = to
            .iter()
            .map(|a| {
                let (local, domain) = a.address.rsplit_once('@').unwrap_or((&a.address, ""));
                (domain.to_owned(), local.to_owned(), a.folder.clone())
            })
            .collect();
        let drop = MailboxDrop {
            return_path: parcel.sender.clone(),
            data: parcel.data.clone(),
            to,
        };
        self.mailboxes.deliver(drop).await
    }

    /// The message as the client sends it; plain, no login.
    fn outgoing<'a>(&'a self, parcel: &'a Parcel, recipients: &'a [String]) -> Outgoing<'a> {
        Outgoing {
            helo: self
                .config
                .delivery
                .helo_name
                .as_deref()
                .unwrap_or(&self.config.hostname),
            sender: &parcel.sender,
            recipients,
            data: &parcel.data,
            smtputf8: parcel.smtputf8,
            eight_bit: parcel.eight_bit,
            require_tls: parcel.require_tls,
            requiretls: parcel.require_tls,
            auth: None,
            source: None,
        }
    }

    async fn to_lmtp(
        &self,
        parcel: &Parcel,
        addr: SocketAddr,
        to: &[&Addressee],
    ) -> Vec<RcptOutcome> {
        let addresses: Vec<String> = to.iter().map(|a| a.address.clone()).collect();
        let mut outcomes =
            match client::deliver_lmtp(addr, &self.outgoing(parcel, &addresses)).await {
                Ok(o) => o,
                Err(f) => vec![RcptOutcome::of_failure(&f); to.len()],
            };
        self.sites.classify(&mut outcomes);
        log_outcomes(parcel, &addresses, &outcomes, &addr.to_string());
        outcomes
    }

    async fn to_domain(
        &self,
        parcel: &Parcel,
        domain: &str,
        to: &[&Addressee],
    ) -> Vec<RcptOutcome> {
        let addresses: Vec<String> = to.iter().map(|a| a.address.clone()).collect();
        if let Some(host) = self.config.delivery.smarthost {
            let smarthost = [Target {
                addr: host,
                name: host.ip().to_string(),
                secure_mx: false,
            }];
            let limits = self.sites.limits("smarthost");
            let carry = self.to_hosts(
                parcel,
                &addresses,
                domain,
                &smarthost,
                ("smarthost", limits),
            );
            return self
                .through_site("smarthost", limits, to.len(), carry)
                .await;
        }
        let every = |a: Answer, permanent: bool| {
            let o = if permanent {
                RcptOutcome::Permanent(a)
            } else {
                RcptOutcome::Temporary(a)
            };
            vec![o; to.len()]
        };
        match self.routes.route(domain).await {
            // RFC 7505 §4.2: bounce at once, 5.1.10.
            Route::NullMx => every(
                Answer::new(
                    Status(5, 1, 10),
                    format!("{domain} accepts no mail (null MX)"),
                ),
                true,
            ),
            Route::NoSuchDomain => every(
                Answer::new(Status(5, 1, 2), format!("domain {domain} does not exist")),
                true,
            ),
            // RFC 3463 X.4.3: directory server failure.
            Route::TempFail(why) => every(Answer::new(Status(4, 4, 3), why), false),
            Route::Hosts(hosts) => {
                let (site, limits) = self.sites.site_of(hosts.iter().map(|h| h.name.as_str()));
                let port = self.config.delivery.port;
                let preference = self.config.delivery.address_preference;
                let targets: Vec<Target> = hosts
                    .iter()
                    .flat_map(|h| {
                        preferred(&h.addrs, preference).into_iter().map(|a| Target {
                            addr: SocketAddr::new(a, port),
                            name: h.name.clone(),
                            secure_mx: h.secure,
                        })
                    })
                    .collect();
                let carry = self.to_hosts(parcel, &addresses, domain, &targets, (&site, limits));
                self.through_site(&site, limits, to.len(), carry).await
            }
        }
    }

    /// Carry a transaction through its site's gate: the answers go back
    /// to the site (a rate answer pauses it); a site that cannot take it
    /// now sends the recipients back to the queue.
    async fn through_site(
        &self,
        site: &str,
        limits: SiteLimits,
        n: usize,
        carry: impl Future<Output = Vec<RcptOutcome>>,
    ) -> Vec<RcptOutcome> {
        let ticket = match self.sites.enter(site, limits).await {
            Ok(t) => t,
            Err(d) => return vec![d.outcome(); n],
        };
        let mut outcomes = carry.await;
        self.sites.classify(&mut outcomes);
        let before = self.sites.paused_until(site);
        ticket.leave(&outcomes);
        let after = self.sites.paused_until(site);
        if let Some(a) = outcomes
            .iter()
            .map(RcptOutcome::answer)
            .find(|a| a.action == Action::Pause)
            .filter(|_| after != before)
        {
            warn!(event = "site_paused", site = %site, reply = %a.short(), class = %a.class, until_ms = after.unwrap_or(0));
        }
        // Those the rate answer deferred come back when the pause ends.
        if let Some(until) = self.sites.paused_until(site) {
            for o in outcomes
                .iter_mut()
                .filter(|o| matches!(o, RcptOutcome::Temporary(_)))
            {
                o.answer_mut().retry_at = Some(until);
            }
        }
        outcomes
    }

    /// The address to connect from to `to`.
    fn source_for(&self, to: SocketAddr) -> Option<IpAddr> {
        let d = &self.config.delivery;
        match to {
            SocketAddr::V4(_) => d.source_ipv4.map(IpAddr::V4),
            SocketAddr::V6(_) => d.source_ipv6.map(IpAddr::V6),
        }
    }

    /// Try each address in order until one answers the transaction, each
    /// under its own rules: DANE where it applies, else the MTA-STS
    /// policy (`rules.rs`); over a kept session where one was made under
    /// the same rules, carrying at most the site's
    /// `messages_per_connection` (0: no limit), or over a new one when
    /// the site's `connections_per_minute` allows.
    async fn to_hosts(
        &self,
        parcel: &Parcel,
        addresses: &[String],
        domain: &str,
        hosts: &[Target],
        (site, limits): (&str, SiteLimits),
    ) -> Vec<RcptOutcome> {
        let smarthost = self.config.delivery.smarthost.is_some();
        let login = self.login.as_ref().filter(|_| smarthost);
        if parcel.require_tls && smarthost && login.is_none() {
            return vec![
                RcptOutcome::of_failure(&requiretls_failure("the smarthost"));
                addresses.len()
            ];
        }
        let sts = self.sts_policy(domain, parcel.require_tls).await;
        let msg = Outgoing {
            require_tls: login.is_some()
                || self
                    .config
                    .delivery
                    .require_tls_for
                    .iter()
                    .any(|d| d == domain),
            auth: login.map(|l| (l.user.as_str(), l.password.as_str())),
            ..self.outgoing(parcel, addresses)
        };
        let (mut last, mut not_in_policy) = (None, false);
        // Refused over IPv6 for want of a PTR or authentication: only
        // IPv4 addresses are tried from then on, in the same attempt.
        let mut refused_v6: Option<Vec<RcptOutcome>> = None;
        for target in hosts {
            if refused_v6.is_some() && target.addr.is_ipv6() {
                continue;
            }
            let (session, name) = match login {
                Some(l) => (
                    Session {
                        tls: l.tls.clone(),
                        rules: TlsRules::Login,
                        require_tls: true,
                        held_to: None,
                    },
                    l.name.as_str(),
                ),
                None => match self
                    .session(domain, target, sts.as_ref(), parcel.require_tls)
                    .await
                {
                    Ok(s) => (s, target.name.as_str()),
                    Err(Skip::NotInPolicy) => {
                        not_in_policy = true;
                        continue;
                    }
                    Err(Skip::Failed(f)) => {
                        warn!(event = "remote_attempt_failed", id = %parcel.id, host = %target.addr, reason = %f.reason);
                        last = Some(f);
                        continue;
                    }
                },
            };
            let msg = Outgoing {
                require_tls: msg.require_tls || session.require_tls,
                source: self.source_for(target.addr),
                ..msg.clone()
            };
            let key = ConnKey::of(target.addr, &msg, name, session.rules.clone());
            let may_open = self.sites.open_connection(site, limits);
            let per_connection = limits.messages_per_connection;
            let carried = match self
                .pool
                .carry(&key, &msg, &session.tls, per_connection, may_open)
                .await
            {
                Ok(c) => c,
                // Not tried: back to the queue until the site allows.
                Err(d) => return vec![d.outcome(); addresses.len()],
            };
            self.count_connection(&carried);
            // A reused session was counted for TLS-RPT when it was opened.
            let held_to = session.held_to.as_ref().filter(|_| !carried.reused);
            match carried.result {
                Ok(mut outcomes) => {
                    self.count_tls(held_to, name, Ok(()));
                    self.sites.classify(&mut outcomes);
                    log_outcomes(parcel, addresses, &outcomes, &target.addr.to_string());
                    if target.addr.is_ipv6() && refuses_ipv6(&outcomes) {
                        info!(event = "ipv6_refused", id = %parcel.id, host = %target.addr, next = "ipv4");
                        refused_v6 = Some(outcomes);
                        continue;
                    }
                    return outcomes;
                }
                Err(f) => {
                    self.count_attempt(held_to, name, &f);
                    warn!(event = "remote_attempt_failed", id = %parcel.id, host = %target.addr, reason = %f.reason);
                    let answer = Answer::new(f.status, f.reason.clone()).with_code(f.code);
                    let (_, action) = self.sites.verdict(&answer);
                    let permanent = f.permanent;
                    last = Some(f);
                    if action == Action::RetryIpv4 && target.addr.is_ipv6() {
                        info!(event = "ipv6_refused", id = %parcel.id, host = %target.addr, next = "ipv4");
                        refused_v6 = Some(Vec::new());
                        continue;
                    }
                    // A rate answer speaks for the provider: its other
                    // hosts are not tried now.
                    if permanent || action == Action::Pause {
                        break;
                    }
                }
            }
        }
        if let Some(outcomes) = refused_v6.filter(|o| !o.is_empty()) {
            return outcomes;
        }
        let last = last.unwrap_or_else(|| {
            if not_in_policy {
                no_host_in_policy(domain)
            } else {
                // RFC 3463 X.4.4: unable to route.
                HostFailure::temporary(Status(4, 4, 4), "no address to try")
            }
        });
        vec![RcptOutcome::of_failure(&last); addresses.len()]
    }
}

fn log_outcomes(parcel: &Parcel, addresses: &[String], outcomes: &[RcptOutcome], host: &str) {
    for (to, o) in addresses.iter().zip(outcomes) {
        let a = o.answer();
        info!(event = "remote_result", id = %parcel.id, to = %to, host = %host, result = o.word(), status = %a.status, class = %a.class, reply = %a.text);
    }
}

impl Courier for Router {
    fn legs(&self, to: &[Addressee]) -> Vec<Leg> {
        let mut legs: BTreeMap<Destination, Vec<usize>> = BTreeMap::new();
        for (i, a) in to.iter().enumerate() {
            legs.entry(self.destination(&a.address))
                .or_default()
                .push(i);
        }
        legs.into_iter()
            .map(|(destination, members)| Leg {
                name: match &destination {
                    Destination::Mailboxes => "mailboxes".to_owned(),
                    Destination::Reports => "reports".to_owned(),
                    Destination::Lmtp(d, _) | Destination::Remote(d) => d.clone(),
                },
                destination,
                members,
            })
            .collect()
    }

    fn carry<'a>(
        &'a self,
        parcel: &'a Parcel,
        to: &'a [Addressee],
        leg: &'a Leg,
    ) -> BoxFuture<'a, Vec<RcptOutcome>> {
        Box::pin(async move {
            let members: Vec<&Addressee> = leg.members.iter().filter_map(|&i| to.get(i)).collect();
            let mut outcomes = match &leg.destination {
                Destination::Mailboxes => self.to_mailboxes(parcel, &members).await,
                Destination::Reports => self.to_reports(parcel, members.len()).await,
                Destination::Lmtp(_, addr) => self.to_lmtp(parcel, *addr, &members).await,
                Destination::Remote(domain) => self.to_domain(parcel, domain, &members).await,
            };
            self.sites.classify(&mut outcomes);
            outcomes
        })
    }
}

/// TLSA from the first name server when `[dns] trust_ad` says it is a
/// validating resolver on loopback; no DANE otherwise.
fn tlsa_source(config: &Config) -> Option<Arc<dyn TlsaSource>> {
    let resolver = config
        .dns_nameservers
        .first()
        .filter(|_| config.dns_trust_ad)?;
    Some(Arc::new(DnsTlsa::new(*resolver, config.dns_timeout)))
}

/// The smarthost login from `[delivery]`: the password from its file, and
/// TLS pinned (`smarthost_pin_sha256`) or verified against the system CAs
/// and `smarthost_ca`, for `smarthost_name` or the smarthost's address.
fn smarthost_login(d: &portcullis_config::Delivery) -> Result<Option<Login>, RouterError> {
    let (user, file) = match (&d.smarthost_user, &d.smarthost_password_file) {
        (Some(user), Some(file)) => (user, file),
        (Some(_), None) => return Err(RouterError::PasswordMissing),
        _ => return Ok(None),
    };
    let Some(host) = d.smarthost else {
        return Ok(None);
    };
    let password = std::fs::read_to_string(file).map_err(|source| RouterError::PasswordFile {
        path: file.clone(),
        source,
    })?;
    let tls = match &d.smarthost_pin_sha256 {
        Some(pin) => {
            let bad = |why: String| RouterError::Tls {
                key: "smarthost_pin_sha256",
                why,
            };
            client::pinned_tls(client::parse_pin(pin).map_err(bad)?)
                .map_err(|e| bad(e.to_string()))?
        }
        None => {
            let extra: Vec<_> = d.smarthost_ca.iter().cloned().collect();
            client::verified_tls(&extra).map_err(|why| RouterError::Tls {
                key: "smarthost_ca",
                why,
            })?
        }
    };
    Ok(Some(Login {
        user: user.clone(),
        password: password.trim_end_matches(['\r', '\n']).to_owned(),
        tls,
        name: d
            .smarthost_name
            .clone()
            .unwrap_or_else(|| host.ip().to_string()),
    }))
}

mod counting;
mod family;
mod reports;
#[cfg(test)]
mod reuse_tests;
mod rules;
#[cfg(test)]
mod tests;

pub use counting::TlsOutcomes;
use family::{preferred, refuses_ipv6};
pub use reports::ReportIntake;

/// A REQUIRETLS message with no validated way to `next_hop`: bounced
/// with X.7.30, "REQUIRETLS support required" (RFC 8689 §5).
fn requiretls_failure(next_hop: &str) -> HostFailure {
    HostFailure::permanent(
        Status(5, 7, 30),
        format!(
            "the message requires REQUIRETLS and neither MTA-STS nor DANE validates {next_hop}"
        ),
    )
    .with_kind(FailureKind::Tls)
}
