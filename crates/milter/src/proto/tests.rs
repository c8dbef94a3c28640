use super::*;

fn packet(code: u8, data: &[u8]) -> Vec<u8> {
    let mut p = ((data.len() + 1) as u32).to_be_bytes().to_vec();
    p.push(code);
    p.extend_from_slice(data);
    p
}

fn decode(bytes: &[u8]) -> Result<Option<Response>, Error> {
    let mut d = Decoder::default();
    d.feed(bytes);
    d.next_response()
}

#[test]
fn commands_are_length_prefixed_with_nul_terminated_strings() {
    let args = ["<a@b.test>".to_owned(), "SIZE=10".to_owned()];
    assert_eq!(
        Command::Mail(&args).encode(),
        packet(b'M', b"<a@b.test>\0SIZE=10\0")
    );
    let pairs = [("j".to_owned(), "mx.test".to_owned())];
    let m = Command::Macros {
        stage: Stage::Connect,
        pairs: &pairs,
    };
    assert_eq!(m.encode(), packet(b'D', b"Cj\0mx.test\0"));
    let c = Command::Connect {
        hostname: "[192.0.2.1]",
        family: Family::Inet("192.0.2.1:2525".parse().unwrap()),
    };
    assert_eq!(
        c.encode(),
        packet(b'C', b"[192.0.2.1]\0\x34\x09\xdd192.0.2.1\0")
    );
    assert_eq!(Command::Eom.encode(), vec![0, 0, 0, 1, b'E']);
}

#[test]
fn a_nul_inside_a_string_ends_it() {
    assert_eq!(Command::Helo("a\0b").encode(), packet(b'H', b"a\0"));
}

#[test]
fn negotiation_reads_flags_and_macro_lists() {
    let mut data = Vec::new();
    for v in [6u32, 0x1ff, 0x80] {
        data.extend_from_slice(&v.to_be_bytes());
    }
    data.extend_from_slice(&2u32.to_be_bytes());
    data.extend_from_slice(b"{mail_addr} i\0");
    data.extend_from_slice(&99u32.to_be_bytes());
    data.extend_from_slice(b"x\0");
    let Some(Response::OptNeg(n)) = decode(&packet(b'O', &data)).unwrap() else {
        panic!("not an optneg");
    };
    assert_eq!((n.version, n.actions, n.protocol), (6, 0x1ff, 0x80));
    assert!(n.skips(step::NR_HDR));
    assert_eq!(
        n.macros_for(Stage::Mail).unwrap(),
        &["{mail_addr}".to_owned(), "i".to_owned()]
    );
    assert_eq!(n.macros.len(), 1, "an unknown stage index is ignored");
}

#[test]
fn every_modification_is_read() {
    let mut ins = 3u32.to_be_bytes().to_vec();
    ins.extend_from_slice(b"X-A\0 v\0");
    assert_eq!(
        decode(&packet(b'i', &ins)).unwrap(),
        Some(Response::InsertHeader {
            index: 3,
            name: "X-A".into(),
            value: " v".into()
        })
    );
    assert_eq!(
        decode(&packet(b'2', b"<x@y>\0NOTIFY=NEVER\0")).unwrap(),
        Some(Response::AddRcpt {
            rcpt: "<x@y>".into(),
            args: Some("NOTIFY=NEVER".into())
        })
    );
    assert_eq!(
        decode(&packet(b'e', b"<s@y>\0")).unwrap(),
        Some(Response::ChangeFrom {
            from: "<s@y>".into(),
            args: None
        })
    );
    assert_eq!(
        decode(&packet(b'b', b"new\r\nbody")).unwrap(),
        Some(Response::ReplaceBody(b"new\r\nbody".to_vec()))
    );
    assert_eq!(
        decode(&packet(b'q', b"virus\0")).unwrap(),
        Some(Response::Quarantine("virus".into()))
    );
}

#[test]
fn a_truncated_packet_waits_for_more() {
    let p = packet(b'h', b"X-A\0v\0");
    let mut d = Decoder::default();
    d.feed(&p[..3]);
    assert_eq!(d.next_response(), Ok(None));
    assert_eq!(d.wanted(), 1);
    d.feed(&p[3..7]);
    assert_eq!(d.next_response(), Ok(None));
    assert_eq!(d.wanted(), p.len() - 7);
    d.feed(&p[7..]);
    assert!(matches!(
        d.next_response(),
        Ok(Some(Response::AddHeader { .. }))
    ));
}

#[test]
fn an_oversized_packet_is_refused_before_it_is_read() {
    let mut d = Decoder::default();
    d.feed(&u32::MAX.to_be_bytes());
    assert_eq!(d.next_response(), Err(Error::TooLong(u32::MAX as usize)));
    assert!(d.wanted() <= MAX_PACKET + 4);
}

#[test]
fn malformed_packets_are_errors() {
    assert_eq!(decode(&[0, 0, 0, 0]), Err(Error::Empty));
    assert_eq!(decode(&packet(b'Z', b"")), Err(Error::UnknownCode(b'Z')));
    assert!(decode(&packet(b'h', b"X-A\0")).is_err(), "one string");
    assert!(decode(&packet(b'h', b"X-A\0v")).is_err(), "no final NUL");
    assert!(decode(&packet(b'm', b"\0\0")).is_err(), "short index");
    assert!(decode(&packet(b'c', b"x")).is_err(), "data on continue");
    assert!(
        decode(&packet(b'O', &[0, 0, 0, 6])).is_err(),
        "short optneg"
    );
    assert!(decode(&packet(b'y', b"\xff\xfe\0")).is_err(), "not UTF-8");
    assert!(
        decode(&packet(b'e', b"a\0b\0c\0")).is_err(),
        "three strings"
    );
}
