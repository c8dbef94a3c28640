//! The header as HAProxy writes it (proxy-protocol.txt's examples).

use super::*;

fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(0x20 | command);
    h.push(family);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(body);
    h
}

fn client(s: &str) -> Source {
    Source::Client(s.parse().unwrap())
}

#[test]
fn a_v1_tcp4_header_names_the_client_and_ends_at_crlf() {
    let buf = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\nEHLO x\r\n";
    assert_eq!(
        parse(buf),
        Ok(Parsed::Header(client("192.0.2.7:56324"), 44))
    );
}

#[test]
fn a_v1_tcp6_header_names_the_client() {
    let buf = b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 25\r\n";
    assert_eq!(
        parse(buf),
        Ok(Parsed::Header(client("[2001:db8::7]:4000"), buf.len()))
    );
}

#[test]
fn v1_unknown_is_the_balancer_itself() {
    assert_eq!(
        parse(b"PROXY UNKNOWN\r\n"),
        Ok(Parsed::Header(Source::Local, 15))
    );
}

#[test]
fn a_partial_header_asks_for_more() {
    assert_eq!(parse(b"PRO"), Ok(Parsed::NeedMore(6)));
    assert!(matches!(
        parse(b"PROXY TCP4 192.0.2.7"),
        Ok(Parsed::NeedMore(_))
    ));
    assert_eq!(parse(&V2_SIGNATURE[..5]), Ok(Parsed::NeedMore(6)));
}

#[test]
fn a_client_that_speaks_smtp_is_no_header() {
    assert_eq!(parse(b"EHLO client.example\r\n"), Err(ProxyError::Missing));
    assert_eq!(parse(b"220 "), Err(ProxyError::Missing));
}

#[test]
fn an_endless_v1_line_is_refused() {
    let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
    assert_eq!(parse(&long), Err(ProxyError::TooLong));
}

#[test]
fn malformed_v1_headers_are_refused() {
    for bad in [
        &b"PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n"[..],
        b"PROXY TCP4 2001:db8::7 198.51.100.1 1 25\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 065535 25\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 70000 25\r\n",
        b"PROXY UDP4 192.0.2.7 198.51.100.1 1 25\r\n",
    ] {
        assert!(
            matches!(parse(bad), Err(ProxyError::Malformed(_))),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn a_v2_ipv4_header_names_the_client() {
    let body = [192, 0, 2, 7, 198, 51, 100, 1, 0xdc, 0x04, 0, 25];
    let h = v2(0x1, 0x11, &body);
    assert_eq!(parse(&h), Ok(Parsed::Header(client("192.0.2.7:56324"), 28)));
}

#[test]
fn a_v2_ipv6_header_with_tlvs_names_the_client() {
    let mut body = Vec::new();
    body.extend_from_slice(&"2001:db8:1:2::7".parse::<Ipv6Addr>().unwrap().octets());
    body.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
    body.extend_from_slice(&[0x0f, 0xa0, 0, 25]);
    body.extend_from_slice(&[0x04, 0x00, 0x01, 0x00]); // a NOOP TLV
    let h = v2(0x1, 0x21, &body);
    assert_eq!(
        parse(&h),
        Ok(Parsed::Header(client("[2001:db8:1:2::7]:4000"), h.len()))
    );
}

#[test]
fn v2_local_is_the_balancer_itself() {
    assert_eq!(
        parse(&v2(0x0, 0x00, &[])),
        Ok(Parsed::Header(Source::Local, 16))
    );
}

#[test]
fn a_v2_header_waits_for_its_announced_length() {
    let body = [192, 0, 2, 7, 198, 51, 100, 1, 0, 1, 0, 25];
    let h = v2(0x1, 0x11, &body);
    assert_eq!(parse(&h[..20]), Ok(Parsed::NeedMore(28)));
}

#[test]
fn an_oversized_or_strange_v2_header_is_refused() {
    let mut huge = v2(0x1, 0x11, &[]);
    huge[14..16].copy_from_slice(&60_000u16.to_be_bytes());
    assert_eq!(parse(&huge), Err(ProxyError::TooLong));
    assert!(
        matches!(
            parse(&v2(0x1, 0x12, &[0; 12])),
            Err(ProxyError::Malformed(_))
        ),
        "UDP"
    );
    assert!(
        matches!(
            parse(&v2(0x1, 0x11, &[0; 4])),
            Err(ProxyError::Malformed(_))
        ),
        "short"
    );
    let mut v3 = v2(0x1, 0x11, &[0; 12]);
    v3[12] = 0x31;
    assert!(
        matches!(parse(&v3), Err(ProxyError::Malformed(_))),
        "version 3"
    );
}
