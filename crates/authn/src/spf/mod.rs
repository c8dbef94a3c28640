//! SPF (RFC 7208) of our own: record grammar in [`record`], check_host()
//! in [`eval`], and the DNS it needs behind [`SpfDns`] — answered by the
//! server's hickory resolver here, by a table in the unit tests.
//!
//! mail-auth 0.13's evaluator disagrees with the OpenSPF RFC 7208 suite
//! on 72 of its 203 cases (multiple records, 7-bit policy text, CIDR and
//! domain-spec syntax, void lookups, the explanation); this one follows
//! the RFC, and the suite runs against it (tests/spf_suite.rs).

pub mod eval;
pub mod record;

use mail_auth::hickory_resolver::TokioResolver;
use mail_auth::hickory_resolver::net::{DnsError, NetError};
use mail_auth::hickory_resolver::proto::rr::{Name, RData, RecordType};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use eval::{SpfQuery, SpfVerdict, check_host};

/// One DNS answer as SPF sees it (§4.4, §4.6.4): records, nothing (name
/// error or no data: a "void" lookup), or an error that makes temperror.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer<T> {
    Found(T),
    NotFound,
    Error(String),
}

impl<T> Answer<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Answer<U> {
        match self {
            Answer::Found(t) => Answer::Found(f(t)),
            Answer::NotFound => Answer::NotFound,
            Answer::Error(e) => Answer::Error(e),
        }
    }
}

/// The DNS queries check_host() makes. Names come without a trailing dot
/// and are taken as absolute.
pub trait SpfDns: Sync {
    /// TXT records, each one's strings joined without separator.
    fn txt(&self, name: &str) -> impl Future<Output = Answer<Vec<Vec<u8>>>> + Send;
    fn a(&self, name: &str) -> impl Future<Output = Answer<Vec<Ipv4Addr>>> + Send;
    fn aaaa(&self, name: &str) -> impl Future<Output = Answer<Vec<Ipv6Addr>>> + Send;
    /// Exchange names, lowest preference first.
    fn mx(&self, name: &str) -> impl Future<Output = Answer<Vec<String>>> + Send;
    fn ptr(&self, ip: IpAddr) -> impl Future<Output = Answer<Vec<String>>> + Send;
}

/// [`SpfDns`] over a hickory resolver.
pub struct ResolverDns<'a>(pub &'a TokioResolver);

/// A name built label by label: SPF targets may hold any visible
/// character (`a:ex:ample.com` is legal). A name DNS cannot carry (an
/// empty or over-long label) does not exist.
fn dns_name(name: &str) -> Option<Name> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.split('.').any(|l| l.is_empty() || l.len() > 63) {
        return None;
    }
    let mut n = Name::from_labels(name.split('.').map(str::as_bytes)).ok()?;
    n.set_fqdn(true);
    Some(n)
}

/// A name from an answer as its labels' text, unescaped (the inverse of
/// [`dns_name`]): `to_ascii()` would escape what SPF compares literally.
fn raw_name(name: &Name) -> String {
    name.iter()
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(".")
}

impl ResolverDns<'_> {
    async fn records(&self, name: &str, kind: RecordType) -> Answer<Vec<RData>> {
        let Some(name) = dns_name(name) else {
            return Answer::NotFound;
        };
        match self.0.lookup(name, kind).await {
            Ok(lookup) => Answer::Found(
                lookup
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == kind)
                    .map(|r| r.data.clone())
                    .collect(),
            ),
            Err(NetError::Dns(DnsError::NoRecordsFound(_))) => Answer::NotFound,
            Err(e) => Answer::Error(e.to_string()),
        }
    }

    /// The records of one type, each turned into what the caller needs.
    async fn pick<T>(
        &self,
        name: &str,
        kind: RecordType,
        each: impl Fn(&RData) -> Option<T>,
    ) -> Answer<Vec<T>> {
        self.records(name, kind)
            .await
            .map(|rs| rs.iter().filter_map(&each).collect())
    }
}

impl SpfDns for ResolverDns<'_> {
    async fn txt(&self, name: &str) -> Answer<Vec<Vec<u8>>> {
        self.pick(name, RecordType::TXT, |r| match r {
            RData::TXT(t) => Some(t.txt_data.iter().flat_map(|s| s.iter().copied()).collect()),
            _ => None,
        })
        .await
    }

    async fn a(&self, name: &str) -> Answer<Vec<Ipv4Addr>> {
        self.pick(name, RecordType::A, |r| match r {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .await
    }

    async fn aaaa(&self, name: &str) -> Answer<Vec<Ipv6Addr>> {
        self.pick(name, RecordType::AAAA, |r| match r {
            RData::AAAA(a) => Some(a.0),
            _ => None,
        })
        .await
    }

    async fn mx(&self, name: &str) -> Answer<Vec<String>> {
        let found = self.pick(name, RecordType::MX, |r| match r {
            RData::MX(m) => Some((m.preference, raw_name(&m.exchange))),
            _ => None,
        });
        found.await.map(|mut mx| {
            mx.sort_by_key(|(p, _)| *p);
            mx.into_iter().map(|(_, n)| n).collect()
        })
    }

    async fn ptr(&self, ip: IpAddr) -> Answer<Vec<String>> {
        let zone = if ip.is_ipv4() {
            "in-addr.arpa"
        } else {
            "ip6.arpa"
        };
        let name = crate::dnsbl_query(ip, zone);
        self.pick(&name, RecordType::PTR, |r| match r {
            RData::PTR(p) => Some(raw_name(&p.0)),
            _ => None,
        })
        .await
    }
}
