//! DANE for SMTP (RFC 7672) at the edge. An MX host's TLSA records
//! (`_25._tcp.HOST`) are believed only when a DNSSEC-validating resolver
//! on loopback says they are authentic (the AD bit, `[dns] trust_ad`, as
//! Postfix does); usable records make TLS mandatory for that host, with a
//! certificate verifier that accepts what they name:
//!
//! * DANE-EE (3): the end-entity certificate (or its public key) itself;
//!   no name or expiry check (§3.1.1).
//! * DANE-TA (2): a certificate in the presented chain that then anchors
//!   a PKIX path to the end entity, whose name must be the MX host (§3.1.2).
//!
//! PKIX usages (0, 1) are unusable for SMTP (§3.1.3) and ignored.
//!
//! Only hosts named by a validated MX RRset have their TLSA records looked
//! up (§2.2): an unsigned MX answer may be forged to name an attacker's
//! host, whose own zone can publish authentic TLSA records. Answers are
//! reused for their TTL ([`TlsaCache`]), not asked on every attempt.

use crate::BoxFuture;
use crate::client::{CertificateCheck, subject_public_key_info};
use crate::validating::{self, AskError};
use portcullis_config::clock::now_secs;
use portcullis_dns::hickory_resolver::proto::op::Message;
use portcullis_dns::hickory_resolver::proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};
use portcullis_dns::hickory_resolver::proto::rr::{RData, RecordType};
use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One usable TLSA record (usage 2 or 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tlsa {
    pub trust_anchor: bool,
    pub spki: bool,
    pub matching: Matching,
    pub data: Vec<u8>,
}

/// What DNS says about an MX host's TLSA records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsaAnswer {
    /// Authentic, usable records: TLS is mandatory, they decide the certificate.
    Usable(Vec<Tlsa>),
    /// None, none usable, or not validated: DANE does not apply.
    Insecure,
    /// The validating resolver failed the lookup (a bogus signature
    /// answers SERVFAIL): this host must not be used now (§2.2).
    Failed(String),
}

/// A positive answer is reused for its records' TTL, at most a day.
const MAX_TTL: u64 = 86_400;
/// An insecure or negative answer for at most five minutes, so a host
/// that just published TLSA records (or a zone just signed) is not
/// ignored for long; RFC 2308 §5 bounds it by the SOA too.
const MAX_NEGATIVE_TTL: u64 = 300;
/// MX hosts whose answers are kept at once: a bound on memory, far more
/// than the hosts a queue retries within a TTL.
const CACHE_HOSTS: usize = 4096;

/// Ask the validating resolver at `resolver` for `_25._tcp.HOST` TLSA:
/// the answer, and how many seconds it may be reused (0: not at all).
pub async fn lookup(resolver: SocketAddr, host: &str, timeout: Duration) -> (TlsaAnswer, u64) {
    let name = format!("_25._tcp.{}", host.trim_end_matches('.'));
    match validating::ask(resolver, &name, RecordType::TLSA, timeout).await {
        Ok(reply) => interpret(&reply, host),
        Err(AskError::Timeout) => (
            TlsaAnswer::Failed(format!("the TLSA lookup of {host} timed out")),
            0,
        ),
        Err(e) => (
            TlsaAnswer::Failed(format!("the TLSA lookup of {host} failed: {e}")),
            0,
        ),
    }
}

/// Where the router gets an MX host's TLSA answer (tests answer from a
/// table).
pub trait TlsaSource: Send + Sync {
    fn tlsa<'a>(&'a self, host: &'a str) -> BoxFuture<'a, TlsaAnswer>;
}

/// TLSA from the `[dns] trust_ad` resolver, each answer reused for its
/// TTL rather than asked again on every delivery attempt.
pub struct DnsTlsa {
    resolver: SocketAddr,
    timeout: Duration,
    cache: Mutex<TlsaCache>,
}

impl DnsTlsa {
    pub fn new(resolver: SocketAddr, timeout: Duration) -> DnsTlsa {
        DnsTlsa {
            resolver,
            timeout,
            cache: Mutex::new(TlsaCache::new(CACHE_HOSTS)),
        }
    }

    async fn answer(&self, host: &str) -> TlsaAnswer {
        let cached = self.cache.lock().ok().and_then(|c| c.get(host, now_secs()));
        if let Some(answer) = cached {
            return answer;
        }
        let (answer, ttl) = lookup(self.resolver, host, self.timeout).await;
        if let Ok(mut c) = self.cache.lock() {
            c.put(host, answer.clone(), ttl, now_secs());
        }
        answer
    }
}

impl TlsaSource for DnsTlsa {
    fn tlsa<'a>(&'a self, host: &'a str) -> BoxFuture<'a, TlsaAnswer> {
        Box::pin(self.answer(host))
    }
}

/// TLSA answers by MX host, each until it expires; `now` is Unix seconds.
#[derive(Debug)]
pub struct TlsaCache {
    entries: HashMap<String, (u64, TlsaAnswer)>,
    capacity: usize,
}

impl TlsaCache {
    pub fn new(capacity: usize) -> TlsaCache {
        TlsaCache {
            entries: HashMap::new(),
            capacity,
        }
    }

    /// The answer for `host`, if one is kept and has not expired.
    pub fn get(&self, host: &str, now: u64) -> Option<TlsaAnswer> {
        self.entries
            .get(&cache_key(host))
            .filter(|(expires, _)| now < *expires)
            .map(|(_, answer)| answer.clone())
    }

    /// Keep `answer` for `ttl` seconds from `now` (0: not at all). When
    /// full, expired answers go first, then the one expiring soonest.
    pub fn put(&mut self, host: &str, answer: TlsaAnswer, ttl: u64, now: u64) {
        if ttl == 0 || self.capacity == 0 {
            return;
        }
        let key = cache_key(host);
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.entries.retain(|_, (expires, _)| now < *expires);
        }
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            let soonest = self
                .entries
                .iter()
                .min_by_key(|(_, (expires, _))| *expires)
                .map(|(k, _)| k.clone());
            if let Some(k) = soonest {
                self.entries.remove(&k);
            }
        }
        self.entries.insert(key, (now.saturating_add(ttl), answer));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// DNS names are case-insensitive; the root dot is optional.
fn cache_key(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// How long `answer` may be reused: the smallest TTL in the answer
/// section (the TLSA records, their RRSIGs and any CNAME on the way), or
/// without records the SOA's negative TTL (RFC 2308 §5: the smaller of
/// its TTL and MINIMUM); bounded. A failure is not kept: the next
/// attempt asks again (the resolver remembers a bogus answer itself).
fn reuse_secs(reply: &Message, answer: &TlsaAnswer) -> u64 {
    let records = reply.answers.iter().map(|r| u64::from(r.ttl)).min();
    let negative = reply
        .authorities
        .iter()
        .filter_map(|r| match &r.data {
            RData::SOA(soa) => Some(u64::from(r.ttl.min(soa.minimum))),
            _ => None,
        })
        .min();
    match answer {
        TlsaAnswer::Usable(_) => records.unwrap_or(0).min(MAX_TTL),
        TlsaAnswer::Insecure => records
            .or(negative)
            .unwrap_or(MAX_NEGATIVE_TTL)
            .min(MAX_NEGATIVE_TTL),
        TlsaAnswer::Failed(_) => 0,
    }
}

/// The resolver's answer, as RFC 7672 §2.2 reads it, and how long it
/// may be reused.
fn interpret(reply: &Message, host: &str) -> (TlsaAnswer, u64) {
    let answer = classify(reply, host);
    let ttl = reuse_secs(reply, &answer);
    (answer, ttl)
}

fn classify(reply: &Message, host: &str) -> TlsaAnswer {
    use portcullis_dns::hickory_resolver::proto::op::ResponseCode;
    match reply.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => {}
        code => return TlsaAnswer::Failed(format!("the TLSA lookup of {host} failed: {code}")),
    }
    if !reply.metadata.authentic_data {
        return TlsaAnswer::Insecure;
    }
    let usable: Vec<Tlsa> = reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TLSA(t) => usable(t.cert_usage, t.selector, t.matching, &t.cert_data),
            _ => None,
        })
        .collect();
    if usable.is_empty() {
        TlsaAnswer::Insecure
    } else {
        TlsaAnswer::Usable(usable)
    }
}

fn usable(usage: CertUsage, selector: Selector, matching: Matching, data: &[u8]) -> Option<Tlsa> {
    let trust_anchor = match usage {
        CertUsage::DaneTa => true,
        CertUsage::DaneEe => false,
        _ => return None,
    };
    let spki = match selector {
        Selector::Full => false,
        Selector::Spki => true,
        _ => return None,
    };
    match matching {
        Matching::Raw | Matching::Sha256 | Matching::Sha512 => {}
        _ => return None,
    }
    Some(Tlsa {
        trust_anchor,
        spki,
        matching,
        data: data.to_vec(),
    })
}

impl std::fmt::Display for Tlsa {
    /// Presentation format, `3 1 1 <hex>` (TLS-RPT's policy-string).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let matching = match self.matching {
            Matching::Raw => 0,
            Matching::Sha256 => 1,
            _ => 2,
        };
        let hex: String = self.data.iter().map(|b| format!("{b:02x}")).collect();
        let usage = if self.trust_anchor { 2 } else { 3 };
        write!(f, "{usage} {} {matching} {hex}", u8::from(self.spki))
    }
}

impl Tlsa {
    /// Whether this record names `cert`.
    pub fn matches(&self, cert: &[u8]) -> bool {
        let selected = if self.spki {
            match subject_public_key_info(cert) {
                Some(s) => s,
                None => return false,
            }
        } else {
            cert
        };
        match self.matching {
            Matching::Raw => selected == self.data.as_slice(),
            Matching::Sha256 => {
                ring::digest::digest(&ring::digest::SHA256, selected).as_ref() == self.data
            }
            Matching::Sha512 => {
                ring::digest::digest(&ring::digest::SHA512, selected).as_ref() == self.data
            }
            _ => false,
        }
    }
}

/// A connector whose certificate check is the host's TLSA records.
pub fn connector(records: Vec<Tlsa>) -> Result<tokio_rustls::TlsConnector, rustls::Error> {
    crate::client::checked_tls(DaneRecords(records))
}

#[derive(Debug)]
struct DaneRecords(Vec<Tlsa>);

impl DaneRecords {
    /// DANE-TA: a chain certificate the records name anchors a PKIX path
    /// to the end entity, for the MX host's name.
    fn by_trust_anchor(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
        provider: &Arc<rustls::crypto::CryptoProvider>,
    ) -> bool {
        let anchors = intermediates
            .iter()
            .filter(|c| self.0.iter().any(|r| r.trust_anchor && r.matches(c)));
        anchors.into_iter().any(|anchor| {
            let mut roots = rustls::RootCertStore::empty();
            if roots.add(anchor.clone().into_owned()).is_err() {
                return false;
            }
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .is_ok_and(|v| {
                v.verify_server_cert(end_entity, intermediates, server_name, &[], now)
                    .is_ok()
            })
        })
    }
}

impl CertificateCheck for DaneRecords {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
        provider: &Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<(), rustls::Error> {
        let by_ee = self
            .0
            .iter()
            .any(|r| !r.trust_anchor && r.matches(end_entity));
        if by_ee || self.by_trust_anchor(end_entity, intermediates, server_name, now, provider) {
            return Ok(());
        }
        Err(rustls::Error::General(
            "no TLSA record of the MX host matches its certificate (DANE)".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_dns::hickory_resolver::proto::op::{MessageType, OpCode, ResponseCode};
    use portcullis_dns::hickory_resolver::proto::rr::rdata::{SOA, TLSA};
    use portcullis_dns::hickory_resolver::proto::rr::{Name, Record};

    fn cert() -> (rcgen::KeyPair, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["mx.example.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (key, cert.der().to_vec())
    }

    fn ee(spki: bool, matching: Matching, data: Vec<u8>) -> Tlsa {
        Tlsa {
            trust_anchor: false,
            spki,
            matching,
            data,
        }
    }

    #[test]
    fn dane_ee_3_1_1_matches_the_public_key() {
        let (key, der) = cert();
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            &rcgen::PublicKeyData::subject_public_key_info(&key),
        );
        assert!(ee(true, Matching::Sha256, digest.as_ref().to_vec()).matches(&der));
        assert!(!ee(true, Matching::Sha256, vec![0; 32]).matches(&der));
    }

    #[test]
    fn dane_ee_3_0_0_matches_the_whole_certificate() {
        let (_, der) = cert();
        assert!(ee(false, Matching::Raw, der.clone()).matches(&der));
        let (_, other) = cert();
        assert!(!ee(false, Matching::Raw, der).matches(&other));
    }

    #[test]
    fn pkix_usages_are_not_usable_for_smtp() {
        assert_eq!(
            usable(CertUsage::PkixEe, Selector::Spki, Matching::Sha256, &[1]),
            None
        );
        assert_eq!(
            usable(CertUsage::PkixTa, Selector::Spki, Matching::Sha256, &[1]),
            None
        );
        assert!(usable(CertUsage::DaneTa, Selector::Full, Matching::Sha512, &[1]).is_some());
    }

    #[test]
    fn an_answer_without_the_ad_bit_is_insecure() {
        let mut reply = Message::new(1, MessageType::Response, OpCode::Query);
        reply.metadata.authentic_data = false;
        assert_eq!(interpret(&reply, "mx.example.test").0, TlsaAnswer::Insecure);
        reply.metadata.response_code = ResponseCode::ServFail;
        assert!(matches!(
            interpret(&reply, "mx.example.test"),
            (TlsaAnswer::Failed(_), 0)
        ));
    }

    fn tlsa_reply(ttl: u32) -> Message {
        let mut reply = Message::new(1, MessageType::Response, OpCode::Query);
        reply.metadata.authentic_data = true;
        let name = Name::from_ascii("_25._tcp.mx.example.test.").unwrap();
        let tlsa = TLSA::new(
            CertUsage::DaneEe,
            Selector::Spki,
            Matching::Sha256,
            vec![7; 32],
        );
        reply.add_answer(Record::from_rdata(name, ttl, RData::TLSA(tlsa)));
        reply
    }

    fn negative_reply(soa_ttl: u32, minimum: u32) -> Message {
        let mut reply = Message::new(1, MessageType::Response, OpCode::Query);
        reply.metadata.authentic_data = true;
        reply.metadata.response_code = ResponseCode::NXDomain;
        let zone = Name::from_ascii("example.test.").unwrap();
        let soa = SOA::new(zone.clone(), zone.clone(), 1, 3600, 600, 86400, minimum);
        reply.add_authority(Record::from_rdata(zone, soa_ttl, RData::SOA(soa)));
        reply
    }

    #[test]
    fn authentic_records_are_reused_for_their_ttl_at_most_a_day() {
        let (answer, ttl) = interpret(&tlsa_reply(3600), "mx.example.test");
        assert!(matches!(answer, TlsaAnswer::Usable(_)));
        assert_eq!(ttl, 3600);
        assert_eq!(
            interpret(&tlsa_reply(u32::MAX), "mx.example.test").1,
            MAX_TTL
        );
    }

    #[test]
    fn a_negative_answer_is_reused_for_the_soa_minimum_at_most_five_minutes() {
        let (answer, ttl) = interpret(&negative_reply(3600, 60), "mx.example.test");
        assert_eq!((answer, ttl), (TlsaAnswer::Insecure, 60));
        assert_eq!(
            interpret(&negative_reply(86400, 86400), "mx.example.test").1,
            MAX_NEGATIVE_TTL
        );
        // Unsigned records: insecure, and not believed for long either.
        let mut unsigned = tlsa_reply(86400);
        unsigned.metadata.authentic_data = false;
        assert_eq!(
            interpret(&unsigned, "mx.example.test"),
            (TlsaAnswer::Insecure, MAX_NEGATIVE_TTL)
        );
    }

    fn usable_answer() -> TlsaAnswer {
        TlsaAnswer::Usable(vec![ee(true, Matching::Sha256, vec![7; 32])])
    }

    #[test]
    fn a_cached_answer_holds_until_its_ttl_runs_out() {
        let mut cache = TlsaCache::new(8);
        cache.put("MX.Example.test.", usable_answer(), 60, 1000);
        assert_eq!(cache.get("mx.example.test", 1000), Some(usable_answer()));
        assert_eq!(cache.get("mx.example.test", 1059), Some(usable_answer()));
        assert_eq!(cache.get("mx.example.test", 1060), None);
    }

    #[test]
    fn insecure_answers_are_cached_and_failures_are_not() {
        let mut cache = TlsaCache::new(8);
        cache.put("plain.example.test", TlsaAnswer::Insecure, 300, 1000);
        cache.put(
            "bogus.example.test",
            TlsaAnswer::Failed("SERVFAIL".into()),
            0,
            1000,
        );
        assert_eq!(
            cache.get("plain.example.test", 1200),
            Some(TlsaAnswer::Insecure)
        );
        assert_eq!(cache.get("bogus.example.test", 1000), None);
    }

    /// A validating resolver on loopback answering every TLSA question
    /// with `reply`; counts the questions.
    async fn counting_resolver(reply: Message) -> (SocketAddr, Arc<Mutex<usize>>) {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let asked = Arc::new(Mutex::new(0));
        let count = asked.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let q = Message::from_vec(&buf[..n]).unwrap();
                *count.lock().unwrap() += 1;
                let mut answer = reply.clone();
                answer.metadata.id = q.metadata.id;
                sock.send_to(&answer.to_vec().unwrap(), from).await.unwrap();
            }
        });
        (addr, asked)
    }

    #[tokio::test]
    async fn a_second_attempt_within_the_ttl_asks_no_one() {
        let (resolver, asked) = counting_resolver(tlsa_reply(3600)).await;
        let tlsa = DnsTlsa::new(resolver, Duration::from_secs(5));
        for _ in 0..2 {
            let answer = tlsa.tlsa("mx.example.test").await;
            assert!(matches!(answer, TlsaAnswer::Usable(_)), "{answer:?}");
        }
        assert_eq!(*asked.lock().unwrap(), 1);
    }

    #[test]
    fn a_full_cache_drops_expired_answers_then_the_soonest_to_expire() {
        let mut cache = TlsaCache::new(2);
        cache.put("a.test", TlsaAnswer::Insecure, 10, 1000);
        cache.put("b.test", TlsaAnswer::Insecure, 100, 1000);
        // a.test has expired by 1050: it makes room.
        cache.put("c.test", TlsaAnswer::Insecure, 100, 1050);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("b.test", 1050), Some(TlsaAnswer::Insecure));
        // Nothing expired: b.test (until 1100) goes before c.test (1150).
        cache.put("d.test", usable_answer(), 100, 1060);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("b.test", 1060), None);
        assert_eq!(cache.get("c.test", 1060), Some(TlsaAnswer::Insecure));
        assert_eq!(cache.get("d.test", 1060), Some(usable_answer()));
    }
}
