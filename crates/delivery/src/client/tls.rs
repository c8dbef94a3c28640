//! The client's TLS: opportunistic (any certificate, RFC 7435), pinned
//! (exactly one certificate), or verified against the system CAs.

use std::sync::Arc;

/// TLS for opportunistic STARTTLS: encryption without authentication
/// (RFC 7435). Certificates are not checked; MTA-STS/DANE would be the way
/// to check them, and are not implemented yet.
pub fn opportunistic_tls() -> Result<tokio_rustls::TlsConnector, rustls::Error> {
    custom_tls(None)
}

/// TLS that accepts exactly one certificate: the one whose DER encoding
/// has this SHA-256 (an operator pinning a self-signed certificate).
/// A certificate pin: the SHA-256 of the certificate (DER) as 64 hex
/// digits, colons allowed (as `openssl x509 -fingerprint -sha256` prints).
pub fn parse_pin(text: &str) -> Result<[u8; 32], String> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err("a pin is 64 hex digits (colons allowed)".into());
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

pub fn pinned_tls(sha256: [u8; 32]) -> Result<tokio_rustls::TlsConnector, rustls::Error> {
    custom_tls(Some(sha256))
}

fn custom_tls(pin: Option<[u8; 32]>) -> Result<tokio_rustls::TlsConnector, rustls::Error> {
    checked_tls(Pin(pin))
}

/// What a connector of ours accepts as the server's certificate. The
/// handshake's signatures are verified the same way whatever the check
/// (see [`Checked`]).
pub(crate) trait CertificateCheck: std::fmt::Debug + Send + Sync {
    fn check(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        now: rustls::pki_types::UnixTime,
        provider: &Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<(), rustls::Error>;
}

/// A connector whose certificate decision is `check` (opportunistic,
/// pinned, DANE).
pub(crate) fn checked_tls(
    check: impl CertificateCheck + 'static,
) -> Result<tokio_rustls::TlsConnector, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Checked {
        provider: provider.clone(),
        check,
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// TLS that verifies the server's certificate and name against the
/// system's CAs (`/etc/ssl/certs/ca-certificates.crt`) and any extra CA
/// files given.
pub fn verified_tls(
    extra_cas: &[std::path::PathBuf],
) -> Result<tokio_rustls::TlsConnector, String> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    let system = std::path::Path::new("/etc/ssl/certs/ca-certificates.crt");
    let files = system
        .exists()
        .then(|| system.to_path_buf())
        .into_iter()
        .chain(extra_cas.iter().cloned());
    for file in files {
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(&file)
            .map_err(|e| format!("{}: {e}", file.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("{}: {e}", file.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", file.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The DANE-EE `3 1 1` association of a certificate (RFC 7671 §5.1,
/// RFC 6698 §2.1): the SHA-256 of its SubjectPublicKeyInfo, in hex; None
/// when the DER does not hold a certificate.
pub fn tlsa_spki_sha256(cert_der: &[u8]) -> Option<String> {
    let spki = subject_public_key_info(cert_der)?;
    let digest = ring::digest::digest(&ring::digest::SHA256, spki);
    Some(digest.as_ref().iter().map(|b| format!("{b:02x}")).collect())
}

/// Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version
/// OPTIONAL, serial, signature, issuer, validity, subject,
/// subjectPublicKeyInfo, ... }, ... } (RFC 5280 §4.1): the whole SPKI
/// element, tag and length included.
pub(crate) fn subject_public_key_info(der: &[u8]) -> Option<&[u8]> {
    let (cert, _) = der_element(der, 0x30)?;
    let (mut tbs, _) = der_element(content(cert)?, 0x30)?;
    tbs = content(tbs)?;
    if tbs.first() == Some(&0xa0) {
        tbs = der_element(tbs, 0xa0)?.1;
    }
    for tag in [0x02, 0x30, 0x30, 0x30, 0x30] {
        tbs = der_element(tbs, tag)?.1;
    }
    Some(der_element(tbs, 0x30)?.0)
}

/// The first DER element of `input` if it has `tag`: (the element, the rest).
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *input.first()? != tag {
        return None;
    }
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len = input
            .get(2..2 + n)?
            .iter()
            .fold(0usize, |l, b| (l << 8) | usize::from(*b));
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some((input.get(..end)?, input.get(end..)?))
}

/// The content of one DER element (after its tag and length).
fn content(element: &[u8]) -> Option<&[u8]> {
    let first = *element.get(1)?;
    let header = if first < 0x80 {
        2
    } else {
        2 + usize::from(first & 0x7f)
    };
    element.get(header..)
}

/// Any certificate (opportunistic TLS between MTAs, RFC 7435), or
/// exactly a pinned one.
#[derive(Debug)]
struct Pin(Option<[u8; 32]>);

impl CertificateCheck for Pin {
    fn check(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _now: rustls::pki_types::UnixTime,
        _provider: &Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<(), rustls::Error> {
        match self.0 {
            Some(pin)
                if ring::digest::digest(&ring::digest::SHA256, end_entity).as_ref() != pin =>
            {
                Err(rustls::Error::General(
                    "the certificate is not the pinned one (SHA-256 differs)".into(),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// A certificate check, and the provider's signature verification.
#[derive(Debug)]
struct Checked<C> {
    provider: Arc<rustls::crypto::CryptoProvider>,
    check: C,
}

impl<C: CertificateCheck> rustls::client::danger::ServerCertVerifier for Checked<C> {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.check
            .check(end_entity, intermediates, server_name, now, &self.provider)
            .map(|()| rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tlsa_association_is_the_sha256_of_the_public_key_info() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["mx.example.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let want: String = ring::digest::digest(
            &ring::digest::SHA256,
            &rcgen::PublicKeyData::subject_public_key_info(&key),
        )
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
        assert_eq!(tlsa_spki_sha256(cert.der()).as_deref(), Some(want.as_str()));
    }

    #[test]
    fn garbage_is_no_certificate() {
        assert_eq!(tlsa_spki_sha256(b"\x30\x82\xff"), None);
        assert_eq!(tlsa_spki_sha256(b""), None);
    }
}
