//! What DNS says about a client and the names it uses, beyond SPF, DKIM
//! and DMARC: the reverse name (iprev, RFC 8601 §3), DNS block lists
//! (RFC 5782) and domain rating zones (the slides' `DOMAIN.rating.example
//! TXT "Rating: 100"`). Answers only; the server decides what they mean.

use crate::spf::{Answer, ResolverDns, SpfDns};
use crate::{AuthResult, Verifier};
use std::net::IpAddr;

/// Whether a DNS list has an entry, or could not be asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listing {
    Listed,
    NotListed,
    /// The list did not answer (timeout, SERVFAIL): treated as not listed
    /// by the caller, as every MTA does, so a list outage stops no mail.
    Unavailable,
}

impl Verifier {
    /// Reverse DNS of the client, forward-confirmed (RFC 8601 `iprev`):
    /// the PTR name only when one of its A/AAAA records is the address.
    pub async fn iprev(&self, ip: IpAddr) -> (AuthResult, Option<String>) {
        let out = self.auth.verify_iprev(ip).await;
        let result = match &out.result {
            mail_auth::IprevResult::Pass => AuthResult::Pass,
            mail_auth::IprevResult::Fail(_) => AuthResult::Fail,
            mail_auth::IprevResult::TempError(_) => AuthResult::TempError,
            mail_auth::IprevResult::PermError(_) => AuthResult::PermError,
            mail_auth::IprevResult::None => AuthResult::None,
        };
        let name = match result {
            AuthResult::Pass => out
                .ptr
                .as_ref()
                .and_then(|p| p.first())
                .map(|n| n.trim_end_matches('.').to_ascii_lowercase()),
            _ => None,
        };
        (result, name)
    }

    /// An A query under a DNS list zone (RFC 5782): any answer means listed.
    pub async fn dns_list(&self, name: &str) -> Listing {
        match self.auth.ipv4_lookup_raw(name).await {
            Ok(entry) if !entry.entry.is_empty() => Listing::Listed,
            Ok(_) => Listing::NotListed,
            Err(mail_auth::Error::Dns(mail_auth::DnsError::RecordNotFound(_))) => {
                Listing::NotListed
            }
            Err(_) => Listing::Unavailable,
        }
    }
}

/// A rating zone's answer for a domain: `Status: Good` and `Rating: 100`
/// lines in its TXT records (either may be absent).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DomainRating {
    pub status: Option<String>,
    pub rating: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RatingAnswer {
    Rated(DomainRating),
    /// The zone has nothing on the domain.
    Unrated,
    /// The zone did not answer: treated as unrated by the caller.
    Unavailable,
}

/// The `Status:` and `Rating:` of a rating zone's TXT records; None when
/// none of them says either.
pub fn parse_rating(records: &[Vec<u8>]) -> Option<DomainRating> {
    let mut out = DomainRating::default();
    for record in records {
        let text = String::from_utf8_lossy(record);
        let Some((key, value)) = text.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim().to_ascii_lowercase().as_str() {
            "status" if !value.is_empty() => out.status = Some(value.to_owned()),
            "rating" => out.rating = value.parse().ok().or(out.rating),
            _ => {}
        }
    }
    (out.status.is_some() || out.rating.is_some()).then_some(out)
}

impl Verifier {
    /// The TXT records at `DOMAIN.ZONE` of a rating zone.
    pub async fn domain_rating(&self, domain: &str, zone: &str) -> RatingAnswer {
        let name = format!(
            "{}.{}",
            domain.trim_end_matches('.'),
            zone.trim_end_matches('.')
        );
        match ResolverDns(self.auth.resolver()).txt(&name).await {
            Answer::Found(records) => {
                parse_rating(&records).map_or(RatingAnswer::Unrated, RatingAnswer::Rated)
            }
            Answer::NotFound => RatingAnswer::Unrated,
            Answer::Error(_) => RatingAnswer::Unavailable,
        }
    }
}

/// The query name for `ip` in an address list (RFC 5782 §2.1, §2.4):
/// reversed octets for IPv4, reversed nibbles for IPv6.
pub fn dnsbl_query(ip: IpAddr, zone: &str) -> String {
    let zone = zone.trim_end_matches('.');
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.{zone}.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(64 + zone.len());
            for byte in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            format!("{s}{zone}.")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5782_query_names() {
        assert_eq!(
            dnsbl_query("192.0.2.99".parse().unwrap(), "bl.test"),
            "99.2.0.192.bl.test."
        );
        assert_eq!(
            dnsbl_query("2001:db8:1:2:3:4:567:89ab".parse().unwrap(), "bl.test."),
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.test."
        );
    }

    #[test]
    fn rating_records_say_status_and_rating() {
        let records = vec![b"Status: Good".to_vec(), b"Rating: 100".to_vec()];
        assert_eq!(
            parse_rating(&records),
            Some(DomainRating {
                status: Some("Good".into()),
                rating: Some(100)
            })
        );
        assert_eq!(parse_rating(&[b"v=spf1 -all".to_vec()]), None);
    }
}
