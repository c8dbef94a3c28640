//! What a sender's DNS says, which anyone can publish: SPF records and
//! macros evaluated by check_host() (every TXT answer is the input, so
//! include and redirect recurse into it), DMARC records, rating records.
#![no_main]
use portcullis_authn::spf::{Answer, SpfDns, SpfQuery, check_host};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

struct EchoDns<'a>(&'a [u8]);

impl SpfDns for EchoDns<'_> {
    async fn txt(&self, _: &str) -> Answer<Vec<Vec<u8>>> {
        Answer::Found(self.0.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect())
    }
    async fn a(&self, name: &str) -> Answer<Vec<Ipv4Addr>> {
        if name.len() % 2 == 0 { Answer::Found(vec![Ipv4Addr::new(192, 0, 2, 1)]) } else { Answer::NotFound }
    }
    async fn aaaa(&self, _: &str) -> Answer<Vec<Ipv6Addr>> {
        Answer::NotFound
    }
    async fn mx(&self, name: &str) -> Answer<Vec<String>> {
        Answer::Found(vec![name.to_owned(); name.len() % 12])
    }
    async fn ptr(&self, _: IpAddr) -> Answer<Vec<String>> {
        Answer::Found(vec!["host.example.org".into()])
    }
}

fn poll<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dns = EchoDns(data);
    for (ip, sender) in [("192.0.2.1", Some("a.b@example.org")), ("2001:db8::1", None)] {
        let query = SpfQuery {
            ip: ip.parse().unwrap(),
            helo: "helo.example.org",
            mail_from: sender,
            receiver: "mx.example.net",
            now: 0,
        };
        // The table DNS never waits, so one poll finishes the evaluation.
        assert!(poll(check_host(&dns, &query)).is_some());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = portcullis_authn::parse_dmarc_record(text);
    }
    let _ = portcullis_authn::parse_rating(&[data.to_vec()]);
});
