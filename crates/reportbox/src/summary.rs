//! What is kept of a report: its reporter, period and policy, and per
//! source (DMARC) or per policy (TLS-RPT) the figures an operator reads.
//! Stored as JSON by the server and served by `GET /api/reports`, so the
//! shape is ours, not mail-auth's. Counts and strings are bounded: a
//! report is a stranger's document.

use mail_auth::report::tlsrpt::{FailureDetails, Policy, TlsReport};
use mail_auth::report::{ActionDisposition, Alignment, Disposition, DmarcResult, Record, Report};
use serde::{Deserialize, Serialize};

/// Rows kept of one DMARC report (one per source address and result);
/// the totals count them all.
pub const MAX_ROWS: usize = 1000;
/// Policies kept of one TLS-RPT report, and failure details per policy.
pub const MAX_POLICIES: usize = 100;
pub const MAX_FAILURES: usize = 100;
/// Characters kept of any string from a report.
const MAX_TEXT: usize = 256;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Summary {
    Dmarc(DmarcSummary),
    Tls(TlsSummary),
    /// A complaint from a feedback loop (RFC 5965).
    Arf(crate::ArfSummary),
}

impl Summary {
    pub fn kind(&self) -> &'static str {
        match self {
            Summary::Dmarc(_) => "dmarc",
            Summary::Tls(_) => "tls",
            Summary::Arf(_) => "arf",
        }
    }
}

/// An aggregate report (RFC 7489 Appendix C, `feedback`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DmarcSummary {
    pub org_name: String,
    pub email: String,
    pub report_id: String,
    /// `date_range`, seconds since the epoch (UTC).
    pub begin: u64,
    pub end: u64,
    pub policy: PublishedPolicy,
    /// Messages over every record (each record's `count`).
    pub messages: u64,
    /// Messages DMARC passed: DKIM or SPF aligned and passing (§3.1,
    /// `policy_evaluated`), and those it failed.
    pub pass: u64,
    pub fail: u64,
    pub rows: Vec<DmarcRow>,
    /// Records beyond `MAX_ROWS`, counted in the totals only.
    pub rows_omitted: usize,
}

/// `policy_published`: what the domain's record said.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PublishedPolicy {
    pub domain: String,
    pub adkim: String,
    pub aspf: String,
    pub p: String,
    pub sp: String,
    pub fo: Option<String>,
}

/// One `record`: a source address and what the receiver made of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DmarcRow {
    pub source_ip: Option<String>,
    pub count: u32,
    /// The policy applied (`policy_evaluated/disposition`).
    pub disposition: String,
    /// Aligned DKIM and SPF as DMARC evaluated them.
    pub dkim: String,
    pub spf: String,
    /// `pass` when either passed (RFC 7489 §4.2).
    pub dmarc: String,
    pub header_from: String,
    pub envelope_from: String,
}

/// A TLS-RPT report (RFC 8460 §4.4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TlsSummary {
    pub org_name: String,
    pub report_id: String,
    pub contact_info: String,
    /// `date-range`, seconds since the epoch.
    pub begin: i64,
    pub end: i64,
    pub successful: u64,
    pub failed: u64,
    pub policies: Vec<TlsPolicy>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TlsPolicy {
    pub policy_type: String,
    pub policy_domain: String,
    pub mx_host: Vec<String>,
    pub successful: u32,
    pub failed: u32,
    pub failures: Vec<TlsFailure>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TlsFailure {
    pub result_type: String,
    pub sending_mta_ip: Option<String>,
    pub receiving_mx_hostname: Option<String>,
    pub receiving_ip: Option<String>,
    pub failed_sessions: u32,
    pub failure_reason_code: Option<String>,
    pub additional_information: Option<String>,
}

pub(crate) fn dmarc(r: &Report) -> DmarcSummary {
    let m = &r.report_metadata;
    let p = &r.policy_published;
    let mut s = DmarcSummary {
        org_name: clip(&m.org_name),
        email: clip(&m.email),
        report_id: clip(&m.report_id),
        begin: m.date_range.begin,
        end: m.date_range.end,
        policy: PublishedPolicy {
            domain: clip(&p.domain),
            adkim: alignment(p.adkim).into(),
            aspf: alignment(p.aspf).into(),
            p: disposition(p.p).into(),
            sp: disposition(p.sp).into(),
            fo: p.fo.as_deref().map(clip),
        },
        messages: 0,
        pass: 0,
        fail: 0,
        rows: Vec::new(),
        rows_omitted: 0,
    };
    for rec in &r.record {
        let row = row(rec);
        let n = u64::from(row.count);
        s.messages = s.messages.saturating_add(n);
        if row.dmarc == "pass" {
            s.pass = s.pass.saturating_add(n);
        } else {
            s.fail = s.fail.saturating_add(n);
        }
        if s.rows.len() < MAX_ROWS {
            s.rows.push(row);
        } else {
            s.rows_omitted += 1;
        }
    }
    s
}

fn row(rec: &Record) -> DmarcRow {
    let e = &rec.row.policy_evaluated;
    let pass = e.dkim == DmarcResult::Pass || e.spf == DmarcResult::Pass;
    DmarcRow {
        source_ip: rec.row.source_ip.map(|ip| ip.to_string()),
        count: rec.row.count,
        disposition: action(e.disposition).into(),
        dkim: result(e.dkim).into(),
        spf: result(e.spf).into(),
        dmarc: if pass { "pass" } else { "fail" }.into(),
        header_from: clip(&rec.identifiers.header_from),
        envelope_from: clip(&rec.identifiers.envelope_from),
    }
}

pub(crate) fn tls(r: &TlsReport) -> TlsSummary {
    let policies: Vec<TlsPolicy> = r.policies.iter().take(MAX_POLICIES).map(policy).collect();
    TlsSummary {
        org_name: clip(r.organization_name.as_deref().unwrap_or("")),
        report_id: clip(&r.report_id),
        contact_info: clip(r.contact_info.as_deref().unwrap_or("")),
        begin: r.date_range.start_datetime.to_timestamp(),
        end: r.date_range.end_datetime.to_timestamp(),
        // Over every policy, not only those kept.
        successful: r
            .policies
            .iter()
            .map(|p| u64::from(p.summary.total_success))
            .sum(),
        failed: r
            .policies
            .iter()
            .map(|p| u64::from(p.summary.total_failure))
            .sum(),
        policies,
    }
}

fn policy(p: &Policy) -> TlsPolicy {
    TlsPolicy {
        policy_type: serde_name(&p.policy.policy_type),
        policy_domain: clip(&p.policy.policy_domain),
        mx_host: p
            .policy
            .mx_host
            .iter()
            .take(MAX_FAILURES)
            .map(|h| clip(h))
            .collect(),
        successful: p.summary.total_success,
        failed: p.summary.total_failure,
        failures: p
            .failure_details
            .iter()
            .take(MAX_FAILURES)
            .map(failure)
            .collect(),
    }
}

fn failure(f: &FailureDetails) -> TlsFailure {
    TlsFailure {
        result_type: serde_name(&f.result_type),
        sending_mta_ip: f.sending_mta_ip.map(|ip| ip.to_string()),
        receiving_mx_hostname: f.receiving_mx_hostname.as_deref().map(clip),
        receiving_ip: f.receiving_ip.map(|ip| ip.to_string()),
        failed_sessions: f.failed_session_count,
        failure_reason_code: f.failure_reason_code.as_deref().map(clip),
        additional_information: f.additional_information.as_deref().map(clip),
    }
}

/// The RFC 8460 name of a mail-auth enum (its serde renames are the
/// RFC's names); `other` for what it does not know.
fn serde_name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) if s != "Other" => s,
        _ => "other".into(),
    }
}

fn alignment(a: Alignment) -> &'static str {
    match a {
        Alignment::Relaxed => "r",
        Alignment::Strict => "s",
        Alignment::Unspecified => "",
    }
}

fn disposition(d: Disposition) -> &'static str {
    match d {
        Disposition::None => "none",
        Disposition::Quarantine => "quarantine",
        Disposition::Reject => "reject",
        Disposition::Unspecified => "",
    }
}

fn action(d: ActionDisposition) -> &'static str {
    match d {
        ActionDisposition::None => "none",
        ActionDisposition::Pass => "pass",
        ActionDisposition::Quarantine => "quarantine",
        ActionDisposition::Reject => "reject",
        ActionDisposition::Unspecified => "",
    }
}

fn result(r: DmarcResult) -> &'static str {
    match r {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail => "fail",
        DmarcResult::Unspecified => "",
    }
}

/// At most `MAX_TEXT` characters, with control characters dropped (they
/// reach the log, the API and the dashboard).
pub(crate) fn clip(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(MAX_TEXT)
        .collect()
}
