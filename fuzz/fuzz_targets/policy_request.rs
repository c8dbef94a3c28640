//! Postfix policy requests (issue 21): arbitrary bytes through the
//! parser, as the policy listener reads them, in a loop until the buffer
//! is used up. It must never panic, never claim more bytes than it has,
//! and always make progress or stop.
#![no_main]

use portcullis_policyd::{MAX_REQUEST, Parsed, parse};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    loop {
        match parse(buf) {
            Parsed::Incomplete => {
                assert!(buf.len() <= MAX_REQUEST);
                return;
            }
            Parsed::Request(r, used) => {
                assert!(used > 0 && used <= buf.len());
                let _ = (r.state(), r.get("client_address"));
                buf = &buf[used..];
            }
            Parsed::Malformed(_, 0) => return,
            Parsed::Malformed(_, used) => {
                assert!(used <= buf.len());
                buf = &buf[used..];
            }
        }
    }
});
