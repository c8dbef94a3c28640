//! Address blocks and their aggregation: fewer, larger blocks mean fewer
//! ACL entries, which is the cost the draft's formula counts.

use std::net::IpAddr;

/// An address block, v4 or v6, with host bits zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    /// The network as a number in a 128-bit space (v4 in the low 32 bits).
    bits: u128,
    pub len: u8,
    pub v6: bool,
}

impl Prefix {
    pub fn from_cidr(c: portcullis_config::Cidr) -> Prefix {
        match c.addr {
            IpAddr::V4(a) => Prefix {
                bits: u128::from(u32::from(a)),
                len: c.prefix,
                v6: false,
            },
            IpAddr::V6(a) => Prefix {
                bits: u128::from(a),
                len: c.prefix,
                v6: true,
            },
        }
    }

    fn width(self) -> u8 {
        if self.v6 { 128 } else { 32 }
    }

    fn size_log2(self) -> u8 {
        self.width() - self.len
    }

    /// First and last address as numbers.
    fn range(self) -> (u128, u128) {
        let span = if self.size_log2() == 128 {
            u128::MAX
        } else {
            (1u128 << self.size_log2()) - 1
        };
        (self.bits, self.bits | span)
    }

    pub fn contains(self, other: Prefix) -> bool {
        self.v6 == other.v6 && self.len <= other.len && {
            let (a, b) = self.range();
            let (c, d) = other.range();
            a <= c && d <= b
        }
    }

    pub fn overlaps(self, other: Prefix) -> bool {
        self.contains(other) || other.contains(self)
    }

    pub fn addr(self) -> IpAddr {
        if self.v6 {
            IpAddr::V6(self.bits.into())
        } else {
            IpAddr::V4((self.bits as u32).into())
        }
    }

    /// The Cisco wildcard mask (inverse netmask) of a v4 block.
    pub fn wildcard(self) -> std::net::Ipv4Addr {
        let span = if self.len == 0 {
            u32::MAX
        } else {
            (1u32 << (32 - self.len)).wrapping_sub(1)
        };
        span.into()
    }

    /// The block one bit shorter that contains this one and its sibling.
    fn parent(self) -> Option<Prefix> {
        let len = self.len.checked_sub(1)?;
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (self.width() - len)
        };
        let mask = if self.v6 { mask } else { mask & 0xffff_ffff };
        Some(Prefix {
            bits: self.bits & mask,
            len,
            v6: self.v6,
        })
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr(), self.len)
    }
}

/// The smallest set of blocks covering exactly the same addresses: drop
/// blocks inside others, then join sibling halves until none are left.
pub fn merge(blocks: &[Prefix]) -> Vec<Prefix> {
    let mut v: Vec<Prefix> = blocks.to_vec();
    v.sort();
    v.dedup();
    loop {
        let before = v.len();
        let mut kept: Vec<Prefix> = Vec::with_capacity(v.len());
        for p in v {
            if kept.iter().any(|k| k.contains(p)) {
                continue;
            }
            kept.retain(|k| !p.contains(*k));
            kept.push(p);
        }
        // Join pairs of siblings into their parent.
        kept.sort_by_key(|p| (p.v6, std::cmp::Reverse(p.len), p.bits));
        let mut joined: Vec<Prefix> = Vec::with_capacity(kept.len());
        let mut i = 0;
        while i < kept.len() {
            let p = kept[i];
            let sibling = kept.get(i + 1).copied();
            match (p.parent(), sibling) {
                (Some(parent), Some(s))
                    if s.len == p.len && s.v6 == p.v6 && s.parent() == Some(parent) && s != p =>
                {
                    joined.push(parent);
                    i += 2;
                }
                _ => {
                    joined.push(p);
                    i += 1;
                }
            }
        }
        joined.sort();
        v = joined;
        if v.len() == before {
            return v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        Prefix::from_cidr(s.parse().unwrap())
    }

    fn merged(list: &[&str]) -> Vec<String> {
        merge(&list.iter().map(|s| p(s)).collect::<Vec<_>>())
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn siblings_join_and_contained_blocks_vanish() {
        assert_eq!(
            merged(&["198.51.100.0/25", "198.51.100.128/25"]),
            vec!["198.51.100.0/24"]
        );
        assert_eq!(merged(&["10.0.0.0/8", "10.1.0.0/16"]), vec!["10.0.0.0/8"]);
        assert_eq!(
            merged(&[
                "192.0.2.0/26",
                "192.0.2.64/26",
                "192.0.2.128/26",
                "192.0.2.192/26"
            ]),
            vec!["192.0.2.0/24"]
        );
    }

    #[test]
    fn non_siblings_stay_apart() {
        // Adjacent but not halves of one block.
        assert_eq!(
            merged(&["192.0.2.64/26", "192.0.2.128/26"]),
            vec!["192.0.2.64/26", "192.0.2.128/26"]
        );
    }

    #[test]
    fn ipv6_merges_too() {
        assert_eq!(
            merged(&["2001:db8::/33", "2001:db8:8000::/33"]),
            vec!["2001:db8::/32"]
        );
        assert_eq!(merged(&["2001:db8::/32", "192.0.2.0/24"]).len(), 2);
    }

    #[test]
    fn overlap_and_wildcard() {
        assert!(p("198.51.100.0/24").overlaps(p("198.51.100.128/25")));
        assert!(!p("198.51.100.0/24").overlaps(p("203.0.113.0/24")));
        assert_eq!(p("198.51.100.0/24").wildcard().to_string(), "0.0.0.255");
    }
}
