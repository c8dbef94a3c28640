//! A verifier that never touches the network: the TXT records it may see
//! are given up front ([`TxtRecords`]), and a name missing from them does
//! not exist (NXDOMAIN). The DKIM vectors run through it
//! (`tests/dkim_vectors.rs`); the server's verifier asks DNS
//! ([`Verifier::new`]).
//!
//! mail-auth looks a record up in its TXT cache before it asks DNS, so the
//! table is handed to it as that cache, one that always answers. Our own
//! lookups (SPF, RFC 7489 DMARC, the key record's `s=`) read the same
//! table. Only TXT is known: every other query finds nothing, except that
//! mail-auth's DMARCbis discovery asks its resolver directly whether a
//! domain exists (np=), which an offline verifier cannot answer (no np).

use crate::spf::{Answer, ResolverDns, SpfDns};
use crate::{ResolverError, Verifier};
use mail_auth::common::cache::NoCache;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::resolver::ToFqdn;
use mail_auth::common::verify::DomainKey;
use mail_auth::dkim::{Atps, DomainKeyReport};
use mail_auth::dmarc::Dmarc;
use mail_auth::hickory_resolver::config::{ResolverConfig, ResolverOpts};
use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::{
    DnsError, Error, MX, MessageAuthenticator, Parameters, RecordSet, ResolverCache, Txt,
};
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// TXT records by name, each record's strings already joined (as a
/// resolver hands them over). Names compare without case or trailing dot.
#[derive(Clone, Default)]
pub struct TxtRecords {
    raw: HashMap<Box<str>, Vec<Vec<u8>>>,
    /// What mail-auth's lookup would make of each name's records.
    parsed: HashMap<Box<str>, Txt>,
}

impl TxtRecords {
    pub fn new() -> TxtRecords {
        TxtRecords::default()
    }

    /// Publish one more TXT record at `name`.
    pub fn insert(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        let key: Box<str> = name.to_fqdn().into();
        let records = self.raw.entry(key.clone()).or_default();
        records.push(value.into());
        let parsed = parse_as_named(&key, records);
        self.parsed.insert(key, parsed);
    }

    fn records(&self, name: &str) -> Option<&[Vec<u8>]> {
        self.raw.get(name.to_fqdn().as_ref()).map(Vec::as_slice)
    }
}

/// The record type a name holds by its shape (RFC 6376 §3.6.2.1, RFC 7489
/// §6.1, RFC 6541 for ATPS), parsed as mail-auth's `txt_lookup` does: the
/// first record that parses, else the last one's error.
fn parse_as_named(fqdn: &str, records: &[Vec<u8>]) -> Txt {
    fn first<T: TxtRecordParser + Into<Txt>>(records: &[Vec<u8>]) -> Txt {
        let mut result = Err(Error::Dns(DnsError::InvalidRecordType));
        for record in records {
            result = T::parse(record);
            if result.is_ok() {
                break;
            }
        }
        result.into()
    }
    if fqdn.starts_with("_dmarc.") {
        first::<Dmarc>(records)
    } else if fqdn.starts_with("_report._domainkey.") {
        first::<DomainKeyReport>(records)
    } else if fqdn.contains("._domainkey.") {
        first::<DomainKey>(records)
    } else if fqdn.contains("._atps.") {
        first::<Atps>(records)
    } else {
        Txt::Error(Error::Dns(DnsError::InvalidRecordType))
    }
}

fn nxdomain() -> Error {
    Error::Dns(DnsError::RecordNotFound(ResponseCode::NXDomain))
}

/// The TXT cache a verifier gives mail-auth: with a table it answers
/// every name (NXDOMAIN when absent), so mail-auth never asks DNS; without
/// one it holds nothing and keeps nothing, as if there were no cache.
#[derive(Clone, Default)]
pub(crate) struct Preloaded(Option<Arc<TxtRecords>>);

impl ResolverCache<Box<str>, Txt> for Preloaded {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let table = self.0.as_ref()?;
        Some(
            table
                .parsed
                .get(name)
                .cloned()
                .unwrap_or_else(|| Txt::Error(nxdomain())),
        )
    }

    fn remove<Q>(&self, _: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        None
    }

    fn insert(&self, _: Box<str>, _: Txt, _: std::time::Instant) {}
}

impl SpfDns for TxtRecords {
    async fn txt(&self, name: &str) -> Answer<Vec<Vec<u8>>> {
        self.records(name)
            .map_or(Answer::NotFound, |r| Answer::Found(r.to_vec()))
    }
    async fn a(&self, _: &str) -> Answer<Vec<Ipv4Addr>> {
        Answer::NotFound
    }
    async fn aaaa(&self, _: &str) -> Answer<Vec<Ipv6Addr>> {
        Answer::NotFound
    }
    async fn mx(&self, _: &str) -> Answer<Vec<String>> {
        Answer::NotFound
    }
    async fn ptr(&self, _: IpAddr) -> Answer<Vec<String>> {
        Answer::NotFound
    }
}

/// The DNS our own checks (SPF, RFC 7489 DMARC) use: the resolver, or the
/// offline table.
pub(crate) enum VerifierDns<'a> {
    Resolver(ResolverDns<'a>),
    Table(&'a TxtRecords),
}

impl SpfDns for VerifierDns<'_> {
    async fn txt(&self, name: &str) -> Answer<Vec<Vec<u8>>> {
        match self {
            VerifierDns::Resolver(d) => d.txt(name).await,
            VerifierDns::Table(t) => t.txt(name).await,
        }
    }
    async fn a(&self, name: &str) -> Answer<Vec<Ipv4Addr>> {
        match self {
            VerifierDns::Resolver(d) => d.a(name).await,
            VerifierDns::Table(t) => t.a(name).await,
        }
    }
    async fn aaaa(&self, name: &str) -> Answer<Vec<Ipv6Addr>> {
        match self {
            VerifierDns::Resolver(d) => d.aaaa(name).await,
            VerifierDns::Table(t) => t.aaaa(name).await,
        }
    }
    async fn mx(&self, name: &str) -> Answer<Vec<String>> {
        match self {
            VerifierDns::Resolver(d) => d.mx(name).await,
            VerifierDns::Table(t) => t.mx(name).await,
        }
    }
    async fn ptr(&self, ip: IpAddr) -> Answer<Vec<String>> {
        match self {
            VerifierDns::Resolver(d) => d.ptr(ip).await,
            VerifierDns::Table(t) => t.ptr(ip).await,
        }
    }
}

/// mail-auth's parameters with our TXT cache and no other.
pub(crate) type Lookups<'x, P> = Parameters<
    'x,
    P,
    Preloaded,
    NoCache<Box<str>, RecordSet<MX>>,
    NoCache<Box<str>, RecordSet<Ipv4Addr>>,
    NoCache<Box<str>, RecordSet<Ipv6Addr>>,
    NoCache<IpAddr, RecordSet<Box<str>>>,
>;

impl Verifier {
    /// A verifier whose DNS is `records` and nothing else.
    pub fn offline(authserv_id: &str, records: TxtRecords) -> Result<Verifier, ResolverError> {
        // A resolver with no name server: mail-auth insists on one, and
        // this one can send nothing anywhere.
        let auth = MessageAuthenticator::new(
            ResolverConfig::from_name_servers(Vec::new()),
            ResolverOpts::default(),
        )
        .map_err(|e| ResolverError(e.to_string()))?;
        let mut verifier = Verifier::from_authenticator(auth, authserv_id);
        verifier.offline = Preloaded(Some(Arc::new(records)));
        Ok(verifier)
    }

    /// What mail-auth needs to verify `params`, with the offline table.
    pub(crate) fn lookups<P>(&self, params: P) -> Lookups<'_, P> {
        Parameters::new(params).with_txt_cache(&self.offline)
    }

    pub(crate) fn dns(&self) -> VerifierDns<'_> {
        match &self.offline.0 {
            Some(table) => VerifierDns::Table(table),
            None => VerifierDns::Resolver(ResolverDns(self.auth.resolver())),
        }
    }

    /// All TXT records at `name` run together (mail-auth's raw lookup).
    pub(crate) async fn txt_raw(&self, name: &str) -> mail_auth::Result<Vec<u8>> {
        match &self.offline.0 {
            Some(table) => table.records(name).map(|r| r.concat()).ok_or_else(nxdomain),
            None => self.auth.txt_raw_lookup(name).await,
        }
    }
}
