//! The SMTP command parser: any line gives a command or a reply, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(line) = std::str::from_utf8(data) {
        if let Err(r) = portcullis_smtp::command::parse(line) {
            assert!((400..600).contains(&r.code));
        }
    }
});
