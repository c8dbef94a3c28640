//! DMARC evaluation from given SPF and DKIM outcomes, and record parsing:
//! what the conformance cases in `shared/testdata/dmarc` feed in (they
//! give mechanism results, not messages). The same mail-auth code the
//! inbound path runs does the work; this only sets up its inputs.

use crate::Verifier;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::dmarc::{Alignment, Dmarc, Policy};
use mail_auth::{AuthenticatedMessage, DkimOutput, DmarcResult, SpfOutput, SpfResult};

/// One mechanism's outcome: `pass`, `fail`, `none`, ... and its domain.
#[derive(Clone, Debug)]
pub struct Mechanism {
    pub result: String,
    pub domain: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmarcEvaluation {
    pub dmarc: &'static str,
    pub dkim_aligned: &'static str,
    pub spf_aligned: &'static str,
    /// The policy that applies (p, or sp/np for a subdomain).
    pub policy: &'static str,
    pub record_found: bool,
}

fn aligned(r: &DmarcResult) -> &'static str {
    match r {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail(_) => "fail",
        DmarcResult::TempError(_) => "temperror",
        DmarcResult::PermError(_) => "permerror",
        DmarcResult::None => "none",
    }
}

pub fn policy_name(p: &Policy) -> &'static str {
    match p {
        Policy::None | Policy::Unspecified => "none",
        Policy::Quarantine => "quarantine",
        Policy::Reject => "reject",
    }
}

fn spf_result(s: &str) -> SpfResult {
    match s {
        "pass" => SpfResult::Pass,
        "fail" => SpfResult::Fail,
        "softfail" => SpfResult::SoftFail,
        "neutral" => SpfResult::Neutral,
        "temperror" => SpfResult::TempError,
        "permerror" => SpfResult::PermError,
        _ => SpfResult::None,
    }
}

impl Verifier {
    /// DMARC for a message From: `from_domain` whose SPF and DKIM came
    /// out as given.
    pub async fn evaluate_dmarc(
        &self,
        from_domain: &str,
        spf: &Mechanism,
        dkim: Option<&Mechanism>,
    ) -> Result<DmarcEvaluation, String> {
        let raw = format!("From: someone@{from_domain}\r\nSubject: dmarc case\r\n\r\nbody\r\n");
        let message =
            AuthenticatedMessage::parse(raw.as_bytes()).ok_or("cannot build the message")?;
        let signature = mail_auth::dkim::Signature {
            d: dkim.map(|d| d.domain.clone()).unwrap_or_default(),
            ..Default::default()
        };
        let dkim_outputs: Vec<DkimOutput<'_>> = match dkim {
            Some(d) if d.result == "pass" => vec![DkimOutput::pass().with_signature(&signature)],
            Some(d) if d.result != "none" => {
                vec![
                    DkimOutput::fail(mail_auth::Error::Dkim(
                        mail_auth::dkim::DkimError::FailedBodyHashMatch,
                    ))
                    .with_signature(&signature),
                ]
            }
            _ => Vec::new(),
        };
        let spf_output = SpfOutput::new(spf.domain.clone()).with_result(spf_result(&spf.result));
        let out = self
            .auth
            .verify_dmarc(DmarcParameters::new(
                &message,
                &dkim_outputs,
                &spf.domain,
                &spf_output,
            ))
            .await;
        let dmarc = match (out.dkim_result(), out.spf_result()) {
            (DmarcResult::Pass, _) | (_, DmarcResult::Pass) => "pass",
            (DmarcResult::TempError(_), _) | (_, DmarcResult::TempError(_)) => "temperror",
            (DmarcResult::None, DmarcResult::None) if out.dmarc_record().is_none() => "none",
            _ => "fail",
        };
        Ok(DmarcEvaluation {
            dmarc,
            dkim_aligned: aligned(out.dkim_result()),
            spf_aligned: aligned(out.spf_result()),
            policy: policy_name(&out.policy()),
            record_found: out.dmarc_record().is_some(),
        })
    }
}

/// A DMARC record's policy and alignment tags, as `p sp adkim aspf`.
pub fn parse_record(record: &str) -> Result<[&'static str; 4], String> {
    let d = Dmarc::parse(record.as_bytes()).map_err(|e| e.to_string())?;
    let mode = |a: &Alignment| match a {
        Alignment::Relaxed => "r",
        Alignment::Strict => "s",
    };
    Ok([
        policy_name(&d.p),
        policy_name(&d.sp),
        mode(&d.adkim),
        mode(&d.aspf),
    ])
}
