//! Our own sending addresses as receivers see them: forward-confirmed
//! reverse DNS of each source address (Gmail's `5.7.25` refuses IPv6
//! without it) and whether our domains' SPF covers it. Findings only;
//! `portcullis delivery check` prints them with what to fix.

use crate::{AuthResult, Verifier};
use std::net::IpAddr;

/// What DNS says of one source address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceCheck {
    pub ip: IpAddr,
    pub iprev: AuthResult,
    /// The PTR name, when one of its A/AAAA records is the address.
    pub name: Option<String>,
    /// Each sending domain's SPF result for the address.
    pub spf: Vec<(String, AuthResult)>,
}

impl SourceCheck {
    /// What to fix, one sentence each; empty when all is well.
    pub fn problems(&self, helo: &str) -> Vec<String> {
        let mut out = Vec::new();
        match &self.name {
            None => out.push(format!(
                "{}: no forward-confirmed reverse DNS (iprev {}): publish a PTR record naming {helo} and an {} record of {helo} for this address",
                self.ip,
                self.iprev.as_str(),
                if self.ip.is_ipv4() { "A" } else { "AAAA" }
            )),
            Some(n) if !n.eq_ignore_ascii_case(helo.trim_end_matches('.')) => out.push(format!(
                "{}: its reverse name is {n} but we say EHLO {helo}: set [delivery] helo_name = \"{n}\" or change the PTR",
                self.ip
            )),
            Some(_) => {}
        }
        for (domain, r) in &self.spf {
            if *r != AuthResult::Pass {
                out.push(format!(
                    "{}: SPF of {domain} gives {} for it: add ip{}:{} (or a mechanism covering it) to {domain}'s SPF record",
                    self.ip,
                    r.as_str(),
                    if self.ip.is_ipv4() { 4 } else { 6 },
                    self.ip
                ));
            }
        }
        out
    }
}

impl Verifier {
    /// Check one source address for `helo` and our sending `domains`.
    pub async fn check_source(
        &self,
        ip: IpAddr,
        helo: &str,
        domains: &[String],
        now: u64,
    ) -> SourceCheck {
        let (iprev, name) = self.iprev(ip).await;
        let mut spf = Vec::new();
        for d in domains {
            let sender = format!("postmaster@{d}");
            let r = self.spf(ip, helo, Some(&sender), now).await;
            spf.push((d.clone(), r.result()));
        }
        SourceCheck {
            ip,
            iprev,
            name,
            spf,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: Option<&str>, spf: AuthResult) -> SourceCheck {
        SourceCheck {
            ip: "2001:db8::25".parse().unwrap(),
            iprev: if name.is_some() {
                AuthResult::Pass
            } else {
                AuthResult::Fail
            },
            name: name.map(str::to_owned),
            spf: vec![("example.test".into(), spf)],
        }
    }

    #[test]
    fn a_confirmed_name_matching_helo_and_spf_pass_need_nothing() {
        assert!(
            check(Some("mx.example.test"), AuthResult::Pass)
                .problems("mx.example.test")
                .is_empty()
        );
    }

    #[test]
    fn a_missing_ptr_and_an_uncovered_address_are_each_named_with_the_fix() {
        let p = check(None, AuthResult::SoftFail).problems("mx.example.test");
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].contains("publish a PTR record naming mx.example.test and an AAAA record"),
            "{}",
            p[0]
        );
        assert!(p[1].contains("add ip6:2001:db8::25"), "{}", p[1]);
    }

    #[test]
    fn a_reverse_name_unlike_helo_is_reported() {
        let p = check(Some("other.example.test"), AuthResult::Pass).problems("mx.example.test");
        assert!(p[0].contains("helo_name = \"other.example.test\""), "{p:?}");
    }
}
