//! The MTA-STS TXT record and policy file (RFC 8461 §3.1, §3.2): any
//! input parses or is refused, and a parsed policy matches host names
//! without panicking.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = portcullis_mtasts::parse_record(s);
        if let Ok(p) = portcullis_mtasts::parse_policy(s) {
            assert!(p.max_age <= portcullis_mtasts::MAX_AGE_LIMIT);
            for line in s.lines().take(8) {
                let _ = p.allows(line);
            }
        }
    }
});
