//! DMARC aggregate reports (RFC 7489 §7.2) as plain logic: what one
//! accepted message contributes ([`Observation`]), the period's rows per
//! policy domain, bounded in size ([`Period`]), which domains get a report and where
//! ([`plan`], [`Destination`]), and the XML of Appendix C ([`xml`]).
//!
//! It must not do I/O: the server records observations, asks DNS for the
//! §7.1 check, composes, signs and queues.
//!
//! The rules against becoming a report cannon (a spam run of domains that
//! publish `rua` must not make us send hundreds of reports) live here:
//! only mail we accepted is observed, a domain is reported only when some
//! of its mail was identified (an aligned SPF or DKIM pass), at most once
//! per day, never when excluded, and never more than the cap per run.

mod plan;
mod xml;

pub use plan::{Destination, Ledger, Plan, confirms_external, plan};
pub use xml::{Reporter, xml};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The policy the domain published, as the report repeats it
/// (Appendix C `PolicyPublishedType`).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Published {
    /// Where the record was found: the From: domain or its
    /// organizational domain.
    pub domain: String,
    pub adkim: String,
    pub aspf: String,
    pub p: String,
    pub sp: String,
    pub pct: u8,
    pub fo: String,
    /// The `rua` URIs as published (`mailto:a@b!10m`).
    pub rua: Vec<String>,
}

/// One DKIM signature's result, uninterpreted by DMARC.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DkimAuth {
    pub domain: String,
    pub selector: String,
    pub result: String,
}

/// What one accepted message contributes to its policy domain's report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub published: Published,
    #[serde(flatten)]
    pub row: Row,
}

impl Observation {
    /// Identified: the mail authenticated as its From: domain (an aligned
    /// pass), so a report about it goes to the domain's real owner.
    pub fn identified(&self) -> bool {
        self.row.dkim_aligned || self.row.spf_aligned
    }
}

/// A report row: messages alike in everything the report shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Row {
    pub source_ip: String,
    pub header_from: String,
    pub envelope_from: String,
    /// What we did: `none` or `quarantine` (refused mail is never
    /// observed).
    pub disposition: String,
    pub dkim_aligned: bool,
    pub spf_aligned: bool,
    /// The policy was milder than published because of `pct`.
    pub sampled_out: bool,
    pub dkim: Vec<DkimAuth>,
    /// The SPF result for the MAIL FROM domain (`mfrom`), or for the
    /// HELO name when the sender was null (`helo`).
    pub spf_domain: String,
    pub spf_scope: String,
    pub spf_result: String,
}

/// One policy domain's part of the period.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainPeriod {
    /// The policy as last seen (a record changed mid-period is reported
    /// as it stood at the end).
    pub published: Option<Published>,
    #[serde(with = "pairs")]
    pub rows: BTreeMap<Row, u64>,
    /// Some message was identified as the domain's own.
    pub identified: bool,
}

impl DomainPeriod {
    pub fn messages(&self) -> u64 {
        self.rows.values().sum()
    }
}

/// The observations of one period, per policy domain, held in memory
/// with bounds: a flood of spoofed domains or rotating addresses must not
/// grow it without end.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    pub domains: BTreeMap<String, DomainPeriod>,
    /// Observations left out because a bound was reached.
    pub dropped: u64,
}

/// At most this many policy domains per period.
pub const MAX_DOMAINS: usize = 10_000;
/// At most this many distinct rows per domain and period.
pub const MAX_ROWS: usize = 1_000;

impl Period {
    /// Count the observation in; false (and counted as dropped) when a
    /// bound leaves no room for it.
    pub fn add(&mut self, o: &Observation) -> bool {
        let domain = o.published.domain.to_ascii_lowercase();
        if !self.domains.contains_key(&domain) && self.domains.len() >= MAX_DOMAINS {
            self.dropped += 1;
            return false;
        }
        let d = self.domains.entry(domain).or_default();
        let key = o.row.clone();
        if !d.rows.contains_key(&key) && d.rows.len() >= MAX_ROWS {
            self.dropped += 1;
            return false;
        }
        d.identified |= o.identified();
        *d.rows.entry(key).or_insert(0) += 1;
        d.published = Some(o.published.clone());
        true
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// Count another node's period of the same interval in, under the
    /// same bounds (what does not fit is counted as dropped).
    pub fn merge(&mut self, other: Period) {
        self.dropped += other.dropped;
        for (domain, theirs) in other.domains {
            if !self.domains.contains_key(&domain) && self.domains.len() >= MAX_DOMAINS {
                self.dropped += theirs.messages();
                continue;
            }
            let ours = self.domains.entry(domain).or_default();
            ours.identified |= theirs.identified;
            if theirs.published.is_some() {
                ours.published = theirs.published;
            }
            for (row, n) in theirs.rows {
                if !ours.rows.contains_key(&row) && ours.rows.len() >= MAX_ROWS {
                    self.dropped += n;
                    continue;
                }
                *ours.rows.entry(row).or_insert(0) += n;
            }
        }
    }
}

/// A map with structured keys as a JSON list of pairs.
mod pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests;
