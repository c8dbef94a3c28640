//! SRS addresses from the network: refused or reversed, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let srs = portcullis_forwarding::Srs::new(&[b"fuzz".to_vec()], "fwd.test", 21);
        let _ = srs.reverse(s, 1_795_000_000);
        let _ = srs.forward(s, 1_795_000_000);
    }
});
