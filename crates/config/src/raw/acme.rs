//! `[acme]`: what serde cannot check about the ACME settings (an https
//! directory, `mailto:` contacts, names that a CA can validate), the
//! default names, and the settings it cannot be combined with.

use super::{Invalid, checked_domain};
use crate::AcmeSettings;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAcme {
    directory: Spanned<String>,
    contact: Option<Spanned<Vec<String>>>,
    directory_ca: Option<Spanned<PathBuf>>,
    domains: Option<Spanned<Vec<String>>>,
    challenge: Option<Spanned<String>>,
    retry_secs: Option<Spanned<u64>>,
    retry_max_secs: Option<Spanned<u64>>,
}

/// Retry a failed order after 5 minutes, then doubling ...
const DEFAULT_RETRY_SECS: u64 = 300;
/// ... up to 6 hours: with renewal at a third of a 90-day life left,
/// a month of such retries before expiry.
const DEFAULT_RETRY_MAX_SECS: u64 = 21_600;

/// What the rest of the config says that `[acme]` depends on.
pub(super) struct Around<'a> {
    pub hostname: &'a str,
    /// `mta-sts.DOMAIN` names the MTA-STS host serves.
    pub mta_sts_names: Vec<String>,
    pub mta_sts_bind: bool,
    /// Where `[tls] cert` is, when given.
    pub tls_at: Option<usize>,
}

impl RawAcme {
    pub(super) fn validate(self, base: &Path, around: Around<'_>) -> Result<AcmeSettings, Invalid> {
        let at = self.directory.span().start;
        if let Some(tls_at) = around.tls_at {
            return Err((
                tls_at,
                "[tls] cert/key and [acme] both choose the certificate: remove one (with [acme] the certificate lives in DATA/acme/)".into(),
            ));
        }
        let directory = self.directory.into_inner();
        // RFC 8555 §6.1: ACME is spoken over HTTPS only.
        if !directory.starts_with("https://") || directory.len() <= "https://".len() {
            return Err((
                at,
                format!("{directory:?} is not an https:// URL (RFC 8555 6.1)"),
            ));
        }
        if let Some(c) = &self.challenge
            && c.get_ref() != "tls-alpn-01"
        {
            return Err((
                c.span().start,
                format!(
                    "{:?} is not supported: only \"tls-alpn-01\" (validated on [http] mta_sts_bind, port 443; no port 80 needed)",
                    c.get_ref()
                ),
            ));
        }
        if !around.mta_sts_bind {
            return Err((
                at,
                "[acme] needs [http] mta_sts_bind: the CA validates tls-alpn-01 there (port 443, RFC 8737)".into(),
            ));
        }
        let contact = match self.contact {
            None => Vec::new(),
            Some(c) => {
                let cat = c.span().start;
                c.into_inner()
                    .into_iter()
                    .map(|m| {
                        mailto(&m).ok_or((
                            cat,
                            format!("{m:?} is not a mailto: URL (mailto:postmaster@example.org)"),
                        ))
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        let directory_ca = self
            .directory_ca
            .map(|p| {
                let path = base.join(p.get_ref());
                if path.is_file() {
                    Ok(path)
                } else {
                    Err((p.span().start, format!("cannot open {}", path.display())))
                }
            })
            .transpose()?;
        let domains = match self.domains {
            Some(d) => names(d)?,
            None => std::iter::once(around.hostname.to_owned())
                .chain(around.mta_sts_names)
                .collect(),
        };
        let retry_secs =
            self.retry_secs
                .map_or(Ok(DEFAULT_RETRY_SECS), |r| match *r.get_ref() {
                    0 => Err((r.span().start, "retry_secs must be at least 1".to_owned())),
                    s => Ok(s),
                })?;
        let retry_max_secs = match self.retry_max_secs {
            None => DEFAULT_RETRY_MAX_SECS.max(retry_secs),
            Some(m) if *m.get_ref() < retry_secs => {
                return Err((
                    m.span().start,
                    "retry_max_secs must be at least retry_secs".into(),
                ));
            }
            Some(m) => m.into_inner(),
        };
        Ok(AcmeSettings {
            directory,
            contact,
            directory_ca,
            domains,
            retry_secs,
            retry_max_secs,
        })
    }
}

/// `domains`: DNS names a CA can validate with tls-alpn-01; no
/// wildcards (RFC 8737 §3 allows only DNS-01 for those).
fn names(d: Spanned<Vec<String>>) -> Result<Vec<String>, Invalid> {
    let at = d.span().start;
    let d = d.into_inner();
    if d.is_empty() {
        return Err((at, "domains must name at least one name".into()));
    }
    d.into_iter()
        .map(|n| {
            if n.starts_with("*.") {
                return Err((
                    at,
                    format!("{n:?}: a wildcard needs DNS-01, which portcullis does not answer"),
                ));
            }
            checked_domain(&Spanned::new(at..at, n))
                .map_err(|(_, why)| (at, format!("domains: {why}")))
        })
        .collect()
}

/// `mailto:local@domain`, as RFC 8555 §7.3 asks of contacts.
fn mailto(m: &str) -> Option<String> {
    let address = m.strip_prefix("mailto:")?;
    let (local, domain) = address.rsplit_once('@')?;
    if local.is_empty() || address.contains(char::is_whitespace) {
        return None;
    }
    let domain = checked_domain(&Spanned::new(0..0, domain.to_owned())).ok()?;
    Some(format!("mailto:{local}@{domain}"))
}
