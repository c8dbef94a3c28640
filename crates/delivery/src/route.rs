//! Where mail for a domain goes (RFC 5321 §5.1): its MX hosts in order of
//! preference, shuffled among equals, each with its addresses; the domain
//! itself when it has no MX (implicit MX); nowhere for a null MX (RFC
//! 7505). The router asks through [`MxResolver`], so tests route with a
//! table; [`DnsRoutes`] asks DNS.
//!
//! With `[dns] trust_ad` the MX question goes to the validating resolver
//! with the AD bit asked for, so each host carries whether the MX RRset
//! that named it was DNSSEC-validated: DANE looks up TLSA records only
//! for such hosts (RFC 7672 §2.2).

use crate::BoxFuture;
use crate::validating::{self, AskError};
use portcullis_dns::hickory_resolver::TokioResolver;
use portcullis_dns::hickory_resolver::proto::op::{Message, ResponseCode};
use portcullis_dns::hickory_resolver::proto::rr::{RData, RecordType};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MxHost {
    pub name: String,
    pub preference: u16,
    pub addrs: Vec<IpAddr>,
    /// Named by an MX RRset (or, with no MX, a denial of one) that the
    /// `[dns] trust_ad` resolver validated: only then is the host's TLSA
    /// RRset a statement of the domain's owner (RFC 7672 §2.2).
    pub secure: bool,
}

/// A domain's MX records, and whether the answer was validated.
#[derive(Debug, PartialEq, Eq)]
struct MxAnswer {
    records: Vec<(u16, String)>,
    secure: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Hosts(Vec<MxHost>),
    /// `MX 0 .`: the domain accepts no mail (RFC 7505) — bounce at once.
    NullMx,
    /// NXDOMAIN: no such domain.
    NoSuchDomain,
    /// The lookup failed for now; try again later.
    TempFail(String),
}

/// Where a domain's mail goes.
pub trait MxResolver: Send + Sync {
    fn route<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Route>;
}

/// Routes from DNS: MX records, then each exchanger's addresses.
pub struct DnsRoutes {
    resolver: TokioResolver,
    /// The first of `[dns] nameservers`, the validating one under
    /// `trust_ad`.
    first: Option<SocketAddr>,
    timeout: Duration,
    trust_ad: bool,
}

impl DnsRoutes {
    /// `nameservers` empty: the system resolver.
    pub fn new(
        nameservers: &[SocketAddr],
        timeout: Duration,
    ) -> Result<DnsRoutes, portcullis_dns::ResolverError> {
        Ok(DnsRoutes {
            resolver: portcullis_dns::resolver(nameservers, timeout)?,
            first: nameservers.first().copied(),
            timeout,
            trust_ad: false,
        })
    }

    /// `[dns] trust_ad`: ask the first name server, a validating resolver
    /// on loopback, for MX records and believe its AD bit (the config
    /// refuses `trust_ad` without one on loopback).
    pub fn trust_ad(mut self, trust: bool) -> DnsRoutes {
        self.trust_ad = trust;
        self
    }

    /// The MX records of `domain`; Err: the route it ends with.
    async fn mx(&self, domain: &str) -> Result<MxAnswer, Route> {
        match self.first.filter(|_| self.trust_ad) {
            Some(resolver) => {
                match validating::ask(resolver, domain, RecordType::MX, self.timeout).await {
                    Ok(reply) => mx_answer(&reply, domain),
                    Err(AskError::Timeout) => Err(Route::TempFail(format!(
                        "DNS lookup of MX for {domain} timed out"
                    ))),
                    Err(e) => Err(Route::TempFail(format!(
                        "DNS lookup of MX for {domain} failed: {e}"
                    ))),
                }
            }
            None => self.mx_unvalidated(domain).await,
        }
    }

    /// Through hickory, which keeps no AD bit: never secure.
    async fn mx_unvalidated(&self, domain: &str) -> Result<MxAnswer, Route> {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        let records = match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => mx_records(lookup.answers()),
            Err(e) if e.is_nx_domain() => return Err(Route::NoSuchDomain),
            Err(e) if e.is_no_records_found() => Vec::new(),
            Err(e) => {
                return Err(Route::TempFail(dns_failure(
                    &format!("MX for {domain}"),
                    &e,
                )));
            }
        };
        Ok(MxAnswer {
            records,
            secure: false,
        })
    }

    async fn lookup(&self, domain: &str) -> Route {
        let MxAnswer {
            records: mut mx,
            secure,
        } = match self.mx(domain).await {
            Ok(answer) => answer,
            Err(route) => return route,
        };
        if mx.len() == 1 && mx[0].1.is_empty() {
            return Route::NullMx;
        }
        if mx.is_empty() {
            // RFC 5321 §5.1: no MX, the domain's own address records.
            mx.push((0, domain.trim_end_matches('.').to_owned()));
        }
        shuffle_equal_preferences(&mut mx);
        let mut hosts = Vec::new();
        for (preference, name) in mx {
            if let Ok(ips) = self.resolver.lookup_ip(format!("{name}.").as_str()).await {
                let mut addrs: Vec<IpAddr> = ips.iter().collect();
                // Both families, IPv6 first (the white paper's "Practical
                // Considerations"), the other as fallback.
                addrs.sort_by_key(|a| !a.is_ipv6());
                hosts.push(MxHost {
                    name,
                    preference,
                    addrs,
                    secure,
                });
            }
        }
        if hosts.is_empty() {
            return Route::TempFail(format!("no address for any mail exchanger of {domain}"));
        }
        Route::Hosts(hosts)
    }
}

impl MxResolver for DnsRoutes {
    fn route<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Route> {
        Box::pin(self.lookup(domain))
    }
}

/// The MX records in an answer section: preference and exchange.
fn mx_records(
    answers: &[portcullis_dns::hickory_resolver::proto::rr::Record],
) -> Vec<(u16, String)> {
    answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::MX(m) => Some((
                m.preference,
                m.exchange.to_ascii().trim_end_matches('.').to_owned(),
            )),
            _ => None,
        })
        .collect()
}

/// The validating resolver's MX answer: NXDOMAIN is no such domain,
/// SERVFAIL (which is also how a bogus signature answers) a failure for
/// now, and the AD bit says whether DANE may follow it (RFC 7672 §2.2).
fn mx_answer(reply: &Message, domain: &str) -> Result<MxAnswer, Route> {
    match reply.metadata.response_code {
        ResponseCode::NoError => Ok(MxAnswer {
            records: mx_records(&reply.answers),
            secure: reply.metadata.authentic_data,
        }),
        ResponseCode::NXDomain => Err(Route::NoSuchDomain),
        code => Err(Route::TempFail(format!(
            "DNS lookup of MX for {domain} failed: {code}"
        ))),
    }
}

/// A lookup that failed for now, in words that say it was DNS (the queue
/// shows this as the reason a message waits).
fn dns_failure(what: &str, e: &portcullis_dns::hickory_resolver::net::NetError) -> String {
    match e {
        portcullis_dns::hickory_resolver::net::NetError::Timeout => {
            format!("DNS lookup of {what} timed out")
        }
        e => format!("DNS lookup of {what} failed: {e}"),
    }
}

/// Sort by preference; within one preference, a rotation picked from the
/// clock, which spreads load across equal MX hosts (RFC 5321 §5.1).
fn shuffle_equal_preferences(mx: &mut [(u16, String)]) {
    mx.sort();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize);
    let mut start = 0;
    while start < mx.len() {
        let pref = mx[start].0;
        let end = start + mx[start..].iter().take_while(|(p, _)| *p == pref).count();
        let group = &mut mx[start..end];
        let n = group.len();
        group.rotate_left(seed % n);
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dns_timeout_says_it_was_dns() {
        use portcullis_dns::hickory_resolver::net::NetError;
        assert_eq!(
            dns_failure("MX for example.test", &NetError::Timeout),
            "DNS lookup of MX for example.test timed out"
        );
    }

    fn mx_reply(authentic: bool) -> Message {
        use portcullis_dns::hickory_resolver::proto::op::{MessageType, OpCode};
        use portcullis_dns::hickory_resolver::proto::rr::rdata::MX;
        use portcullis_dns::hickory_resolver::proto::rr::{Name, Record};
        let mut reply = Message::new(1, MessageType::Response, OpCode::Query);
        reply.metadata.authentic_data = authentic;
        let exchange = Name::from_ascii("mx.example.test.").unwrap();
        let mx = MX::new(10, exchange);
        let owner = Name::from_ascii("example.test.").unwrap();
        reply.add_answer(Record::from_rdata(owner, 300, RData::MX(mx)));
        reply
    }

    #[test]
    fn a_validated_mx_answer_is_secure() {
        let answer = mx_answer(&mx_reply(true), "example.test").unwrap();
        assert_eq!(answer.records, vec![(10, "mx.example.test".to_owned())]);
        assert!(answer.secure);
    }

    #[test]
    fn an_mx_answer_without_the_ad_bit_is_insecure() {
        let answer = mx_answer(&mx_reply(false), "example.test").unwrap();
        assert_eq!(answer.records, vec![(10, "mx.example.test".to_owned())]);
        assert!(!answer.secure);
    }

    #[test]
    fn a_bogus_mx_answer_defers_and_nxdomain_is_no_such_domain() {
        let mut reply = mx_reply(false);
        reply.metadata.response_code = ResponseCode::ServFail;
        assert!(matches!(
            mx_answer(&reply, "example.test"),
            Err(Route::TempFail(why)) if why.contains("DNS lookup of MX for example.test")
        ));
        reply.metadata.response_code = ResponseCode::NXDomain;
        assert_eq!(mx_answer(&reply, "example.test"), Err(Route::NoSuchDomain));
    }

    #[test]
    fn equal_preferences_stay_together_in_order_of_preference() {
        let mut mx = vec![
            (20, "c".to_owned()),
            (10, "a".into()),
            (10, "b".into()),
            (30, "d".into()),
        ];
        shuffle_equal_preferences(&mut mx);
        let prefs: Vec<u16> = mx.iter().map(|(p, _)| *p).collect();
        assert_eq!(prefs, vec![10, 10, 20, 30]);
        let mut firsts: Vec<&str> = mx[..2].iter().map(|(_, n)| n.as_str()).collect();
        firsts.sort();
        assert_eq!(firsts, vec!["a", "b"]);
    }
}
