//! DATA framing and dot-unstuffing fed in arbitrary pieces.
#![no_main]
use portcullis_smtp::framing::DataReader;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let mut r = DataReader::new(1000, 1 << 20);
    let step = usize::from(split).max(1);
    for chunk in rest.chunks(step) {
        let _ = r.feed(chunk);
        if r.error().is_some() {
            break;
        }
    }
});
