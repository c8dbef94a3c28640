//! The network description file (TOML). Every mistake is reported with
//! its line and what is wrong.

use crate::prefix::Prefix;
use portcullis_config::{Cidr, Location};
use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, thiserror::Error)]
#[error("line {}, key `{}`: {message}", .at.line, .at.key)]
pub struct InputError {
    pub at: Location,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    dynamic: Vec<Spanned<String>>,
    #[serde(default, rename = "static")]
    static_blocks: Vec<Spanned<String>>,
    #[serde(default)]
    msa: Vec<Spanned<String>>,
    #[serde(default)]
    partner_msa: Vec<Spanned<String>>,
    #[serde(default = "default_point")]
    blocking_point: Spanned<u8>,
}

fn default_point() -> Spanned<u8> {
    Spanned::new(0..0, 3)
}

/// A validated network description.
#[derive(Clone, Debug)]
pub struct Network {
    pub dynamic: Vec<Prefix>,
    pub static_blocks: Vec<Prefix>,
    pub msa: Vec<Prefix>,
    /// Model-B partners' MSAs their subscribers reach on port 25 during
    /// the transition (§4.3.2).
    pub partner_msa: Vec<Prefix>,
    /// Figure 9: 1 home router, 2 access terminator, 3 edge of backbone,
    /// 4 core.
    pub blocking_point: u8,
}

pub fn parse(text: &str) -> Result<Network, InputError> {
    let err = |offset: usize, message: String| InputError {
        at: portcullis_config::locate(text, offset),
        message,
    };
    let raw: Raw = toml::from_str(text).map_err(|e| {
        let msg = e.message().lines().next().unwrap_or("").to_owned();
        err(e.span().map_or(0, |s| s.start), msg)
    })?;
    let blocks = |list: &[Spanned<String>]| -> Result<Vec<(Prefix, usize)>, InputError> {
        list.iter()
            .map(|s| {
                let c: Cidr = s
                    .get_ref()
                    .parse()
                    .map_err(|m: String| err(s.span().start, m))?;
                Ok((Prefix::from_cidr(c), s.span().start))
            })
            .collect()
    };
    let dynamic = blocks(&raw.dynamic)?;
    let static_blocks = blocks(&raw.static_blocks)?;
    for (d, _) in &dynamic {
        if let Some((s, at)) = static_blocks.iter().find(|(s, _)| s.overlaps(*d)) {
            return Err(err(
                *at,
                format!("static block {s} overlaps dynamic block {d}"),
            ));
        }
    }
    let point = *raw.blocking_point.get_ref();
    if !(1..=4).contains(&point) {
        return Err(err(
            raw.blocking_point.span().start,
            format!("blocking_point must be 1..4 (Figure 9), not {point}"),
        ));
    }
    if dynamic.is_empty() {
        return Err(err(0, "no dynamic blocks: nothing to filter".into()));
    }
    let strip = |v: Vec<(Prefix, usize)>| v.into_iter().map(|(p, _)| p).collect();
    Ok(Network {
        dynamic: strip(dynamic),
        static_blocks: strip(static_blocks),
        msa: strip(blocks(&raw.msa)?),
        partner_msa: strip(blocks(&raw.partner_msa)?),
        blocking_point: point,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
dynamic     = ["198.51.100.0/24", "2001:db8:100::/40"]
static      = ["203.0.113.0/24"]
msa         = ["192.0.2.25/32", "2001:db8::25/128"]
partner_msa = ["192.0.2.125/32"]
blocking_point = 3
"#;

    #[test]
    fn reads_the_issue_example() {
        let n = parse(EXAMPLE).unwrap();
        assert_eq!(n.dynamic.len(), 2);
        assert_eq!(n.msa.len(), 2);
        assert_eq!(n.partner_msa.len(), 1);
        assert_eq!(n.blocking_point, 3);
    }

    #[test]
    fn host_bits_are_an_error_with_the_line() {
        let e = parse("dynamic = [\"198.51.100.0/24\"]\nmsa = [\"192.0.2.1/24\"]\n").unwrap_err();
        assert_eq!((e.at.line, e.at.key.as_str()), (2, "msa"));
        assert!(e.message.contains("host bits"), "{e}");
    }

    #[test]
    fn overlapping_dynamic_and_static_is_an_error() {
        let e = parse("dynamic = [\"198.51.100.0/24\"]\nstatic = [\"198.51.100.128/25\"]\n")
            .unwrap_err();
        assert_eq!(e.at.line, 2);
        assert!(e.message.contains("overlaps"), "{e}");
    }

    #[test]
    fn unknown_key_and_bad_point() {
        assert!(
            parse("dynamic = [\"198.51.100.0/24\"]\nrouters = 1\n")
                .unwrap_err()
                .message
                .contains("unknown field")
        );
        let e = parse("dynamic = [\"198.51.100.0/24\"]\nblocking_point = 7\n").unwrap_err();
        assert_eq!(e.at.line, 2);
    }
}
