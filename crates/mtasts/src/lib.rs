//! MTA-STS (RFC 8461) as plain logic, with no sockets and no clock: the
//! `_mta-sts` TXT record (§3.1), the policy file (§3.2), which MX hosts a
//! policy allows (§4.1), and whether a cached policy still holds (§5.1).
//! Fetching over HTTPS, caching on disk and enforcing at delivery live in
//! `crates/delivery`; this crate must not touch the network or the disk.

use serde::{Deserialize, Serialize};

/// RFC 8461 §3.2: max_age is at most 31557600 seconds (about a year).
pub const MAX_AGE_LIMIT: u64 = 31_557_600;
/// §3.3: senders may limit the policy body; 64 KiB is the RFC's own
/// example of a reasonable bound.
pub const MAX_POLICY_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StsError {
    #[error("not an MTA-STS record: {0}")]
    Record(&'static str),
    #[error("MTA-STS policy: {0}")]
    Policy(String),
}

/// The `_mta-sts.DOMAIN` TXT record: its `id` says when the policy changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsRecord {
    pub id: String,
}

/// Parse one TXT record (its strings joined). §3.1: `v=STSv1` first, then
/// `id=` of 1 to 32 letters and digits; other fields are ignored.
pub fn parse_record(txt: &str) -> Result<StsRecord, StsError> {
    let mut fields = txt.split(';').map(str::trim).filter(|f| !f.is_empty());
    if fields.next() != Some("v=STSv1") {
        return Err(StsError::Record("it does not start with v=STSv1"));
    }
    let id = fields
        .filter_map(|f| f.split_once('='))
        .find(|(k, _)| k.trim() == "id")
        .map(|(_, v)| v.trim().to_owned())
        .ok_or(StsError::Record("it has no id"))?;
    if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(StsError::Record("its id is not 1 to 32 letters and digits"));
    }
    Ok(StsRecord { id })
}

/// Of a domain's TXT records at `_mta-sts`, the one MTA-STS record; §3.1:
/// none, or more than one, means the domain has no policy.
pub fn pick_record<'a>(txts: impl IntoIterator<Item = &'a str>) -> Option<StsRecord> {
    let mut found = txts.into_iter().filter(|t| t.starts_with("v=STSv1"));
    let one = found.next()?;
    if found.next().is_some() {
        return None;
    }
    parse_record(one).ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only matching MX hosts, only over verified TLS.
    Enforce,
    /// Deliver as before, report what would have failed (TLS-RPT).
    Testing,
    /// The domain withdrew its policy.
    None,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub mode: Mode,
    /// MX patterns: a host name, or `*.` and a name (one leftmost label).
    pub mx: Vec<String>,
    pub max_age: u64,
}

/// Parse a policy file (§3.2): `key: value` lines ending in CRLF or LF,
/// `version: STSv1` first; mode and max_age required, mx required unless
/// mode is none; unknown keys ignored.
pub fn parse_policy(text: &str) -> Result<Policy, StsError> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(StsError::Policy(format!(
            "larger than {MAX_POLICY_BYTES} bytes"
        )));
    }
    let bad = |why: String| StsError::Policy(why);
    let mut lines = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty());
    let (mut mode, mut max_age, mut mx) = (None, None, Vec::new());
    match lines.next().and_then(|l| l.split_once(':')) {
        Some((k, v)) if k.trim() == "version" && v.trim() == "STSv1" => {}
        _ => return Err(bad("the first line is not \"version: STSv1\"".into())),
    }
    for line in lines {
        let (key, value) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("{line:?} is not \"key: value\"")))?;
        let value = value.trim();
        match key.trim() {
            "mode" => {
                mode = Some(match value {
                    "enforce" => Mode::Enforce,
                    "testing" => Mode::Testing,
                    "none" => Mode::None,
                    other => return Err(bad(format!("unknown mode {other:?}"))),
                })
            }
            "max_age" => {
                let secs: u64 = value
                    .parse()
                    .map_err(|_| bad(format!("max_age {value:?} is not a number")))?;
                // §3.2: "maximum value of 31557600"; beyond it the policy
                // is invalid (as postfix-mta-sts-resolver reads it too).
                if secs > MAX_AGE_LIMIT {
                    return Err(bad(format!("max_age {secs} is more than {MAX_AGE_LIMIT}")));
                }
                max_age = Some(secs);
            }
            "mx" => mx.push(
                valid_pattern(value)
                    .ok_or_else(|| bad(format!("mx {value:?} is not a host name")))?,
            ),
            _ => {}
        }
    }
    let mode = mode.ok_or_else(|| bad("no mode".into()))?;
    let max_age = max_age.ok_or_else(|| bad("no max_age".into()))?;
    if mx.is_empty() && mode != Mode::None {
        return Err(bad("no mx".into()));
    }
    Ok(Policy { mode, mx, max_age })
}

fn valid_pattern(value: &str) -> Option<String> {
    let p = value.trim_end_matches('.').to_ascii_lowercase();
    let name = p.strip_prefix("*.").unwrap_or(&p);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    ok.then_some(p)
}

impl Policy {
    /// The policy file as served (§3.2), CRLF line endings; what
    /// [`parse_policy`] reads back.
    pub fn to_text(&self) -> String {
        let mut out = format!("version: STSv1\r\nmode: {}\r\n", self.mode.name());
        for mx in &self.mx {
            out.push_str(&format!("mx: {mx}\r\n"));
        }
        out.push_str(&format!("max_age: {}\r\n", self.max_age));
        out
    }

    /// An id for the `_mta-sts` TXT record that changes whenever the
    /// policy text does (§3.1: 1 to 32 letters and digits): FNV-1a.
    pub fn id(&self) -> String {
        let hash = self
            .to_text()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        format!("{hash:016x}")
    }

    /// §4.1: an MX host is allowed if it equals a pattern, or if a
    /// `*.`-pattern's rest equals the host minus its leftmost label (the
    /// wildcard stands for exactly one label).
    pub fn allows(&self, mx_host: &str) -> bool {
        let host = mx_host.trim_end_matches('.').to_ascii_lowercase();
        self.mx.iter().any(|p| match p.strip_prefix("*.") {
            Some(rest) => host.split_once('.').is_some_and(|(_, tail)| tail == rest),
            None => *p == host,
        })
    }
}

/// A policy as fetched, with its record's id and when it was fetched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cached {
    pub policy: Policy,
    pub id: String,
    pub fetched_at: u64,
}

/// What to do about a domain's policy, given the cache and what DNS says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh {
    /// The cached policy holds: use it.
    UseCached,
    /// Fetch the policy (no cache, an expired one, or a new id).
    Fetch,
    /// No record and nothing cached: the domain has no policy.
    NoPolicy,
}

impl Cached {
    pub fn expired(&self, now: u64) -> bool {
        now >= self.fetched_at.saturating_add(self.policy.max_age)
    }
}

/// §5.1: a cached, unexpired policy is used while the record's id is the
/// same, and also when the record is gone or DNS fails (an attacker could
/// suppress it); a changed id means fetching again.
pub fn refresh(cached: Option<&Cached>, record: Option<&StsRecord>, now: u64) -> Refresh {
    match (cached.filter(|c| !c.expired(now)), record) {
        (Some(c), Some(r)) if c.id != r.id => Refresh::Fetch,
        (Some(_), _) => Refresh::UseCached,
        (None, Some(_)) => Refresh::Fetch,
        (None, None) => Refresh::NoPolicy,
    }
}

#[cfg(test)]
mod tests;
