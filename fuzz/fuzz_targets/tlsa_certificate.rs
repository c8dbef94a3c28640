//! The DER walk that finds a certificate's SubjectPublicKeyInfo for DANE
//! (TLSA selector 1, RFC 6698 §2.1.2): any bytes give a digest or None,
//! never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(hex) = portcullis_delivery::client::tlsa_spki_sha256(data) {
        assert_eq!(hex.len(), 64);
    }
});
