//! The DMARC policy record (RFC 7489 §6.3, §6.4): tag-value pairs after
//! `v=DMARC1`, with the fallbacks of §6.6.3 for a missing or invalid `p`.
//! Plain logic.

use crate::DmarcPolicy;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alignment {
    Relaxed,
    Strict,
}

impl Alignment {
    pub fn as_str(self) -> &'static str {
        match self {
            Alignment::Relaxed => "r",
            Alignment::Strict => "s",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmarcRecord {
    pub p: DmarcPolicy,
    /// For subdomains of the domain the record was found at; p if absent.
    pub sp: DmarcPolicy,
    pub adkim: Alignment,
    pub aspf: Alignment,
    /// Percentage of failing mail the policy applies to (§6.6.4).
    pub pct: u8,
    /// The `rua` URIs as published, `!size` suffix included (§6.2).
    pub rua: Vec<String>,
    /// Failure reporting options (`fo`, §6.3), repeated in reports.
    pub fo: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("the record does not begin with v=DMARC1")]
    NotDmarc,
    #[error("no valid p= tag and no valid rua= to fall back on")]
    NoPolicy,
}

/// Whether a TXT record is a DMARC record at all (§6.6.3 step 2): its
/// first tag is `v=DMARC1`.
pub fn is_dmarc(text: &str) -> bool {
    tags(text)
        .next()
        .is_some_and(|(k, v)| k == "v" && v == "DMARC1")
}

fn tags(text: &str) -> impl Iterator<Item = (String, &str)> {
    text.split(';')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| match t.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), v.trim()),
            None => (t.to_ascii_lowercase(), ""),
        })
}

fn policy(value: &str) -> Option<DmarcPolicy> {
    match value.to_ascii_lowercase().as_str() {
        "none" => Some(DmarcPolicy::None),
        "quarantine" => Some(DmarcPolicy::Quarantine),
        "reject" => Some(DmarcPolicy::Reject),
        _ => None,
    }
}

fn alignment(value: &str) -> Option<Alignment> {
    match value.to_ascii_lowercase().as_str() {
        "r" => Some(Alignment::Relaxed),
        "s" => Some(Alignment::Strict),
        _ => None,
    }
}

/// `mailto:` URIs of rua=, each with its `!size` suffix.
fn report_uris(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|u| u.len() > 7 && u[..7].eq_ignore_ascii_case("mailto:"))
        .map(str::to_owned)
        .collect()
}

pub fn parse(text: &str) -> Result<DmarcRecord, RecordError> {
    if !is_dmarc(text) {
        return Err(RecordError::NotDmarc);
    }
    let (mut p, mut sp) = (None, None);
    let mut sp_bad = false;
    let mut record = DmarcRecord {
        p: DmarcPolicy::None,
        sp: DmarcPolicy::None,
        adkim: Alignment::Relaxed,
        aspf: Alignment::Relaxed,
        pct: 100,
        rua: Vec::new(),
        fo: "0".to_owned(),
    };
    // Unknown tags, and unknown values of optional tags, are ignored
    // (§6.3: "unknown tags MUST be ignored").
    for (key, value) in tags(text).skip(1) {
        match key.as_str() {
            "p" => p = policy(value),
            "sp" => (sp, sp_bad) = (policy(value), policy(value).is_none()),
            "adkim" => record.adkim = alignment(value).unwrap_or(record.adkim),
            "aspf" => record.aspf = alignment(value).unwrap_or(record.aspf),
            "pct" => record.pct = value.parse().ok().filter(|n| *n <= 100).unwrap_or(100),
            "rua" => record.rua = report_uris(value),
            "fo" if !value.is_empty() => record.fo = value.to_owned(),
            _ => {}
        }
    }
    match p {
        // §6.6.3: without a valid p (or with an invalid sp), a record that
        // names a valid report address counts as p=none.
        Some(p) if !sp_bad => {
            record.p = p;
            record.sp = sp.unwrap_or(p);
        }
        _ if !record.rua.is_empty() => {}
        _ => return Err(RecordError::NoPolicy),
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sp_defaults_to_p() {
        let r = parse("v=DMARC1; p=reject").unwrap();
        assert_eq!(
            (r.p, r.sp, r.pct),
            (DmarcPolicy::Reject, DmarcPolicy::Reject, 100)
        );
    }

    #[test]
    fn a_record_without_p_counts_only_with_a_report_address() {
        assert_eq!(parse("v=DMARC1; adkim=s"), Err(RecordError::NoPolicy));
        let r = parse("v=DMARC1; rua=mailto:d@example.org").unwrap();
        assert_eq!(r.p, DmarcPolicy::None);
    }

    #[test]
    fn the_version_tag_comes_first() {
        assert_eq!(parse("p=reject; v=DMARC1"), Err(RecordError::NotDmarc));
        assert_eq!(parse("v=DMARC2; p=reject"), Err(RecordError::NotDmarc));
    }

    #[test]
    fn pct_out_of_range_is_ignored() {
        assert_eq!(parse("v=DMARC1; p=reject; pct=25").unwrap().pct, 25);
        assert_eq!(parse("v=DMARC1; p=reject; pct=250").unwrap().pct, 100);
    }

    #[test]
    fn rua_keeps_its_size_limit_and_fo_is_kept_for_reports() {
        let r = parse("v=DMARC1; p=none; rua=mailto:a@b.test!10m, mailto:c@d.test; fo=1").unwrap();
        assert_eq!(r.rua, ["mailto:a@b.test!10m", "mailto:c@d.test"]);
        assert_eq!(r.fo, "1");
        assert_eq!(parse("v=DMARC1; p=none").unwrap().fo, "0");
    }
}
