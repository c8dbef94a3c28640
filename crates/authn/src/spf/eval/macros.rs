//! Domain-specs and macros (RFC 7208 §4.8, §7): expanding a macro-string
//! with the values of the current check into the name to query (or the
//! explanation text), and truncating over-long names. Parsing macro
//! strings is the record grammar's job, not this file's.

use super::mechanisms::is_within;
use super::{Abort, Evaluation};
use crate::spf::SpfDns;
use crate::spf::record::{Macro, MacroString, Piece};
use std::net::IpAddr;

impl<D: SpfDns> Evaluation<'_, D> {
    pub(super) async fn optional_target(
        &mut self,
        spec: Option<&MacroString>,
        domain: &str,
    ) -> Result<String, Abort> {
        match spec {
            Some(spec) => self.target(spec, domain).await,
            None => Ok(domain.to_owned()),
        }
    }

    /// A domain-spec expanded into the name to query (§4.8, §7.3).
    pub(super) async fn target(
        &mut self,
        spec: &MacroString,
        domain: &str,
    ) -> Result<String, Abort> {
        let p = self.p_value(spec, domain).await;
        let expanded = self.expand(spec, domain, &p);
        Ok(truncate(&expanded))
    }

    /// The `p` macro's value, looked up only when the string uses it.
    pub(super) async fn p_value(&mut self, spec: &MacroString, domain: &str) -> String {
        if !spec.uses('p') {
            return String::new();
        }
        let names = self.validated_names().await.unwrap_or_default();
        names
            .iter()
            .find(|n| is_within(n, domain))
            .or(names.first())
            .map_or_else(
                || "unknown".to_owned(),
                |n| n.trim_end_matches('.').to_owned(),
            )
    }

    pub(super) fn expand(&self, spec: &MacroString, domain: &str, p: &str) -> String {
        let values = MacroValues {
            sender_local: self.local,
            sender_domain: self.sender_domain,
            domain,
            ip: self.ip,
            helo: self.helo,
            receiver: self.receiver,
            now: self.now,
            p,
        };
        values.expand(spec)
    }
}

/// §4.8: an expanded name longer than 253 octets loses labels from the
/// left until it fits.
pub(super) fn truncate(name: &str) -> String {
    let mut name = name.trim_end_matches('.');
    while name.len() > 253 {
        match name.split_once('.') {
            Some((_, rest)) => name = rest,
            None => break,
        }
    }
    name.to_owned()
}

/// The values macros expand to (§7.2).
struct MacroValues<'a> {
    sender_local: &'a str,
    sender_domain: &'a str,
    domain: &'a str,
    ip: IpAddr,
    helo: &'a str,
    receiver: &'a str,
    now: u64,
    p: &'a str,
}

impl MacroValues<'_> {
    fn expand(&self, spec: &MacroString) -> String {
        spec.0
            .iter()
            .map(|piece| match piece {
                Piece::Literal(t) => t.clone(),
                Piece::Escape(t) => (*t).to_owned(),
                Piece::Macro(m) => transform(&self.value(m.letter), m),
            })
            .collect()
    }

    fn value(&self, letter: char) -> String {
        match letter {
            's' => format!("{}@{}", self.sender_local, self.sender_domain),
            'l' => self.sender_local.to_owned(),
            'o' => self.sender_domain.to_owned(),
            'd' => self.domain.to_owned(),
            'i' => dotted_ip(self.ip),
            'p' => self.p.to_owned(),
            'v' => if self.ip.is_ipv4() { "in-addr" } else { "ip6" }.to_owned(),
            'h' => self.helo.to_owned(),
            'c' => self.ip.to_string(),
            'r' => self.receiver.to_owned(),
            't' => self.now.to_string(),
            _ => String::new(),
        }
    }
}

/// `i`: dotted decimal, or (§7.3) 32 dot-separated nibbles for IPv6.
fn dotted_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let hex: Vec<String> = v6
                .octets()
                .iter()
                .flat_map(|b| [b >> 4, b & 0xf])
                .map(|n| format!("{n:x}"))
                .collect();
            hex.join(".")
        }
    }
}

/// Split on the delimiters, maybe reverse, keep the rightmost parts,
/// join with dots; URL-escape for an upper-case letter (§7.3).
fn transform(value: &str, m: &Macro) -> String {
    let delimiters = if m.delimiters.is_empty() {
        "."
    } else {
        m.delimiters.as_str()
    };
    let mut parts: Vec<&str> = value.split(|c| delimiters.contains(c)).collect();
    if m.reverse {
        parts.reverse();
    }
    if let Some(keep) = m.keep {
        let skip = parts.len().saturating_sub(keep);
        parts.drain(..skip);
    }
    let joined = parts.join(".");
    if m.escape {
        url_escape(&joined)
    } else {
        joined
    }
}

fn url_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
