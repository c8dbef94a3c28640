//! A certificate's validity period, read from its DER (RFC 5280 §4.1):
//! the schedule needs notBefore and notAfter and nothing else, so a small
//! reader over yasna (already in the tree through rcgen) does instead of
//! a full X.509 parser.

use std::time::{Duration, SystemTime};

/// When a certificate starts and stops being valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// The validity of the DER certificate `der`, or None when it is not a
/// certificate this reader understands.
pub fn validity(der: &[u8]) -> Option<Validity> {
    let (nb, na) = yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            let times = r.next().read_sequence(|r| {
                // version [0] EXPLICIT (absent in v1), serialNumber,
                // signature, issuer, then validity.
                r.read_optional(|r| r.read_tagged(yasna::Tag::context(0), |r| r.read_u8()))?;
                r.next().read_der()?;
                r.next().read_der()?;
                r.next().read_der()?;
                let times = r
                    .next()
                    .read_sequence(|r| Ok((time(r.next())?, time(r.next())?)))?;
                // subject, subjectPublicKeyInfo, optional fields: not needed.
                while r.read_optional(|r| r.read_der())?.is_some() {}
                Ok(times)
            })?;
            r.next().read_der()?;
            r.next().read_der()?;
            Ok(times)
        })
    })
    .ok()?;
    Some(Validity {
        not_before: to_system_time(nb)?,
        not_after: to_system_time(na)?,
    })
}

/// UTCTime or GeneralizedTime (RFC 5280 §4.1.2.5), as Unix seconds.
fn time(r: yasna::BERReader<'_, '_>) -> yasna::ASN1Result<i64> {
    let der = r.read_der()?;
    match der.first() {
        Some(0x17) => {
            yasna::parse_der(&der, |r| r.read_utctime()).map(|u| u.datetime().unix_timestamp())
        }
        _ => yasna::parse_der(&der, |r| r.read_generalized_time())
            .map(|g| g.datetime().unix_timestamp()),
    }
}

fn to_system_time(secs: i64) -> Option<SystemTime> {
    let secs = u64::try_from(secs).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_validity_is_read_from_a_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["mx.example.test".into()]).unwrap();
        p.not_before = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        // After 2050: GeneralizedTime rather than UTCTime (RFC 5280 §4.1.2.5).
        p.not_after = time::OffsetDateTime::from_unix_timestamp(2_600_000_000).unwrap();
        let cert = p.self_signed(&key).unwrap();
        let v = validity(cert.der()).unwrap();
        assert_eq!(v.not_before, to_system_time(1_700_000_000).unwrap());
        assert_eq!(v.not_after, to_system_time(2_600_000_000).unwrap());
    }

    #[test]
    fn what_is_not_a_certificate_has_no_validity() {
        assert_eq!(validity(b""), None);
        assert_eq!(validity(b"\x30\x03\x02\x01\x01"), None);
        assert_eq!(validity(&[0x30, 0x82, 0xff, 0xff, 0x30]), None);
    }
}
