//! SMTP TLS Reporting (RFC 8460) as plain logic, with no sockets and no
//! clock: the result types of a session (§4.3), the counts a sending MTA
//! keeps per policy (§4.4: successful and failed sessions, failures by
//! type and receiving MX), the JSON report made from them, and the `rua`
//! of a `_smtp._tls` TXT record (§3). Recording at delivery, sending the
//! daily report and `/metrics` live at the edge (`crates/server`).

use serde::{Deserialize, Serialize};

mod saved;
pub use saved::SavedPolicy;
use std::collections::BTreeMap;

/// §4.3: why a session failed (the subset a sender can tell).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    StarttlsNotSupported,
    CertificateHostMismatch,
    CertificateExpired,
    CertificateNotTrusted,
    ValidationFailure,
    TlsaInvalid,
    DnssecInvalid,
    StsPolicyFetchError,
}

/// Each failure with its RFC 8460 §4.3 result-type name.
const NAMES: [(Failure, &str); 8] = [
    (Failure::StarttlsNotSupported, "starttls-not-supported"),
    (
        Failure::CertificateHostMismatch,
        "certificate-host-mismatch",
    ),
    (Failure::CertificateExpired, "certificate-expired"),
    (Failure::CertificateNotTrusted, "certificate-not-trusted"),
    (Failure::ValidationFailure, "validation-failure"),
    (Failure::TlsaInvalid, "tlsa-invalid"),
    (Failure::DnssecInvalid, "dnssec-invalid"),
    (Failure::StsPolicyFetchError, "sts-policy-fetch-error"),
];

impl Failure {
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(f, _)| *f == self)
            .map_or("validation-failure", |(_, n)| n)
    }

    /// The failure `name` spells, as [`Failure::name`] gives it.
    pub fn from_name(name: &str) -> Option<Failure> {
        NAMES.iter().find(|(_, n)| *n == name).map(|(f, _)| *f)
    }

    /// What a TLS handshake error says, by rustls' wording.
    pub fn of_handshake(error: &str) -> Failure {
        let e = error.to_ascii_lowercase();
        if e.contains("notvalidforname") || e.contains("not valid for name") {
            Failure::CertificateHostMismatch
        } else if e.contains("expired") {
            Failure::CertificateExpired
        } else if e.contains("unknownissuer")
            || e.contains("unknown issuer")
            || e.contains("badsignature")
        {
            Failure::CertificateNotTrusted
        } else {
            Failure::ValidationFailure
        }
    }
}

/// Which policy a session was held to (§4.4 `policy`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PolicyKey {
    /// `sts` or `tlsa`.
    pub policy_type: &'static str,
    pub policy_domain: String,
    /// The policy's text, line by line (`sts`), or the TLSA records.
    pub policy_string: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyCounts {
    pub successful: u64,
    pub failed: u64,
    pub mx_hosts: Vec<String>,
    /// (result type, receiving MX) → sessions.
    pub failures: BTreeMap<(Failure, String), u64>,
}

/// One reporting period's counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Vec<SavedPolicy>", from = "Vec<SavedPolicy>")]
pub struct Counts {
    pub by_policy: BTreeMap<PolicyKey, PolicyCounts>,
}

impl Counts {
    pub fn success(&mut self, policy: PolicyKey, mx: &str) {
        let c = self.entry(policy, mx);
        c.successful += 1;
    }

    pub fn failure(&mut self, policy: PolicyKey, mx: &str, why: Failure) {
        let c = self.entry(policy, mx);
        c.failed += 1;
        *c.failures.entry((why, mx.to_owned())).or_default() += 1;
    }

    fn entry(&mut self, policy: PolicyKey, mx: &str) -> &mut PolicyCounts {
        let c = self.by_policy.entry(policy).or_default();
        if !c.mx_hosts.iter().any(|m| m == mx) {
            c.mx_hosts.push(mx.to_owned());
        }
        c
    }

    /// Count another node's period of the same interval in.
    pub fn merge(&mut self, other: Counts) {
        for (key, theirs) in other.by_policy {
            let ours = self.by_policy.entry(key).or_default();
            ours.successful += theirs.successful;
            ours.failed += theirs.failed;
            for mx in theirs.mx_hosts {
                if !ours.mx_hosts.contains(&mx) {
                    ours.mx_hosts.push(mx);
                }
            }
            for (why, n) in theirs.failures {
                *ours.failures.entry(why).or_default() += n;
            }
        }
    }

    /// The policy domains with sessions in this period: one report each.
    pub fn domains(&self) -> Vec<String> {
        let mut d: Vec<String> = self
            .by_policy
            .keys()
            .map(|k| k.policy_domain.clone())
            .collect();
        d.dedup();
        d
    }
}

/// Who reports, and the period (RFC 3339 UTC).
pub struct Reporter<'a> {
    pub organization: &'a str,
    pub contact: &'a str,
    pub report_id: &'a str,
    pub start: &'a str,
    pub end: &'a str,
}

#[derive(Serialize)]
struct Report<'a> {
    #[serde(rename = "organization-name")]
    organization: &'a str,
    #[serde(rename = "date-range")]
    date_range: DateRange<'a>,
    #[serde(rename = "contact-info")]
    contact: &'a str,
    #[serde(rename = "report-id")]
    report_id: &'a str,
    policies: Vec<PolicyReport<'a>>,
}

#[derive(Serialize)]
struct DateRange<'a> {
    #[serde(rename = "start-datetime")]
    start: &'a str,
    #[serde(rename = "end-datetime")]
    end: &'a str,
}

#[derive(Serialize)]
struct PolicyReport<'a> {
    policy: PolicyJson<'a>,
    summary: Summary,
    #[serde(rename = "failure-details")]
    failure_details: Vec<FailureDetail<'a>>,
}

#[derive(Serialize)]
struct PolicyJson<'a> {
    #[serde(rename = "policy-type")]
    policy_type: &'a str,
    #[serde(rename = "policy-string")]
    policy_string: &'a [String],
    #[serde(rename = "policy-domain")]
    policy_domain: &'a str,
    #[serde(rename = "mx-host")]
    mx_host: &'a [String],
}

#[derive(Serialize)]
struct Summary {
    #[serde(rename = "total-successful-session-count")]
    successful: u64,
    #[serde(rename = "total-failure-session-count")]
    failed: u64,
}

#[derive(Serialize)]
struct FailureDetail<'a> {
    #[serde(rename = "result-type")]
    result_type: &'a str,
    #[serde(rename = "receiving-mx-hostname")]
    mx: &'a str,
    #[serde(rename = "failed-session-count")]
    count: u64,
}

/// §4.4: the JSON report for `domain` from this period's counts.
pub fn report_json(who: &Reporter<'_>, counts: &Counts, domain: &str) -> String {
    let policies = counts
        .by_policy
        .iter()
        .filter(|(k, _)| k.policy_domain == domain)
        .map(|(k, c)| PolicyReport {
            policy: PolicyJson {
                policy_type: k.policy_type,
                policy_string: &k.policy_string,
                policy_domain: &k.policy_domain,
                mx_host: &c.mx_hosts,
            },
            summary: Summary {
                successful: c.successful,
                failed: c.failed,
            },
            failure_details: c
                .failures
                .iter()
                .map(|((why, mx), n)| FailureDetail {
                    result_type: why.name(),
                    mx,
                    count: *n,
                })
                .collect(),
        })
        .collect();
    let report = Report {
        organization: who.organization,
        date_range: DateRange {
            start: who.start,
            end: who.end,
        },
        contact: who.contact,
        report_id: who.report_id,
        policies,
    };
    serde_json::to_string(&report).unwrap_or_default()
}

/// §3: the `mailto:` addresses of a `v=TLSRPTv1; rua=...` record (https
/// reporting is not used); None when the record is not TLS-RPT.
pub fn mailto_rua(txt: &str) -> Option<Vec<String>> {
    let mut fields = txt.split(';').map(str::trim);
    if fields.next() != Some("v=TLSRPTv1") {
        return None;
    }
    let rua = fields.find_map(|f| f.strip_prefix("rua="))?;
    Some(
        rua.split(',')
            .filter_map(|u| u.trim().strip_prefix("mailto:"))
            .map(|a| a.split('!').next().unwrap_or(a).to_owned())
            .filter(|a| a.contains('@'))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sts(domain: &str) -> PolicyKey {
        PolicyKey {
            policy_type: "sts",
            policy_domain: domain.into(),
            policy_string: vec!["version: STSv1".into(), "mode: enforce".into()],
        }
    }

    #[test]
    fn counts_sessions_and_failures_by_type_and_mx() {
        let mut c = Counts::default();
        c.success(sts("a.test"), "mx.a.test");
        c.success(sts("a.test"), "mx.a.test");
        c.failure(sts("a.test"), "mx2.a.test", Failure::CertificateNotTrusted);
        let p = &c.by_policy[&sts("a.test")];
        assert_eq!((p.successful, p.failed), (2, 1));
        assert_eq!(p.mx_hosts, ["mx.a.test", "mx2.a.test"]);
        assert_eq!(
            p.failures[&(Failure::CertificateNotTrusted, "mx2.a.test".into())],
            1
        );
    }

    #[test]
    fn the_report_has_the_rfc_8460_fields() {
        let mut c = Counts::default();
        c.success(sts("a.test"), "mx.a.test");
        c.failure(sts("a.test"), "mx.a.test", Failure::StarttlsNotSupported);
        c.success(sts("b.test"), "mx.b.test");
        let who = Reporter {
            organization: "mx.example.test",
            contact: "postmaster@example.test",
            report_id: "r1",
            start: "2026-11-29T00:00:00Z",
            end: "2026-11-30T00:00:00Z",
        };
        let v: serde_json::Value = serde_json::from_str(&report_json(&who, &c, "a.test")).unwrap();
        assert_eq!(v["organization-name"], "mx.example.test");
        assert_eq!(v["date-range"]["end-datetime"], "2026-11-30T00:00:00Z");
        let p = &v["policies"][0];
        assert_eq!(v["policies"].as_array().unwrap().len(), 1, "only a.test");
        assert_eq!(p["policy"]["policy-type"], "sts");
        assert_eq!(p["summary"]["total-successful-session-count"], 1);
        assert_eq!(p["summary"]["total-failure-session-count"], 1);
        assert_eq!(
            p["failure-details"][0]["result-type"],
            "starttls-not-supported"
        );
    }

    #[test]
    fn reads_the_mailto_rua() {
        assert_eq!(
            mailto_rua("v=TLSRPTv1; rua=mailto:tls@a.test,https://r.a.test/x, mailto:b@c.test!10m")
                .unwrap(),
            ["tls@a.test", "b@c.test"]
        );
        assert!(mailto_rua("v=spf1 -all").is_none());
    }

    #[test]
    fn handshake_errors_map_to_result_types() {
        assert_eq!(
            Failure::of_handshake("invalid peer certificate: NotValidForName"),
            Failure::CertificateHostMismatch
        );
        assert_eq!(
            Failure::of_handshake("invalid peer certificate: UnknownIssuer"),
            Failure::CertificateNotTrusted
        );
        assert_eq!(
            Failure::of_handshake("invalid peer certificate: Expired"),
            Failure::CertificateExpired
        );
    }
}
