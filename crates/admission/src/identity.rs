//! Sender identities (the paper's "Identification"), from strongest to
//! weakest: an SPF-authenticated MAIL FROM domain, a DKIM `d=` domain, a
//! range on the known-sender list, the holder of the allocation the
//! client's address belongs to. Without any, the sender is unknown.

use portcullis_config::Cidr;
use std::collections::HashMap;
use std::net::IpAddr;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// SPF pass for the MAIL FROM domain, or DKIM pass for `d=`.
    Domain(String),
    /// A range on the known-sender list, by the name it was listed under.
    Known(String),
    /// The holder of the allocation (RDAP/WHOIS export) holding the client.
    Allocation(String),
    Unknown,
}

impl Identity {
    /// The key reputation and budgets are stored under.
    pub fn key(&self) -> String {
        match self {
            Identity::Domain(d) => format!("domain:{d}"),
            Identity::Known(n) => format!("known:{n}"),
            Identity::Allocation(h) => format!("alloc:{h}"),
            Identity::Unknown => "unknown".to_owned(),
        }
    }

    /// The inverse of [`Identity::key`]; a bare name is a domain, as an
    /// operator types it (`reputation show example.com`).
    pub fn parse(s: &str) -> Identity {
        match s.split_once(':') {
            Some(("domain", d)) => Identity::Domain(d.to_ascii_lowercase()),
            Some(("known", n)) => Identity::Known(n.to_owned()),
            Some(("alloc", h)) => Identity::Allocation(h.to_owned()),
            _ if s == "unknown" => Identity::Unknown,
            _ => Identity::Domain(s.trim_end_matches('.').to_ascii_lowercase()),
        }
    }

    /// The state key an operator means: `range:CIDR` as given, anything
    /// else parsed as an identity.
    pub fn key_of(s: &str) -> String {
        if s.starts_with("range:") {
            s.to_owned()
        } else {
            Identity::parse(s).key()
        }
    }

    pub fn is_known(&self) -> bool {
        *self != Identity::Unknown
    }

    /// Strength order of the paper's list: a domain outranks a range.
    fn rank(&self) -> u8 {
        match self {
            Identity::Domain(_) => 3,
            Identity::Known(_) => 2,
            Identity::Allocation(_) => 1,
            Identity::Unknown => 0,
        }
    }

    /// The stronger of two identities (the first on a tie).
    pub fn stronger(self, other: Identity) -> Identity {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }
}

/// Longest-prefix lookup in a table keyed by range: every range holding
/// the address is tried, most specific first.
pub fn longest_match<T>(table: &HashMap<Cidr, T>, ip: IpAddr) -> Option<(Cidr, &T)> {
    if table.is_empty() {
        return None;
    }
    Cidr::all_enclosing(ip)
        .into_iter()
        .find_map(|c| table.get(&c).map(|v| (c, v)))
}

/// Allocation data: prefix → holder, loaded from an export file.
#[derive(Clone, Debug, Default)]
pub struct Allocations {
    table: HashMap<Cidr, String>,
}

#[derive(Debug, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct AllocationsError {
    pub line: usize,
    pub message: String,
}

impl Allocations {
    /// One `PREFIX HOLDER` per line; `#` starts a comment. Allocations
    /// coarser than the minimum prefixes are left out: a /8 holder says
    /// nothing about the sender (the paper on coarse WEIRDS answers).
    pub fn parse(text: &str, min_v4: u8, min_v6: u8) -> Result<Allocations, AllocationsError> {
        let mut table = HashMap::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let err = |message: String| AllocationsError {
                line: n + 1,
                message,
            };
            let (prefix, holder) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| err("expected `PREFIX HOLDER`".into()))?;
            let cidr: Cidr = prefix.parse().map_err(err)?;
            let holder = holder.trim();
            if holder.is_empty() || holder.contains(char::is_whitespace) {
                return Err(err(format!("holder {holder:?} must be one word")));
            }
            let min = if cidr.is_ipv4() { min_v4 } else { min_v6 };
            if cidr.prefix >= min {
                table.insert(cidr, holder.to_owned());
            }
        }
        Ok(Allocations { table })
    }

    pub fn holder(&self, ip: IpAddr) -> Option<&str> {
        longest_match(&self.table, ip).map(|(_, h)| h.as_str())
    }

    /// Whether an allocation lies inside `prefix` (or holds it).
    pub fn any_within(&self, prefix: &Cidr) -> bool {
        self.table
            .keys()
            .any(|a| prefix.covers(a) || a.covers(prefix))
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}
