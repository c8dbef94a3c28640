//! DMARC (RFC 7489): the policy record ([`record`]), its discovery at the
//! From: domain or at its organizational domain from the Public Suffix
//! List (§6.6.3, §3.2), identifier alignment (§3.1) and the policy that
//! applies, `pct` included (§6.6.4). The verdict ([`evaluate`]) is plain
//! logic; DNS comes through the SPF module's [`SpfDns`].
//!
//! Under `[dmarc] discovery = "tree-walk"` mail-auth's DMARCbis code
//! answers instead ([`treewalk`]).

mod observe;
pub mod record;
mod treewalk;

use crate::spf::{Answer, SpfDns};
use crate::{AuthResult, DmarcPolicy, SuffixList};
pub(crate) use observe::{Signatures, observation};
pub use record::{Alignment, DmarcRecord, RecordError, parse as parse_record};
pub use treewalk::Mechanism;
pub(crate) use treewalk::from_output;

/// A record as discovered: where it was found decides between p and sp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovered {
    pub record: DmarcRecord,
    /// The domain the record was found at.
    pub domain: String,
    /// Found at the organizational domain, not at the From: domain.
    pub at_organizational_domain: bool,
}

/// The authenticated identifiers DMARC looks at.
#[derive(Clone, Debug)]
pub struct Identifiers<'a> {
    pub spf: AuthResult,
    /// The MAIL FROM domain (or HELO domain for the null sender).
    pub spf_domain: &'a str,
    /// Each DKIM signature's result and d=.
    pub dkim: &'a [(AuthResult, String)],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmarcEvaluation {
    pub dmarc: AuthResult,
    pub dkim_aligned: AuthResult,
    pub spf_aligned: AuthResult,
    /// The policy the domain asks for (p, or sp for a subdomain).
    pub policy: DmarcPolicy,
    /// What to do with this message if it failed: the policy, one step
    /// milder when the message fell outside `pct`.
    pub disposition: DmarcPolicy,
    pub record_found: bool,
    /// The record as the aggregate report repeats it (§7.2).
    pub published: Option<portcullis_dmarcrpt::Published>,
}

impl DmarcEvaluation {
    /// DMARC does not apply: no record, or no single From: domain.
    pub fn none() -> DmarcEvaluation {
        DmarcEvaluation {
            dmarc: AuthResult::None,
            dkim_aligned: AuthResult::None,
            spf_aligned: AuthResult::None,
            policy: DmarcPolicy::None,
            disposition: DmarcPolicy::None,
            record_found: false,
            published: None,
        }
    }

    fn temperror() -> DmarcEvaluation {
        DmarcEvaluation {
            dmarc: AuthResult::TempError,
            ..DmarcEvaluation::none()
        }
    }
}

/// §6.6.3: the record at `_dmarc.FROM`, else at `_dmarc.ORG`. Err is a
/// DNS failure (temperror): "no record" must not be mistaken for it.
pub async fn discover<D: SpfDns>(
    dns: &D,
    from_domain: &str,
    psl: &SuffixList,
) -> Result<Option<Discovered>, String> {
    let from_domain = from_domain.trim_end_matches('.').to_ascii_lowercase();
    if let Some(found) = records_at(dns, &from_domain).await? {
        return Ok(single(found, &from_domain, false));
    }
    match psl.organizational_domain(&from_domain) {
        Some(org) if !org.eq_ignore_ascii_case(&from_domain) => Ok(records_at(dns, &org)
            .await?
            .and_then(|r| single(r, &org, true))),
        _ => Ok(None),
    }
}

/// The DMARC records at `_dmarc.DOMAIN`; None when there are none.
async fn records_at<D: SpfDns>(dns: &D, domain: &str) -> Result<Option<Vec<String>>, String> {
    let name = format!("_dmarc.{}", domain.trim_end_matches('.'));
    let texts = match dns.txt(&name).await {
        Answer::Found(t) => t,
        Answer::NotFound => return Ok(None),
        Answer::Error(e) => return Err(format!("TXT {name}: {e}")),
    };
    let records: Vec<String> = texts
        .iter()
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .filter(|t| record::is_dmarc(t))
        .collect();
    Ok((!records.is_empty()).then_some(records))
}

/// Step 5: more than one record, or one that does not parse, and DMARC
/// does not apply.
fn single(records: Vec<String>, domain: &str, at_org: bool) -> Option<Discovered> {
    let [text] = records.as_slice() else {
        return None;
    };
    record::parse(text).ok().map(|record| Discovered {
        record,
        domain: domain.to_ascii_lowercase(),
        at_organizational_domain: at_org,
    })
}

/// The verdict for a message From: `from_domain`. `sample` (0..100) picks
/// whether a failing message falls inside the record's `pct`.
pub fn evaluate(
    found: &Discovered,
    from_domain: &str,
    ids: &Identifiers<'_>,
    psl: &SuffixList,
    sample: u8,
) -> DmarcEvaluation {
    let r = &found.record;
    let aligns = |domain: &str, mode| aligned(domain, from_domain, mode, psl);
    let spf_aligned = match ids.spf {
        AuthResult::Pass if aligns(ids.spf_domain, r.aspf) => AuthResult::Pass,
        AuthResult::Pass => AuthResult::Fail,
        AuthResult::TempError if aligns(ids.spf_domain, r.aspf) => AuthResult::TempError,
        _ => AuthResult::None,
    };
    let dkim_with = |result| ids.dkim.iter().filter(move |(res, _)| *res == result);
    let dkim_aligned = if dkim_with(AuthResult::Pass).any(|(_, d)| aligns(d, r.adkim)) {
        AuthResult::Pass
    } else if dkim_with(AuthResult::Pass).next().is_some() {
        AuthResult::Fail
    } else if dkim_with(AuthResult::TempError).any(|(_, d)| aligns(d, r.adkim)) {
        AuthResult::TempError
    } else {
        AuthResult::None
    };
    let both = [spf_aligned, dkim_aligned];
    let dmarc = if both.contains(&AuthResult::Pass) {
        AuthResult::Pass
    } else if both.contains(&AuthResult::TempError) {
        AuthResult::TempError
    } else {
        AuthResult::Fail
    };
    let policy = if found.at_organizational_domain {
        r.sp
    } else {
        r.p
    };
    DmarcEvaluation {
        dmarc,
        dkim_aligned,
        spf_aligned,
        policy,
        disposition: if sample < r.pct {
            policy
        } else {
            milder(policy)
        },
        record_found: true,
        published: Some(published(found)),
    }
}

/// The record as Appendix C's `policy_published` shows it.
fn published(found: &Discovered) -> portcullis_dmarcrpt::Published {
    let r = &found.record;
    portcullis_dmarcrpt::Published {
        domain: found.domain.clone(),
        adkim: r.adkim.as_str().to_owned(),
        aspf: r.aspf.as_str().to_owned(),
        p: r.p.as_str().to_owned(),
        sp: r.sp.as_str().to_owned(),
        pct: r.pct,
        fo: r.fo.clone(),
        rua: r.rua.clone(),
    }
}

/// §6.6.4: mail outside pct gets the next policy down.
fn milder(p: DmarcPolicy) -> DmarcPolicy {
    match p {
        DmarcPolicy::Reject => DmarcPolicy::Quarantine,
        _ => DmarcPolicy::None,
    }
}

/// §3.1: strict is the same name; relaxed, the same organizational domain.
fn aligned(identifier: &str, from_domain: &str, mode: Alignment, psl: &SuffixList) -> bool {
    let a = identifier.trim_end_matches('.').to_ascii_lowercase();
    let b = from_domain.trim_end_matches('.').to_ascii_lowercase();
    if a.is_empty() {
        return false;
    }
    match mode {
        Alignment::Strict => a == b,
        Alignment::Relaxed => {
            let org = |d: &str| psl.organizational_domain(d).unwrap_or_else(|| d.to_owned());
            a == b || org(&a) == org(&b)
        }
    }
}

/// Discover and evaluate in one step (the inbound path and the CLI).
pub async fn check<D: SpfDns>(
    dns: &D,
    from_domain: &str,
    ids: &Identifiers<'_>,
    psl: &SuffixList,
    sample: u8,
) -> DmarcEvaluation {
    if from_domain.is_empty() {
        return DmarcEvaluation::none();
    }
    match discover(dns, from_domain, psl).await {
        Ok(Some(found)) => evaluate(&found, from_domain, ids, psl, sample),
        Ok(None) => DmarcEvaluation::none(),
        Err(_) => DmarcEvaluation::temperror(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str, at_org: bool) -> Discovered {
        Discovered {
            record: record::parse(text).unwrap(),
            domain: "example.co.uk".into(),
            at_organizational_domain: at_org,
        }
    }

    fn run(
        text: &str,
        at_org: bool,
        spf: (AuthResult, &str),
        dkim: &[(AuthResult, String)],
        sample: u8,
    ) -> DmarcEvaluation {
        let ids = Identifiers {
            spf: spf.0,
            spf_domain: spf.1,
            dkim,
        };
        evaluate(
            &found(text, at_org),
            "news.example.co.uk",
            &ids,
            &SuffixList::built_in(),
            sample,
        )
    }

    #[test]
    fn relaxed_alignment_uses_the_public_suffix_list() {
        let pass = [(AuthResult::Pass, "example.co.uk".to_owned())];
        assert_eq!(
            run(
                "v=DMARC1; p=reject",
                false,
                (AuthResult::None, ""),
                &pass,
                0
            )
            .dmarc,
            AuthResult::Pass
        );
        let other = [(AuthResult::Pass, "other.co.uk".to_owned())];
        let e = run(
            "v=DMARC1; p=reject",
            false,
            (AuthResult::Pass, "co.uk"),
            &other,
            0,
        );
        assert_eq!(
            (e.dmarc, e.dkim_aligned, e.spf_aligned),
            (AuthResult::Fail, AuthResult::Fail, AuthResult::Fail)
        );
    }

    #[test]
    fn a_subdomain_gets_sp() {
        let e = run(
            "v=DMARC1; p=reject; sp=quarantine",
            true,
            (AuthResult::Fail, "x.example"),
            &[],
            0,
        );
        assert_eq!(e.policy, DmarcPolicy::Quarantine);
    }

    #[test]
    fn mail_outside_pct_gets_the_milder_policy() {
        let e = run(
            "v=DMARC1; p=reject; pct=25",
            false,
            (AuthResult::Fail, "x.example"),
            &[],
            24,
        );
        assert_eq!(e.disposition, DmarcPolicy::Reject);
        let e = run(
            "v=DMARC1; p=reject; pct=25",
            false,
            (AuthResult::Fail, "x.example"),
            &[],
            25,
        );
        assert_eq!(e.disposition, DmarcPolicy::Quarantine);
    }

    #[test]
    fn an_aligned_temporary_error_is_a_temporary_error() {
        let e = run(
            "v=DMARC1; p=reject",
            false,
            (AuthResult::TempError, "example.co.uk"),
            &[],
            0,
        );
        assert_eq!(e.dmarc, AuthResult::TempError);
    }
}
