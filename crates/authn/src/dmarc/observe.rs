//! What one message contributes to its policy domain's aggregate report
//! (RFC 7489 §7.2): built beside the verdict, kept only when the domain
//! asks for reports (`rua`).

use super::DmarcEvaluation;
use crate::{AuthResult, SpfCheck};
use portcullis_dmarcrpt::{DkimAuth, Observation};

/// Each DKIM signature as (d=, s=, result).
pub(crate) type Signatures = Vec<(String, String, AuthResult)>;

/// The observation, or None when no record was found or it names no
/// `rua`. The disposition is `none` until the caller knows what it did.
pub(crate) fn observation(
    eval: &DmarcEvaluation,
    spf: &SpfCheck,
    from_domain: &str,
    signatures: &Signatures,
) -> Option<Observation> {
    let published = eval.published.clone().filter(|p| !p.rua.is_empty())?;
    // RFC 7208 §2.4: the null sender's identity is postmaster@HELO, and
    // the report's scope says it was the HELO name.
    let null_sender = spf.identity == format!("postmaster@{}", spf.helo);
    let envelope_domain = spf.identity.rsplit_once('@').map_or("", |(_, d)| d);
    Some(Observation {
        published,
        source_ip: spf.ip.to_string(),
        header_from: from_domain.to_ascii_lowercase(),
        envelope_from: envelope_domain.to_ascii_lowercase(),
        disposition: "none".to_owned(),
        dkim_aligned: eval.dkim_aligned == AuthResult::Pass,
        spf_aligned: eval.spf_aligned == AuthResult::Pass,
        sampled_out: eval.disposition != eval.policy,
        dkim: signatures
            .iter()
            .map(|(d, s, r)| DkimAuth {
                domain: d.to_ascii_lowercase(),
                selector: s.clone(),
                result: r.as_str().to_owned(),
            })
            .collect(),
        spf_domain: envelope_domain.to_ascii_lowercase(),
        spf_scope: if null_sender { "helo" } else { "mfrom" }.to_owned(),
        spf_result: spf.result().as_str().to_owned(),
    })
}
