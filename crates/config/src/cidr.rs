//! Address ranges (`192.0.2.0/24`, `2001:db8::/32`) as config values.

use serde::Deserialize;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// The range of `prefix` bits (IPv4 `v4_prefix`, IPv6 `v6_prefix`)
    /// that holds `ip`: the key by which address-based state aggregates,
    /// so that rotating through one /64 is one sender. IPv4-mapped IPv6
    /// addresses count as the IPv4 address they carry.
    pub fn enclosing(ip: IpAddr, v4_prefix: u8, v6_prefix: u8) -> Cidr {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(a) => {
                let prefix = v4_prefix.min(32);
                Cidr {
                    addr: IpAddr::V4(mask32(u32::from(a), prefix).into()),
                    prefix,
                }
            }
            IpAddr::V6(a) => {
                let prefix = v6_prefix.min(128);
                Cidr {
                    addr: IpAddr::V6(mask128(u128::from(a), prefix).into()),
                    prefix,
                }
            }
        }
    }

    /// Every range that holds `ip`, from the host itself to /0: the keys
    /// under which a range-keyed table (the blocklist) may list it.
    pub fn all_enclosing(ip: IpAddr) -> Vec<Cidr> {
        let max = if Cidr::enclosing(ip, 32, 128).addr.is_ipv4() {
            32
        } else {
            128
        };
        (0..=max).rev().map(|p| Cidr::enclosing(ip, p, p)).collect()
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// The range of `prefix` bits that holds this one (itself when
    /// `prefix` is not shorter).
    pub fn widened(&self, prefix: u8) -> Cidr {
        let p = prefix.min(self.prefix);
        Cidr::enclosing(self.addr, p, p)
    }

    /// Whether every address of `other` is in this range.
    pub fn covers(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                mask32(u32::from(net), self.prefix) == mask32(u32::from(a), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                mask128(u128::from(net), self.prefix) == mask128(u128::from(a), self.prefix)
            }
            (IpAddr::V4(_), IpAddr::V6(a)) => a
                .to_ipv4_mapped()
                .is_some_and(|v4| self.contains(IpAddr::V4(v4))),
            _ => false,
        }
    }
}

fn mask32(v: u32, prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        v & (u32::MAX << (32 - u32::from(prefix)))
    }
}

fn mask128(v: u128, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        v & (u128::MAX << (128 - u32::from(prefix)))
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// `ADDR/PREFIX`, or a bare address (a single host). Host bits must be
    /// zero: `192.0.2.1/24` is almost always a typo for something else.
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() {
            max
        } else {
            p.parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?
        };
        let c = Cidr { addr, prefix };
        let host_bits_zero = match addr {
            IpAddr::V4(v) => mask32(u32::from(v), prefix) == u32::from(v),
            IpAddr::V6(v) => mask128(u128::from(v), prefix) == u128::from(v),
        };
        if !host_bits_zero {
            return Err(format!("{s:?} has host bits set beyond /{prefix}"));
        }
        Ok(c)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches_v4_and_v6() {
        let c: Cidr = "192.0.2.0/24".parse().unwrap();
        assert!(c.contains("192.0.2.200".parse().unwrap()));
        assert!(!c.contains("192.0.3.1".parse().unwrap()));
        let c6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(c6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!c6.contains("2001:db9::1".parse().unwrap()));
        assert_eq!("10.1.2.3".parse::<Cidr>().unwrap().prefix, 32);
    }

    #[test]
    fn refuses_host_bits_and_bad_prefixes() {
        assert!("192.0.2.1/24".parse::<Cidr>().is_err());
        assert!("192.0.2.0/33".parse::<Cidr>().is_err());
        assert!("nonsense/8".parse::<Cidr>().is_err());
    }
}
