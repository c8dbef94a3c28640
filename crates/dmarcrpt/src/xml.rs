//! The report as RFC 7489 Appendix C lays it out: `feedback` with
//! `version`, `report_metadata`, `policy_published` and one `record` per
//! row, elements in the schema's order, without a namespace (as the
//! large receivers send it, and as Appendix C's schema validates once
//! its unusable targetNamespace is dropped).

use crate::{DomainPeriod, RowKey};
use std::fmt::Write as _;

/// Who reports, and the period.
#[derive(Clone, Debug)]
pub struct Reporter<'a> {
    pub org_name: &'a str,
    pub email: &'a str,
    pub report_id: &'a str,
    /// Seconds since the epoch, UTC.
    pub begin: u64,
    pub end: u64,
}

/// The XML report for one policy domain's period; empty when the domain
/// has no rows.
pub fn xml(who: &Reporter<'_>, period: &DomainPeriod) -> String {
    let Some(p) = &period.published else {
        return String::new();
    };
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feedback>\n");
    x.push_str("  <version>1.0</version>\n  <report_metadata>\n");
    element(&mut x, 4, "org_name", who.org_name);
    element(&mut x, 4, "email", who.email);
    element(&mut x, 4, "report_id", who.report_id);
    let _ = write!(
        x,
        "    <date_range>\n      <begin>{}</begin>\n      <end>{}</end>\n    </date_range>\n",
        who.begin, who.end
    );
    x.push_str("  </report_metadata>\n  <policy_published>\n");
    element(&mut x, 4, "domain", &p.domain);
    element(&mut x, 4, "adkim", one_of(&p.adkim, &["r", "s"]));
    element(&mut x, 4, "aspf", one_of(&p.aspf, &["r", "s"]));
    element(&mut x, 4, "p", one_of(&p.p, DISPOSITIONS));
    element(&mut x, 4, "sp", one_of(&p.sp, DISPOSITIONS));
    element(&mut x, 4, "pct", &p.pct.to_string());
    element(&mut x, 4, "fo", &p.fo);
    x.push_str("  </policy_published>\n");
    for (row, count) in &period.rows {
        record(&mut x, row, *count);
    }
    x.push_str("</feedback>\n");
    x
}

const DISPOSITIONS: &[&str] = &["none", "quarantine", "reject"];
/// RFC 7001 §2.6.1 as Appendix C's DKIMResultType lists them.
const DKIM_RESULTS: &[&str] = &[
    "none",
    "pass",
    "fail",
    "policy",
    "neutral",
    "temperror",
    "permerror",
];
const SPF_RESULTS: &[&str] = &[
    "none",
    "neutral",
    "pass",
    "fail",
    "softfail",
    "temperror",
    "permerror",
];

fn record(x: &mut String, row: &RowKey, count: u64) {
    let verdict = |pass: bool| if pass { "pass" } else { "fail" };
    x.push_str("  <record>\n    <row>\n");
    element(x, 6, "source_ip", &full_ip(&row.source_ip));
    element(x, 6, "count", &count.to_string());
    x.push_str("      <policy_evaluated>\n");
    element(x, 8, "disposition", one_of(&row.disposition, DISPOSITIONS));
    element(x, 8, "dkim", verdict(row.dkim_aligned));
    element(x, 8, "spf", verdict(row.spf_aligned));
    if row.sampled_out {
        x.push_str("        <reason>\n          <type>sampled_out</type>\n        </reason>\n");
    }
    x.push_str("      </policy_evaluated>\n    </row>\n    <identifiers>\n");
    element(x, 6, "envelope_from", &row.envelope_from);
    element(x, 6, "header_from", &row.header_from);
    x.push_str("    </identifiers>\n    <auth_results>\n");
    for d in &row.dkim {
        x.push_str("      <dkim>\n");
        element(x, 8, "domain", &d.domain);
        element(x, 8, "selector", &d.selector);
        element(x, 8, "result", one_of(&d.result, DKIM_RESULTS));
        x.push_str("      </dkim>\n");
    }
    let (domain, scope, result) = &row.spf;
    x.push_str("      <spf>\n");
    element(x, 8, "domain", domain);
    element(x, 8, "scope", one_of(scope, &["mfrom", "helo"]));
    element(x, 8, "result", one_of(result, SPF_RESULTS));
    x.push_str("      </spf>\n    </auth_results>\n  </record>\n");
}

/// A value the schema enumerates, else the first (most neutral) one: a
/// result word we never expect must not make the report invalid.
fn one_of<'a>(value: &'a str, allowed: &[&'a str]) -> &'a str {
    allowed
        .iter()
        .copied()
        .find(|a| *a == value)
        .unwrap_or(allowed[0])
}

fn element(x: &mut String, indent: usize, name: &str, value: &str) {
    let _ = writeln!(x, "{:indent$}<{name}>{}</{name}>", "", escape(value));
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// IPv6 in all eight groups: Appendix C's IPAddress pattern knows no
/// `::` shorthand.
fn full_ip(ip: &str) -> String {
    match ip.parse::<std::net::Ipv6Addr>() {
        Ok(v6) => v6
            .segments()
            .iter()
            .map(|s| format!("{s:x}"))
            .collect::<Vec<_>>()
            .join(":"),
        Err(_) => ip.to_owned(),
    }
}
