//! DMARCbis discovery (the DNS tree walk, np=, psd=) by mail-auth, for
//! `[dmarc] discovery = "tree-walk"`: its verdict in our terms. Also the
//! CLI's way in, where the conformance cases give mechanism results
//! rather than messages.

use super::{DmarcEvaluation, Identifiers};
use crate::{AuthResult, DmarcPolicy, Verifier};
use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::{AuthenticatedMessage, DkimOutput, DmarcOutput, DmarcResult};

/// One mechanism's outcome: `pass`, `fail`, `none`, ... and its domain.
#[derive(Clone, Debug)]
pub struct Mechanism {
    pub result: String,
    pub domain: String,
}

fn result_of(r: &DmarcResult) -> AuthResult {
    match r {
        DmarcResult::Pass => AuthResult::Pass,
        DmarcResult::Fail(_) => AuthResult::Fail,
        DmarcResult::TempError(_) => AuthResult::TempError,
        DmarcResult::PermError(_) => AuthResult::PermError,
        DmarcResult::None => AuthResult::None,
    }
}

pub(crate) fn policy_of(p: &Policy) -> DmarcPolicy {
    match p {
        Policy::None | Policy::Unspecified => DmarcPolicy::None,
        Policy::Quarantine => DmarcPolicy::Quarantine,
        Policy::Reject => DmarcPolicy::Reject,
    }
}

/// mail-auth's output as our evaluation (DMARCbis has no pct).
pub(crate) fn from_output(out: &DmarcOutput) -> DmarcEvaluation {
    let (dkim, spf) = (result_of(out.dkim_result()), result_of(out.spf_result()));
    let dmarc = match (dkim, spf) {
        (AuthResult::Pass, _) | (_, AuthResult::Pass) => AuthResult::Pass,
        (AuthResult::TempError, _) | (_, AuthResult::TempError) => AuthResult::TempError,
        _ if out.dmarc_record().is_none() => AuthResult::None,
        _ => AuthResult::Fail,
    };
    DmarcEvaluation {
        dmarc,
        dkim_aligned: dkim,
        spf_aligned: spf,
        policy: policy_of(&out.policy()),
        disposition: policy_of(&out.policy()),
        record_found: out.dmarc_record().is_some(),
        published: out.dmarc_record().map(|r| published(out.domain(), r)),
    }
}

/// mail-auth's record as the aggregate report repeats it (DMARCbis has
/// no pct: all of it applies).
fn published(domain: &str, r: &mail_auth::dmarc::Dmarc) -> portcullis_dmarcrpt::Published {
    let align = |a: &mail_auth::dmarc::Alignment| match a {
        mail_auth::dmarc::Alignment::Strict => "s",
        mail_auth::dmarc::Alignment::Relaxed => "r",
    };
    let sp = match r.sp {
        Policy::Unspecified => &r.p,
        ref sp => sp,
    };
    portcullis_dmarcrpt::Published {
        domain: domain.to_ascii_lowercase(),
        adkim: align(&r.adkim).to_owned(),
        aspf: align(&r.aspf).to_owned(),
        p: policy_of(&r.p).as_str().to_owned(),
        sp: policy_of(sp).as_str().to_owned(),
        pct: 100,
        fo: "0".to_owned(),
        rua: r
            .rua
            .iter()
            .map(|u| match u.max_size {
                0 => format!("mailto:{}", u.uri),
                n => format!("mailto:{}!{n}", u.uri),
            })
            .collect(),
    }
}

impl Verifier {
    /// DMARC for a message From: `from_domain` whose SPF and DKIM came
    /// out as given, by the configured discovery.
    pub async fn evaluate_dmarc(
        &self,
        from_domain: &str,
        spf: &Mechanism,
        dkim: Option<&Mechanism>,
    ) -> Result<DmarcEvaluation, String> {
        let dkim_results: Vec<(AuthResult, String)> = dkim
            .filter(|d| d.result != "none")
            .map(|d| (AuthResult::parse(&d.result), d.domain.clone()))
            .into_iter()
            .collect();
        let ids = Identifiers {
            spf: AuthResult::parse(&spf.result),
            spf_domain: &spf.domain,
            dkim: &dkim_results,
        };
        if !self.dmarc_tree_walk {
            return Ok(self.dmarc_psl(from_domain, &ids).await);
        }
        let raw = format!("From: someone@{from_domain}\r\nSubject: dmarc case\r\n\r\nbody\r\n");
        let message =
            AuthenticatedMessage::parse(raw.as_bytes()).ok_or("cannot build the message")?;
        let signatures: Vec<mail_auth::dkim::Signature> = dkim_results
            .iter()
            .map(|(_, d)| mail_auth::dkim::Signature {
                d: d.clone(),
                ..Default::default()
            })
            .collect();
        let outputs: Vec<DkimOutput<'_>> = dkim_results
            .iter()
            .zip(&signatures)
            .map(|((r, _), sig)| match r {
                AuthResult::Pass => DkimOutput::pass().with_signature(sig),
                _ => DkimOutput::fail(mail_auth::Error::Dkim(
                    mail_auth::dkim::DkimError::FailedBodyHashMatch,
                ))
                .with_signature(sig),
            })
            .collect();
        let spf_output = ids.spf.spf_output(&spf.domain);
        let out = self
            .auth
            .verify_dmarc(self.lookups(DmarcParameters::new(
                &message,
                &outputs,
                &spf.domain,
                &spf_output,
            )))
            .await;
        Ok(from_output(&out))
    }
}
