//! Which domains get a report this run, and where it may go.

use crate::Period;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// When each domain last got a report, in days since the epoch: at most
/// one report per domain per day, across restarts (the server keeps it
/// in a file).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub last_sent_day: BTreeMap<String, u64>,
}

impl Ledger {
    pub fn sent(&mut self, domain: &str, day: u64) {
        self.last_sent_day.insert(domain.to_owned(), day);
        // Forget domains not reported for a month: the file stays small.
        self.last_sent_day
            .retain(|_, d| d.saturating_add(31) >= day);
    }

    fn sent_on(&self, domain: &str, day: u64) -> bool {
        self.last_sent_day.get(domain) == Some(&day)
    }
}

/// The outcome of [`plan`]: domains to report, in order, and the others
/// with the reason they get nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub send: Vec<String>,
    pub skipped: Vec<(String, &'static str)>,
}

/// The anti-cannon rules, in order: a domain none of whose mail was
/// identified gets nothing (its From: may be forged, and the report
/// would go to whoever the forger named); an excluded domain (or a
/// subdomain of one) gets nothing; a domain already reported today gets
/// nothing; and no more than `cap` reports leave in one run.
pub fn plan(period: &Period, exclude: &[String], cap: u32, ledger: &Ledger, day: u64) -> Plan {
    let mut out = Plan::default();
    for (domain, d) in &period.domains {
        let excluded = exclude
            .iter()
            .any(|x| domain == x || domain.ends_with(&format!(".{x}")));
        let why = if !d.identified {
            Some("no message was identified as the domain's own (SPF or DKIM aligned pass)")
        } else if excluded {
            Some("excluded by [dmarc] report_exclude")
        } else if ledger.sent_on(domain, day) {
            Some("already reported today")
        } else if out.send.len() >= cap as usize {
            Some("over [dmarc] report_daily_cap")
        } else if d.published.as_ref().is_none_or(|p| p.rua.is_empty()) {
            Some("no rua")
        } else {
            None
        };
        match why {
            Some(why) => out.skipped.push((domain.clone(), why)),
            None => out.send.push(domain.clone()),
        }
    }
    out
}

/// One `rua` destination (RFC 7489 §6.2): a mailto: address and the
/// largest report it takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    pub address: String,
    /// Bytes; None when no limit was given.
    pub max_size: Option<u64>,
}

impl Destination {
    /// `mailto:addr[!size[unit]]`; None for other schemes or a URI
    /// without an address.
    pub fn parse(uri: &str) -> Option<Destination> {
        let uri = uri.trim();
        let rest = uri
            .get(..7)
            .filter(|s| s.eq_ignore_ascii_case("mailto:"))
            .map(|_| &uri[7..])?;
        let (address, size) = match rest.split_once('!') {
            Some((a, s)) => (a, Some(s)),
            None => (rest, None),
        };
        let address = percent_decode(address.split('?').next().unwrap_or(address));
        let (local, domain) = address.rsplit_once('@')?;
        if local.is_empty() || domain.is_empty() || address.contains(char::is_whitespace) {
            return None;
        }
        Some(Destination {
            address: format!("{local}@{}", domain.to_ascii_lowercase()),
            max_size: size.and_then(parse_size),
        })
    }

    pub fn domain(&self) -> &str {
        self.address.rsplit_once('@').map_or("", |(_, d)| d)
    }

    /// §7.1: a destination outside the policy domain's organizational
    /// domain must confirm it takes reports for it; the TXT name to ask,
    /// or None when no check is needed.
    pub fn external_check(
        &self,
        policy_domain: &str,
        org: impl Fn(&str) -> String,
    ) -> Option<String> {
        let ours = org(policy_domain);
        (org(self.domain()) != ours)
            .then(|| format!("{policy_domain}._report._dmarc.{}", self.domain()))
    }
}

/// §7.1: the destination's confirmation is a TXT record that begins with
/// `v=DMARC1`.
pub fn confirms_external(txts: &[String]) -> bool {
    txts.iter().any(|t| crate::plan::is_dmarc1(t))
}

fn is_dmarc1(text: &str) -> bool {
    text.split(';')
        .next()
        .is_some_and(|v| v.trim().replace(' ', "").eq_ignore_ascii_case("v=DMARC1"))
}

/// `10m`, `500k`, `1g`, `1t`, or plain bytes.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s.as_str(), ""),
    };
    let n: u64 = digits.parse().ok()?;
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

/// URIs in DMARC records may percent-encode `,` and `!` (§6.4).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
