//! The OP25B network description: parsed and rendered in every format.
#![no_main]
use portcullis_op25b::Format;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(net) = portcullis_op25b::parse(text) {
            for f in [Format::Nftables, Format::Iptables, Format::Ip6tables, Format::Cisco, Format::Juniper] {
                let _ = portcullis_op25b::render(&net, f);
            }
        }
    }
});
