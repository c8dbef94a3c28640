//! Which rules each MX host is tried under. DANE comes first: a host
//! named by a validated MX RRset (RFC 7672 §2.2) with authentic, usable
//! TLSA records is held to those records, whether or not the domain's
//! MTA-STS policy lists it, as RFC 8461 §2 asks of senders that do both
//! ("SHOULD use DANE in preference to MTA-STS"). The policy holds for
//! every other host: under `enforce` only listed hosts over TLS verified
//! for their name (§4.2).

use super::{Router, requiretls_failure};
use crate::client::TlsRules;
use crate::dane;
use crate::outcome::{FailureKind, HostFailure, Status};
use portcullis_config::clock::now_secs;
use portcullis_mtasts::{Mode, Policy};
use portcullis_tlsrpt::{Failure, PolicyKey};
use std::net::SocketAddr;
use tracing::warn;

/// One address to try, for one MX host.
#[derive(Clone, Debug)]
pub(super) struct Target {
    pub addr: SocketAddr,
    /// The MX host's name (the smarthost's address for the smarthost).
    pub name: String,
    /// Named by a validated MX RRset: DANE may apply (RFC 7672 §2.2).
    pub secure_mx: bool,
}

/// The destination's MTA-STS policy as this message sees it.
pub(super) struct Sts {
    pub policy: Policy,
    /// `enforce`, or `testing` for a REQUIRETLS message (RFC 8689 §4.2.1).
    pub enforced: bool,
    /// What TLS-RPT counts sessions under; none for mode `none`.
    pub key: Option<PolicyKey>,
}

/// What one MX host is held to, DANE before MTA-STS (RFC 8461 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rules {
    /// TLS mandatory, the certificate one the TLSA records name.
    Dane,
    /// TLS mandatory, the certificate valid for the host's name.
    Verified,
    /// STARTTLS when offered (RFC 7435).
    Opportunistic,
    /// Not tried: an enforced policy does not list the host (§4.2).
    NotInPolicy,
    /// Not tried: a REQUIRETLS message, and neither DANE nor an
    /// enforced policy validates the host (RFC 8689 §4.2.1).
    RequireTlsUnmet,
}

/// Plain logic: `dane`, the host has usable TLSA records from a
/// validated MX RRset; `sts`, the destination's policy.
pub(super) fn rules(dane: bool, sts: Option<&Sts>, host: &str, requiretls: bool) -> Rules {
    if dane {
        return Rules::Dane;
    }
    let enforced = sts.is_some_and(|s| s.enforced);
    let listed = sts.is_none_or(|s| s.policy.allows(host));
    match (enforced, listed) {
        (true, true) => Rules::Verified,
        (true, false) => Rules::NotInPolicy,
        (false, _) if requiretls => Rules::RequireTlsUnmet,
        (false, _) => Rules::Opportunistic,
    }
}

/// How one host is tried: the TLS it needs, and the policy its session
/// counts under (TLS-RPT, RFC 8460).
pub(super) struct Session {
    pub tls: tokio_rustls::TlsConnector,
    /// Which rules `tls` applies: a kept connection is taken again only
    /// under the same ones.
    pub rules: TlsRules,
    pub require_tls: bool,
    pub held_to: Option<PolicyKey>,
}

/// Why a host is passed over.
pub(super) enum Skip {
    /// An enforced MTA-STS policy does not list it, and DANE does not
    /// cover it.
    NotInPolicy,
    Failed(HostFailure),
}

impl Router {
    /// The destination's MTA-STS policy, when `[delivery] mta_sts` (none
    /// through the smarthost).
    pub(super) async fn sts_policy(&self, domain: &str, requiretls: bool) -> Option<Sts> {
        let policy = match (&self.sts, self.config.delivery.smarthost) {
            (Some(sts), None) => sts.policy(domain, now_secs()).await,
            _ => None,
        }?;
        let key = (policy.mode != Mode::None).then(|| PolicyKey {
            policy_type: "sts",
            policy_domain: domain.to_owned(),
            policy_string: policy.to_text().lines().map(str::to_owned).collect(),
        });
        let enforced = match policy.mode {
            Mode::Enforce => true,
            Mode::Testing => requiretls,
            Mode::None => false,
        };
        Some(Sts {
            policy,
            enforced,
            key,
        })
    }

    /// The session for `target`, or why it is passed over. A host the
    /// policy does not list is counted as a validation failure unless
    /// DANE covers it (then MTA-STS does not hold for it).
    pub(super) async fn session(
        &self,
        domain: &str,
        target: &Target,
        sts: Option<&Sts>,
        requiretls: bool,
    ) -> Result<Session, Skip> {
        let name = target.name.as_str();
        // An insecure MX RRset may name an attacker's host with
        // authentic TLSA records of its own: no DANE for it (§2.2).
        let dane = if target.secure_mx {
            self.dane(domain, name).await
        } else {
            Ok(None)
        };
        let dane = match dane {
            Ok(d) => d,
            Err((f, key)) => {
                self.count_tls(key.as_ref(), name, Err(Failure::DnssecInvalid));
                return Err(Skip::Failed(f));
            }
        };
        let sts_key = sts.and_then(|s| s.key.clone());
        let rules = rules(dane.is_some(), sts, name, requiretls);
        if rules != Rules::Dane
            && let Some(s) = sts.filter(|s| !s.policy.allows(name))
        {
            warn!(event = "mta_sts_mx_mismatch", domain = %domain, mx = %name, mode = s.policy.mode.name());
            self.count_tls(sts_key.as_ref(), name, Err(Failure::ValidationFailure));
        }
        match (rules, dane) {
            (Rules::Dane, Some((tls, key))) => Ok(Session {
                tls,
                rules: TlsRules::Dane(key.policy_string.clone()),
                require_tls: true,
                held_to: Some(key),
            }),
            (Rules::Verified, _) => Ok(Session {
                tls: self.verified.clone(),
                rules: TlsRules::Verified,
                require_tls: true,
                held_to: sts_key,
            }),
            (Rules::NotInPolicy, _) => Err(Skip::NotInPolicy),
            (Rules::RequireTlsUnmet, _) => Err(Skip::Failed(requiretls_failure(name))),
            // (Rules::Dane comes only with records.)
            (Rules::Opportunistic, _) | (Rules::Dane, None) => Ok(Session {
                tls: self.tls.clone(),
                rules: TlsRules::Opportunistic,
                require_tls: false,
                held_to: sts_key,
            }),
        }
    }

    /// The DANE connector for an MX host with authentic, usable TLSA
    /// records (`[dns] trust_ad`); None where DANE does not apply; a
    /// failed lookup means this host is not used now (RFC 7672 §2.2).
    async fn dane(
        &self,
        domain: &str,
        host: &str,
    ) -> Result<Option<(tokio_rustls::TlsConnector, PolicyKey)>, (HostFailure, Option<PolicyKey>)>
    {
        let Some(tlsa) = &self.tlsa else {
            return Ok(None);
        };
        let fail =
            |why: String| HostFailure::temporary(Status(4, 7, 5), why).with_kind(FailureKind::Tls);
        let key = |strings: Vec<String>| PolicyKey {
            policy_type: "tlsa",
            policy_domain: domain.to_owned(),
            policy_string: strings,
        };
        match tlsa.tlsa(host).await {
            dane::TlsaAnswer::Usable(records) => {
                let k = key(records.iter().map(dane::Tlsa::to_string).collect());
                dane::connector(records)
                    .map(|c| Some((c, k.clone())))
                    .map_err(|e| (fail(format!("DANE for {host}: {e}")), Some(k)))
            }
            dane::TlsaAnswer::Insecure => Ok(None),
            dane::TlsaAnswer::Failed(why) => Err((
                fail(format!("{why} (DNSSEC): not delivering to {host}")),
                Some(key(Vec::new())),
            )),
        }
    }
}

/// Every host passed over because the enforced policy does not list it:
/// deferred, never sent elsewhere or in clear (RFC 8461 §4.2).
pub(super) fn no_host_in_policy(domain: &str) -> HostFailure {
    HostFailure::temporary(
        Status(4, 7, 5),
        format!("no MX host of {domain} matches its MTA-STS policy"),
    )
    .with_kind(FailureKind::Tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sts(mode: Mode, enforced: bool) -> Sts {
        Sts {
            policy: Policy {
                mode,
                mx: vec!["mx.listed.example".into()],
                max_age: 86400,
            },
            enforced,
            key: None,
        }
    }

    #[test]
    fn dane_comes_before_an_enforced_policy_that_does_not_list_the_host() {
        let enforce = sts(Mode::Enforce, true);
        assert_eq!(
            rules(true, Some(&enforce), "mx.other.example", false),
            Rules::Dane
        );
        assert_eq!(
            rules(false, Some(&enforce), "mx.other.example", false),
            Rules::NotInPolicy
        );
    }

    #[test]
    fn dane_comes_before_an_enforced_policy_that_lists_the_host() {
        let enforce = sts(Mode::Enforce, true);
        assert_eq!(
            rules(true, Some(&enforce), "mx.listed.example", true),
            Rules::Dane
        );
        assert_eq!(
            rules(false, Some(&enforce), "mx.listed.example", true),
            Rules::Verified
        );
    }

    #[test]
    fn without_dane_or_an_enforced_policy_tls_is_opportunistic() {
        let testing = sts(Mode::Testing, false);
        assert_eq!(
            rules(false, Some(&testing), "mx.other.example", false),
            Rules::Opportunistic
        );
        assert_eq!(
            rules(false, None, "mx.other.example", false),
            Rules::Opportunistic
        );
    }

    #[test]
    fn requiretls_needs_dane_or_an_enforced_policy() {
        assert_eq!(
            rules(false, None, "mx.other.example", true),
            Rules::RequireTlsUnmet
        );
        assert_eq!(rules(true, None, "mx.other.example", true), Rules::Dane);
        // A testing policy is enforced for a REQUIRETLS message.
        let testing = sts(Mode::Testing, true);
        assert_eq!(
            rules(false, Some(&testing), "mx.listed.example", true),
            Rules::Verified
        );
    }
}
