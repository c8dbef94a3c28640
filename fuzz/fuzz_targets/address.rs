//! Address parsing (paths, mailboxes, domains), ASCII and SMTPUTF8.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        for utf8 in [false, true] {
            let _ = portcullis_smtp::address::parse_path(s, utf8);
            if let Ok(m) = portcullis_smtp::address::parse_mailbox(s, utf8) {
                // What parses prints back to something that parses.
                assert!(portcullis_smtp::address::parse_mailbox(&m.to_string(), true).is_ok(), "{m}");
            }
            let _ = portcullis_smtp::address::is_domain(s, utf8);
        }
    }
});
