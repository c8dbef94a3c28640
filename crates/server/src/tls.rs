//! Certificates and the TLS acceptors (rustls with ring). The
//! certificate comes from `[tls]` files, from ACME (`[acme]`, kept in
//! `data_dir/acme`), or, with neither, is a self-signed one generated
//! into `data_dir/tls` on first start and reused after.
//!
//! Every listener's rustls config resolves its certificate through one
//! [`Certificates`] cell, so a renewal or a SIGHUP swaps it for every
//! new handshake at once; a session already open keeps the one it
//! started with.

use anyhow::{Context as _, bail};
use portcullis_acme::{ACME_TLS_ALPN, Challenges};
use portcullis_config::Config;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The certificate and key files this config serves (with `[acme]`,
/// where the obtained ones are kept: until the first arrives, the
/// self-signed pair of `data_dir/tls` is served).
pub fn certificate_paths(config: &Config) -> (PathBuf, PathBuf) {
    match (&config.tls, &config.acme) {
        (Some(t), _) => (t.cert.clone(), t.key.clone()),
        (None, Some(_)) => {
            let store = portcullis_acme::Store::new(&config.data_dir);
            (store.cert_path(), store.key_path())
        }
        (None, None) => self_signed_paths(config),
    }
}

fn self_signed_paths(config: &Config) -> (PathBuf, PathBuf) {
    let dir = config.data_dir.join("tls");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// The certificate every listener serves, and the TLS-ALPN-01 answers
/// (RFC 8737) while an ACME order is validated.
pub(crate) struct Certificates {
    current: RwLock<Arc<CertifiedKey>>,
    pub challenges: Arc<Challenges>,
}

impl Certificates {
    pub(crate) fn set(&self, cert: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = cert;
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl portcullis_acme::ServedCertificate for Certificates {
    fn challenges(&self) -> Arc<Challenges> {
        self.challenges.clone()
    }

    fn load(&self, chain_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, String> {
        from_pem(chain_pem, key_pem).map_err(|e| format!("{e:#}"))
    }

    fn serve(&self, cert: Arc<CertifiedKey>) {
        self.set(cert)
    }
}

/// One listener's view of the cell: the HTTPS host (port 443) also
/// answers the ACME validation, the SMTP listeners never do.
#[derive(Debug)]
struct Resolver {
    certs: Arc<Certificates>,
    answers_acme: bool,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if !acme {
            return Some(self.certs.current());
        }
        // RFC 8737 §3: a client offering acme-tls/1 gets the challenge
        // certificate for its SNI name or no handshake at all, never the
        // real certificate (§6.2: the protocol carries nothing else).
        if !self.answers_acme {
            return None;
        }
        self.certs.challenges.get(hello.server_name()?)
    }
}

/// The cell, the SMTP acceptor and the HTTPS acceptor, serving the
/// certificate this config starts with.
pub(crate) fn acceptors(
    config: &Config,
) -> anyhow::Result<(
    Arc<Certificates>,
    tokio_rustls::TlsAcceptor,
    tokio_rustls::TlsAcceptor,
)> {
    let certs = Arc::new(Certificates {
        current: RwLock::new(initial(config)?),
        challenges: Arc::new(Challenges::default()),
    });
    let smtp = server_config(&certs, false, Vec::new())?;
    // The HTTPS host speaks HTTP/1.1 (axum's http1); acme-tls/1 is offered
    // only by a CA validating (RFC 8737 §6.2).
    let alpn = vec![ACME_TLS_ALPN.to_vec(), b"http/1.1".to_vec()];
    let https = server_config(&certs, true, alpn)?;
    Ok((certs, smtp, https))
}

fn server_config(
    certs: &Arc<Certificates>,
    answers_acme: bool,
    alpn: Vec<Vec<u8>>,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver {
            certs: certs.clone(),
            answers_acme,
        }));
    server.alpn_protocols = alpn;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
}

/// The certificate to serve at start: the `[tls]` files; with `[acme]`
/// the one obtained before, else (until the first is obtained) the
/// self-signed one; with neither, the self-signed one, made if missing.
fn initial(config: &Config) -> anyhow::Result<Arc<CertifiedKey>> {
    if config.acme.is_some() {
        let (cert, key) = certificate_paths(config);
        if cert.exists() {
            match load(&cert, &key) {
                Ok(c) => return Ok(c),
                Err(e) => tracing::warn!(
                    event = "acme_stored_unusable",
                    error = format!("{e:#}"),
                    "serving the self-signed certificate until a new one is obtained"
                ),
            }
        }
    }
    let (cert, key) = match config.tls {
        Some(_) => certificate_paths(config),
        None => self_signed_paths(config),
    };
    if config.tls.is_none() && !cert.exists() {
        generate_self_signed(&config.hostname, &cert, &key)?;
    }
    load(&cert, &key)
}

/// The certificate a SIGHUP puts in place: what [`initial`] would serve.
pub(crate) fn reload(config: &Config) -> anyhow::Result<Arc<CertifiedKey>> {
    initial(config)
}

/// Whether the certificate and key `serve` would use load and belong
/// together, without generating anything: a self-signed pair not made yet
/// is made at start, in the data directory (whose usability is checked
/// apart), and an ACME one is obtained after start.
pub(crate) fn check(config: &Config) -> anyhow::Result<()> {
    let (cert, key) = certificate_paths(config);
    if config.tls.is_none() && !cert.exists() {
        return Ok(());
    }
    load(&cert, &key).map(|_| ())
}

/// The certificate chain and key of these files; fails when either does
/// not load or the key is not the certificate's.
fn load(cert: &Path, key: &Path) -> anyhow::Result<Arc<CertifiedKey>> {
    let chain = std::fs::read(cert)
        .with_context(|| format!("cannot read certificate {}", cert.display()))?;
    let key_pem =
        std::fs::read(key).with_context(|| format!("cannot read private key {}", key.display()))?;
    from_pem(&chain, &key_pem)
        .with_context(|| format!("certificate {} and key {}", cert.display(), key.display()))
}

/// A chain and key in PEM, checked to belong together.
pub(crate) fn from_pem(chain: &[u8], key: &[u8]) -> anyhow::Result<Arc<CertifiedKey>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain)
        .collect::<Result<_, _>>()
        .context("not a PEM certificate chain")?;
    if certs.is_empty() {
        bail!("no certificate in the chain");
    }
    let key_der = PrivateKeyDer::from_pem_slice(key).context("not a PEM private key")?;
    let provider = rustls::crypto::ring::default_provider();
    let ck = CertifiedKey::from_der(certs, key_der, &provider)
        .context("the certificate and key do not match (or the key is not usable)")?;
    Ok(Arc::new(ck))
}

/// A self-signed certificate as an operator expects to find it: named
/// after the host (subject CN and the first SAN), valid from a day ago (a
/// client's clock may lag) for a year.
fn self_signed_params(
    hostname: &str,
    now: time::OffsetDateTime,
) -> Result<rcgen::CertificateParams, rcgen::Error> {
    let mut names = vec![hostname.to_owned()];
    for extra in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|n| n == extra) {
            names.push(extra.to_owned());
        }
    }
    let mut params = rcgen::CertificateParams::new(names)?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, hostname);
    params.distinguished_name = dn;
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(SELF_SIGNED_DAYS);
    Ok(params)
}

/// How long a generated certificate is valid: a year, as public CAs
/// allowed until recently; a new one is made by deleting the old.
const SELF_SIGNED_DAYS: i64 = 365;

fn generate_self_signed(hostname: &str, cert: &Path, key: &Path) -> anyhow::Result<()> {
    let key_pair = rcgen::KeyPair::generate().context("cannot generate a key pair")?;
    let generated = self_signed_params(hostname, time::OffsetDateTime::now_utc())
        .and_then(|p| p.self_signed(&key_pair))
        .context("cannot generate a self-signed certificate")?;
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    write_private(key, key_pair.serialize_pem().as_bytes())?;
    std::fs::write(cert, generated.pem())
        .with_context(|| format!("cannot write {}", cert.display()))?;
    tracing::info!(event = "tls_generated", cert = %cert.display(), "generated a self-signed certificate");
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

/// Protocol and cipher of an established connection, in the words of the
/// Received header (`TLSv1.3`, `TLS13_AES_256_GCM_SHA384`).
pub(crate) fn describe(conn: &rustls::ServerConnection) -> portcullis_smtp::TlsInfo {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
        Some(v) => format!("{v:?}"),
        None => "unknown".to_owned(),
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .map_or_else(|| "unknown".to_owned(), |s| format!("{:?}", s.suite()));
    portcullis_smtp::TlsInfo { version, cipher }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_self_signed_certificate_is_named_after_the_host_and_valid_for_a_year() {
        let now = time::OffsetDateTime::from_unix_timestamp(1_795_520_211).unwrap();
        let p = self_signed_params("mx.example.test", now).unwrap();
        let cn = p.distinguished_name.get(&rcgen::DnType::CommonName);
        assert_eq!(
            cn,
            Some(&rcgen::DnValue::Utf8String("mx.example.test".into()))
        );
        assert_eq!(
            p.subject_alt_names.first(),
            Some(&rcgen::SanType::DnsName(
                "mx.example.test".try_into().unwrap()
            ))
        );
        assert_eq!(p.not_before, now - time::Duration::days(1));
        assert_eq!(p.not_after, now + time::Duration::days(365));
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("portcullis-tls-{}", std::process::id()));
        let (c1, k1) = (dir.join("a/cert.pem"), dir.join("a/key.pem"));
        let (c2, k2) = (dir.join("b/cert.pem"), dir.join("b/key.pem"));
        generate_self_signed("a.test", &c1, &k1).unwrap();
        generate_self_signed("b.test", &c2, &k2).unwrap();
        assert!(load(&c1, &k1).is_ok());
        let mismatched = load(&c1, &k2).err().unwrap();
        assert!(
            format!("{mismatched:#}").contains("do not match"),
            "{mismatched:#}"
        );
        let swapped = load(&k1, &c1).err().unwrap();
        assert!(
            format!("{swapped:#}").contains("no certificate"),
            "{swapped:#}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
