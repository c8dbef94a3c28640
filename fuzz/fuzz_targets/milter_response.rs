//! Milter responses (issue 31): arbitrary bytes from a milter through the
//! bounded decoder, in pieces of any size, as the client reads them; each
//! response decoded is applied to a message (modifications) or read as a
//! reply (replycode). Nothing may panic, and the decoder never asks for
//! more than one packet's limit.
#![no_main]

use portcullis_milter::edit::{EnvelopeEdits, Message, apply};
use portcullis_milter::proto::{Decoder, MAX_PACKET, Negotiated, Response, action};
use portcullis_milter::reply::parse_reply;

const MESSAGE: &[u8] = b"From: a@b.test\r\nSubject: x\r\n y\r\n\r\nbody\r\n";

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let piece = usize::from(split).max(1);
    let mut d = Decoder::default();
    let mut mods = Vec::new();
    'feed: for chunk in rest.chunks(piece) {
        d.feed(chunk);
        loop {
            assert!(d.wanted() >= 1 && d.wanted() <= MAX_PACKET + 4);
            match d.next_response() {
                Ok(Some(Response::ReplyCode(text))) => {
                    if let Some(r) = parse_reply(&text) {
                        assert!((400..600).contains(&r.code));
                    }
                }
                Ok(Some(r)) => mods.push(r),
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }
    let negotiated = Negotiated {
        version: 6,
        actions: action::ALL,
        protocol: 0,
        macros: Vec::new(),
    };
    let mut msg = Message::parse(MESSAGE);
    let mut env = EnvelopeEdits::default();
    let _ = apply(&mut msg, &mut env, &mods, &negotiated);
    // What the edits made must read back as the same fields.
    let bytes = msg.to_bytes();
    assert_eq!(Message::parse(&bytes).fields.len(), msg.fields.len());
});
