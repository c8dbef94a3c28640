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

use crate::client::{CertificateCheck, subject_public_key_info};
use portcullis_dns::hickory_resolver::proto::op::{Edns, Message, MessageType, OpCode, Query};
use portcullis_dns::hickory_resolver::proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};
use portcullis_dns::hickory_resolver::proto::rr::{Name, RData, RecordType};
use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::net::SocketAddr;
use std::sync::Arc;
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
#[derive(Debug, PartialEq, Eq)]
pub enum TlsaAnswer {
    /// Authentic, usable records: TLS is mandatory, they decide the certificate.
    Usable(Vec<Tlsa>),
    /// None, none usable, or not validated: DANE does not apply.
    Insecure,
    /// The validating resolver failed the lookup (a bogus signature
    /// answers SERVFAIL): this host must not be used now (§2.2).
    Failed(String),
}

/// Ask the validating resolver at `resolver` for `_25._tcp.HOST` TLSA.
pub async fn lookup(resolver: SocketAddr, host: &str, timeout: Duration) -> TlsaAnswer {
    match tokio::time::timeout(timeout, query(resolver, host)).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => TlsaAnswer::Failed(e),
        Err(_) => TlsaAnswer::Failed(format!("the TLSA lookup of {host} timed out")),
    }
}

async fn query(resolver: SocketAddr, host: &str) -> Result<TlsaAnswer, String> {
    let name = Name::from_ascii(format!("_25._tcp.{}.", host.trim_end_matches('.')))
        .map_err(|e| e.to_string())?;
    let id: u16 = rand_id();
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    // RFC 6840 §5.7: ask for the AD bit; DO so the resolver validates.
    msg.metadata.authentic_data = true;
    let mut edns = Edns::new();
    edns.set_dnssec_ok(true);
    edns.set_max_payload(1232);
    msg.set_edns(edns);
    msg.add_query(Query::query(name, RecordType::TLSA));
    let bytes = msg.to_vec().map_err(|e| e.to_string())?;
    let bind: SocketAddr = if resolver.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    }
    .parse()
    .map_err(|_| "no local address".to_owned())?;
    let sock = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| e.to_string())?;
    sock.send_to(&bytes, resolver)
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = sock.recv_from(&mut buf).await.map_err(|e| e.to_string())?;
        let Ok(reply) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if from != resolver || reply.metadata.id != id {
            continue;
        }
        return Ok(interpret(&reply, host));
    }
}

/// The resolver's answer, as RFC 7672 §2.2 reads it.
fn interpret(reply: &Message, host: &str) -> TlsaAnswer {
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

fn rand_id() -> u16 {
    let mut b = [0u8; 2];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u16::from_be_bytes(b)
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
        assert_eq!(interpret(&reply, "mx.example.test"), TlsaAnswer::Insecure);
        reply.metadata.response_code =
            portcullis_dns::hickory_resolver::proto::op::ResponseCode::ServFail;
        assert!(matches!(
            interpret(&reply, "mx.example.test"),
            TlsaAnswer::Failed(_)
        ));
    }
}
