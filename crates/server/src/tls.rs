//! Certificates and the TLS acceptor (rustls with ring). With no `[tls]` in
//! the config, a self-signed certificate for the hostname is generated into
//! `data_dir/tls` on first start and reused after.

use anyhow::{Context as _, bail};
use portcullis_config::Config;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The certificate and key files this config uses.
pub fn certificate_paths(config: &Config) -> (PathBuf, PathBuf) {
    match &config.tls {
        Some(t) => (t.cert.clone(), t.key.clone()),
        None => {
            let dir = config.data_dir.join("tls");
            (dir.join("cert.pem"), dir.join("key.pem"))
        }
    }
}

pub(crate) fn acceptor(config: &Config) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let (cert, key) = certificate_paths(config);
    if config.tls.is_none() && !cert.exists() {
        generate_self_signed(&config.hostname, &cert, &key)?;
    }
    load(&cert, &key)
}

/// Whether the certificate and key `serve` would use load and belong
/// together, without generating anything: a self-signed pair not made yet
/// is made at start, in the data directory (whose usability is checked
/// apart).
pub(crate) fn check(config: &Config) -> anyhow::Result<()> {
    let (cert, key) = certificate_paths(config);
    if config.tls.is_none() && !cert.exists() {
        return Ok(());
    }
    load(&cert, &key).map(|_| ())
}

/// The acceptor for this certificate chain and key; fails when either does
/// not load or the key is not the certificate's.
fn load(cert: &Path, key: &Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", cert.display()))?;
    if certs.is_empty() {
        bail!("{} holds no certificate", cert.display());
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read private key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .with_context(|| {
            format!(
                "certificate {} and key {} do not match",
                cert.display(),
                key.display()
            )
        })?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
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
