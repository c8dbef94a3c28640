//! The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1
//! and 2) that a TCP load balancer sends before the client's first byte,
//! naming the client it accepted. Plain logic over the bytes read so far:
//! [`parse`] says whether more are needed, where the header ends, and
//! what it says. Limits: a v1 line is at most 107 bytes, a v2 header at
//! most 16 + 536 bytes (what we accept of TLVs); anything else is an
//! error, never a guess. This crate does no I/O and trusts no peer:
//! whether a header may come from this peer is the listener's question.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature (12 bytes).
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 line, CRLF included, is at most 107 bytes (proxy-protocol.txt §2.1).
pub const V1_MAX: usize = 107;
/// The largest v2 header taken: 16 bytes and room for the addresses and
/// a few TLVs (the spec allows 64 KiB; a load balancer sends far less).
pub const V2_MAX: usize = 16 + 536;

/// What a header says about the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The client the balancer accepted.
    Client(SocketAddr),
    /// `LOCAL` (v2) or `UNKNOWN` (v1): the balancer's own connection (a
    /// health check); the peer's address stands.
    Local,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("no PROXY protocol header")]
    Missing,
    #[error("PROXY header too long")]
    TooLong,
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
}

/// What the bytes read so far hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Read at least this many bytes in all, then ask again.
    NeedMore(usize),
    /// The header and its length: the client's data begins after it.
    Header(Source, usize),
}

/// Parse a header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    if buf.len() < 6 {
        return match_prefix(buf).map(|()| Parsed::NeedMore(6));
    }
    if buf.starts_with(b"PROXY ") {
        return parse_v1(buf);
    }
    if buf.len() < 16 {
        return match_prefix(buf).map(|()| Parsed::NeedMore(16));
    }
    if buf[..12] == V2_SIGNATURE {
        return parse_v2(buf);
    }
    Err(ProxyError::Missing)
}

/// Too short to tell: still possibly a header?
fn match_prefix(buf: &[u8]) -> Result<(), ProxyError> {
    let n = buf.len();
    if b"PROXY "[..n.min(6)] == buf[..n.min(6)] || V2_SIGNATURE[..n.min(12)] == buf[..n.min(12)] {
        Ok(())
    } else {
        Err(ProxyError::Missing)
    }
}

/// `PROXY TCP4|TCP6|UNKNOWN src dst sport dport\r\n`.
fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(ProxyError::TooLong)
        } else {
            Ok(Parsed::NeedMore(buf.len() + 1))
        };
    };
    if end + 2 > V1_MAX {
        return Err(ProxyError::TooLong);
    }
    let line = std::str::from_utf8(&buf[6..end]).map_err(|_| ProxyError::Malformed("not ASCII"))?;
    let parts: Vec<&str> = line.split(' ').collect();
    let source = match parts.as_slice() {
        ["UNKNOWN", ..] => Source::Local,
        [family @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
            let ip: IpAddr = src
                .parse()
                .map_err(|_| ProxyError::Malformed("bad source address"))?;
            if ip.is_ipv4() != (*family == "TCP4") {
                return Err(ProxyError::Malformed("address of the wrong family"));
            }
            let port = port(sport)?;
            Source::Client(SocketAddr::new(ip, port))
        }
        _ => {
            return Err(ProxyError::Malformed(
                "not PROXY TCP4|TCP6|UNKNOWN with four fields",
            ));
        }
    };
    Ok(Parsed::Header(source, end + 2))
}

/// A port as v1 writes it: decimal, no leading zero, at most 65535.
fn port(s: &str) -> Result<u16, ProxyError> {
    if s.is_empty()
        || s.len() > 5
        || (s.len() > 1 && s.starts_with('0'))
        || !s.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(ProxyError::Malformed("bad port"));
    }
    s.parse().map_err(|_| ProxyError::Malformed("bad port"))
}

/// 12-byte signature, version/command, family/protocol, length, addresses.
fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::Malformed("version is not 2"));
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let total = 16 + len;
    if total > V2_MAX {
        return Err(ProxyError::TooLong);
    }
    if buf.len() < total {
        return Ok(Parsed::NeedMore(total));
    }
    let body = &buf[16..total];
    let source = match (ver_cmd & 0x0f, buf[13]) {
        // LOCAL: the balancer speaking for itself.
        (0x0, _) => Source::Local,
        // PROXY over TCP/IPv4, TCP/IPv6.
        (0x1, 0x11) if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Source::Client(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_be_bytes([body[8], body[9]]),
            ))
        }
        (0x1, 0x21) if body.len() >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            let ip = Ipv6Addr::from(octets);
            Source::Client(SocketAddr::new(
                IpAddr::V6(ip),
                u16::from_be_bytes([body[32], body[33]]),
            ))
        }
        (0x1, 0x11 | 0x21) => return Err(ProxyError::Malformed("address block too short")),
        (0x1, _) => return Err(ProxyError::Malformed("not TCP over IPv4 or IPv6")),
        _ => return Err(ProxyError::Malformed("unknown command")),
    };
    Ok(Parsed::Header(source, total))
}

#[cfg(test)]
mod tests;
