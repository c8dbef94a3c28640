//! A message to the report mailbox (RFC 7489 §7.2, RFC 8460): any bytes
//! are read as a report or set aside with a reason, within the limits,
//! never a panic; a payload alone (XML, JSON, gzip, zip) likewise.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let limits = portcullis_reportbox::Limits {
        max_bytes: 1 << 20,
        max_ratio: 100,
    };
    let _ = portcullis_reportbox::read_message(data, limits);
    let _ = portcullis_reportbox::parse_payload(data);
});
