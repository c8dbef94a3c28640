//! One issuance (RFC 8555 §7.4): the account (§7.3), an order for the
//! names, each authorization answered with TLS-ALPN-01 (RFC 8737), the
//! CSR (§7.4 finalize, with a fresh key), the certificate chain.
//!
//! TLS-ALPN-01 rather than HTTP-01: the CA validates on port 443, where
//! the MTA-STS policy host (`[http] mta_sts_bind`) already listens with
//! our certificate; HTTP-01 would need a listener on port 80 that a mail
//! server has no other use for. DNS-01 would need write access to the
//! zone.

use crate::AcmeError;
use crate::challenges::Challenges;
use crate::store::{Issued, Store};
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, Key, NewOrder, OrderStatus,
    RetryPolicy,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The CA and what to ask it for (`[acme]`).
#[derive(Clone, Debug)]
pub struct Issuer {
    /// The directory URL (RFC 8555 §7.1.1).
    pub directory: String,
    /// `mailto:` URLs for the CA's notices (§7.3).
    pub contact: Vec<String>,
    /// A CA file trusted for the ACME server's own HTTPS (a private CA,
    /// a test CA); None: the system's roots.
    pub directory_ca: Option<PathBuf>,
    /// The names on the certificate, the first one its subject.
    pub domains: Vec<String>,
}

/// How long the CA may take to validate, then to issue: it validates
/// each name by connecting to us, which takes seconds, not minutes.
const ORDER_WAIT: Duration = Duration::from_secs(90);

/// Obtain a certificate for `issuer.domains`, answering the challenges
/// through `challenges` (which the HTTPS listener serves) meanwhile.
pub async fn obtain(
    issuer: &Issuer,
    store: &Store,
    challenges: &Challenges,
) -> Result<Issued, AcmeError> {
    let account = account(issuer, store).await?;
    let ids: Vec<Identifier> = issuer
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let mut order = account.new_order(&NewOrder::new(&ids)).await?;
    let mut published = Vec::new();
    let outcome = async {
        answer(&mut order, challenges, &mut published).await?;
        let retry = RetryPolicy::new().timeout(ORDER_WAIT);
        let status = order.poll_ready(&retry).await?;
        if status != OrderStatus::Ready {
            return Err(AcmeError::Order {
                names: issuer.domains.join(", "),
                status: format!("{status:?} before finalizing"),
            });
        }
        // The key of the certificate it replaces, when there is one: a
        // DANE-EE 3 1 1 record (RFC 7671 §8.1) names the key, and would
        // break at every renewal if the key changed with the certificate.
        let key = certificate_key(store)?;
        let mut params = rcgen::CertificateParams::new(issuer.domains.clone())
            .map_err(|e| AcmeError::Key(e.to_string()))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params
            .serialize_request(&key)
            .map_err(|e| AcmeError::Key(e.to_string()))?;
        order.finalize_csr(csr.der()).await?;
        let key_pem = key.serialize_pem();
        let chain_pem = order.poll_certificate(&retry).await?;
        Ok(Issued { chain_pem, key_pem })
    }
    .await;
    for name in &published {
        challenges.remove(name);
    }
    outcome
}

/// The key of the stored certificate, or a new one (ECDSA P-256) for a
/// first certificate or a stored key that does not load.
fn certificate_key(store: &Store) -> Result<rcgen::KeyPair, AcmeError> {
    if let Ok(Some(stored)) = store.load()
        && let Ok(key) = rcgen::KeyPair::from_pem(&stored.key_pem)
    {
        return Ok(key);
    }
    rcgen::KeyPair::generate().map_err(|e| AcmeError::Key(e.to_string()))
}

/// The account of the stored key. newAccount with an existing key
/// returns that account (§7.3.1); without one it makes it, which also
/// covers a CA that forgot us (a test CA restarted, an account
/// deactivated by mistake).
async fn account(issuer: &Issuer, store: &Store) -> Result<Account, AcmeError> {
    let builder = match &issuer.directory_ca {
        Some(ca) => Account::builder_with_root(ca)?,
        None => Account::builder()?,
    };
    let der: PrivatePkcs8KeyDer<'static> = store.account_key()?;
    let key = Key::from_pkcs8_der(der.clone_key())?;
    let (account, _) = builder
        .create_from_key((key, PrivateKeyDer::Pkcs8(der)), issuer.directory.clone())
        .await?;
    if !issuer.contact.is_empty() {
        // create_from_key sends no contact; §7.3.2 updates it.
        let contact: Vec<&str> = issuer.contact.iter().map(String::as_str).collect();
        account.update_contacts(&contact).await?;
    }
    Ok(account)
}

/// Publish a challenge certificate for each pending authorization and
/// tell the CA it may validate (§7.5.1). Names published are pushed to
/// `published`, for the caller to withdraw whatever happens.
async fn answer(
    order: &mut instant_acme::Order,
    challenges: &Challenges,
    published: &mut Vec<String>,
) -> Result<(), AcmeError> {
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => {
                return Err(AcmeError::Order {
                    names: authz.identifier().to_string(),
                    status: format!("{other:?} (authorization)"),
                });
            }
        }
        let name = authz.identifier().to_string();
        let mut challenge = authz
            .challenge(ChallengeType::TlsAlpn01)
            .ok_or_else(|| AcmeError::NoChallenge(name.clone()))?;
        let digest = challenge.key_authorization().digest();
        challenges.put(&name, challenge_cert(&name, digest.as_ref())?);
        published.push(name);
        challenge.set_ready().await?;
    }
    Ok(())
}

/// The certificate that answers TLS-ALPN-01 for `name` (RFC 8737 §3):
/// self-signed, the name its only SAN, the SHA-256 of the key
/// authorization in a critical acmeIdentifier extension.
fn challenge_cert(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, AcmeError> {
    let bad = |e: &dyn std::fmt::Display| AcmeError::Key(e.to_string());
    if digest.len() != 32 {
        return Err(AcmeError::Key(
            "the key authorization digest is not SHA-256".into(),
        ));
    }
    let key = rcgen::KeyPair::generate().map_err(|e| bad(&e))?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(|e| bad(&e))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(|e| bad(&e))?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signer = rustls::crypto::ring::sign::any_supported_type(&key_der).map_err(|e| bad(&e))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_certificate_names_the_domain_and_carries_the_digest() {
        let digest = [7u8; 32];
        let ck = challenge_cert("mx.example.test", &digest).unwrap();
        let der = ck.cert[0].as_ref();
        // The acmeIdentifier OID 1.3.6.1.5.5.7.1.31, then the critical
        // flag and the OCTET STRING holding the 32-byte digest.
        let oid = [0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x1f];
        let at = der.windows(oid.len()).position(|w| w == oid).unwrap();
        let rest = &der[at + oid.len()..];
        assert_eq!(&rest[..3], &[0x01, 0x01, 0xff]);
        assert!(rest.windows(32).any(|w| w == digest));
        assert!(der.windows(15).any(|w| w == b"mx.example.test"));
        assert!(challenge_cert("mx.example.test", &[0; 20]).is_err());
    }
}
