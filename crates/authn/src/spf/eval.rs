//! check_host() (RFC 7208 §4): the evaluation of a sender's SPF record
//! against a client address, with the processing limits of §4.6.4 and
//! the explanation of §6.2. DNS comes through [`SpfDns`]; the clock is
//! passed in. Nothing here knows about sockets or a resolver library.
//!
//! This file walks a record (directives in order, then redirect=) and
//! turns the outcome into a verdict. Matching one mechanism is in
//! `mechanisms`, the lookup limits in `limits`, and domain-spec and
//! macro expansion in `macros`.

mod limits;
mod macros;
mod mechanisms;

use super::record::{self, MacroString, Qualifier, Record};
use super::{Answer, SpfDns};
use crate::AuthResult;
use std::net::IpAddr;

/// What check_host() is asked about.
#[derive(Clone, Debug)]
pub struct SpfQuery<'a> {
    pub ip: IpAddr,
    pub helo: &'a str,
    /// MAIL FROM; None (or empty) for the null sender: then the HELO
    /// identity is checked as `postmaster@HELO` (§2.4).
    pub mail_from: Option<&'a str>,
    /// Our own name, for the `r` macro.
    pub receiver: &'a str,
    /// Seconds since the epoch, for the `t` macro.
    pub now: u64,
}

/// The outcome: the result, the domain it is for, and the explanation a
/// `fail` carries (§6.2) when the domain gave one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpfVerdict {
    pub result: AuthResult,
    pub domain: String,
    pub explanation: Option<String>,
    /// For logs and Authentication-Results comments.
    pub reason: String,
}

/// Evaluate SPF for `query`.
pub async fn check_host<D: SpfDns>(dns: &D, query: &SpfQuery<'_>) -> SpfVerdict {
    // IPv4-mapped IPv6 clients are IPv4 clients (§5: "ip4" and "a" match).
    let ip = query.ip.to_canonical();
    let (local, domain) = identity(query);
    let mut eval = Evaluation {
        dns,
        ip,
        local: &local,
        sender_domain: &domain,
        helo: query.helo,
        receiver: query.receiver,
        now: query.now,
        lookups: 0,
        voids: 0,
    };
    let verdict = |result, explanation, reason: String| SpfVerdict {
        result,
        domain: domain.clone(),
        explanation,
        reason,
    };
    // §4.3: a malformed or single-label domain gives "none" at once.
    if !is_valid_domain(&domain) {
        return verdict(
            AuthResult::None,
            None,
            format!("{domain:?} is not a domain name"),
        );
    }
    match eval.check(&domain).await {
        Ok((AuthResult::Fail, None)) => {
            // §6.2: without a usable exp=, a default explanation.
            let text = format!("{domain} does not designate {ip} as a permitted sender");
            verdict(AuthResult::Fail, Some(text), String::new())
        }
        Ok((result, explanation)) => verdict(result, explanation, String::new()),
        Err(Abort(result, reason)) => verdict(result, None, reason),
    }
}

/// (local part, domain) of the identity checked.
fn identity(query: &SpfQuery<'_>) -> (String, String) {
    match query.mail_from.filter(|s| !s.is_empty()) {
        Some(sender) => match sender.rsplit_once('@') {
            // §4.3: an empty local part is taken as "postmaster".
            Some(("", d)) => ("postmaster".into(), d.to_owned()),
            Some((l, d)) => (l.to_owned(), d.to_owned()),
            None => ("postmaster".into(), sender.to_owned()),
        },
        None => ("postmaster".into(), query.helo.to_owned()),
    }
}

/// §4.3: labels of 1 to 63 octets, at least two of them, a valid top
/// label, 253 octets at most. Rules out address literals like `[1.2.3.4]`.
pub fn is_valid_domain(domain: &str) -> bool {
    let d = domain.strip_suffix('.').unwrap_or(domain);
    let labels: Vec<&str> = d.split('.').collect();
    d.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| !l.is_empty() && l.len() <= 63)
        && labels.last().is_some_and(|t| record::is_toplabel(t))
}

/// A result that ends the evaluation: temperror or permerror.
struct Abort(AuthResult, String);

fn perm(reason: impl Into<String>) -> Abort {
    Abort(AuthResult::PermError, reason.into())
}

fn temp(reason: impl Into<String>) -> Abort {
    Abort(AuthResult::TempError, reason.into())
}

struct Evaluation<'a, D> {
    dns: &'a D,
    ip: IpAddr,
    local: &'a str,
    sender_domain: &'a str,
    helo: &'a str,
    receiver: &'a str,
    now: u64,
    lookups: u32,
    voids: u32,
}

type Checked = Result<(AuthResult, Option<String>), Abort>;

impl<D: SpfDns> Evaluation<'_, D> {
    /// check_host() for one domain, recursing for include and redirect.
    fn check<'s>(
        &'s mut self,
        domain: &'s str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Checked> + Send + 's>>
    where
        D: Sync,
    {
        Box::pin(async move {
            let Some(record) = self.fetch(domain).await? else {
                return Ok((AuthResult::None, None));
            };
            for (qualifier, mechanism) in &record.directives {
                if self.matches(mechanism, domain).await? {
                    let result = qualifier_result(*qualifier);
                    let explanation = match (result, &record.exp) {
                        (AuthResult::Fail, Some(exp)) => self.explain(exp, domain).await,
                        _ => None,
                    };
                    return Ok((result, explanation));
                }
            }
            match &record.redirect {
                // §6.1: the redirected domain's result, exp and all; the
                // original record's exp no longer applies.
                Some(target) => {
                    self.count_lookup()?;
                    let target = self.target(target, domain).await?;
                    match self.check(&target).await? {
                        (AuthResult::None, _) => Err(perm(format!(
                            "redirect to {target}, which has no SPF record"
                        ))),
                        other => Ok(other),
                    }
                }
                None => Ok((AuthResult::Neutral, None)),
            }
        })
    }

    /// The record of `domain` (§4.4, §4.5); None when it has none.
    async fn fetch(&self, domain: &str) -> Result<Option<Record>, Abort> {
        let records = match self.dns.txt(domain).await {
            Answer::Found(r) => r,
            Answer::NotFound => return Ok(None),
            Answer::Error(e) => return Err(temp(format!("TXT {domain}: {e}"))),
        };
        let selected = record::select(&records).map_err(|e| perm(format!("{domain}: {e}")))?;
        selected
            .map(|r| record::parse(r).map_err(|e| perm(format!("{domain}: {e}"))))
            .transpose()
    }

    /// The explanation of a fail (§6.2): the TXT record named by exp=,
    /// expanded. Any problem on the way means no explanation, never a
    /// different result.
    async fn explain(&mut self, exp: &MacroString, domain: &str) -> Option<String> {
        let target = self.target(exp, domain).await.ok()?;
        let Answer::Found(records) = self.dns.txt(&target).await else {
            return None;
        };
        let [text] = records.as_slice() else {
            return None;
        };
        let text = std::str::from_utf8(text).ok().filter(|t| t.is_ascii())?;
        let string = record::macro_string(text, true, text).ok()?;
        let p = self.p_value(&string, domain).await;
        Some(self.expand(&string, domain, &p))
    }
}

fn qualifier_result(q: Qualifier) -> AuthResult {
    match q {
        Qualifier::Pass => AuthResult::Pass,
        Qualifier::Fail => AuthResult::Fail,
        Qualifier::SoftFail => AuthResult::SoftFail,
        Qualifier::Neutral => AuthResult::Neutral,
    }
}

// The tests below call it by name.
#[cfg(test)]
use macros::truncate;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// DNS as a table: name -> TXT records and A records.
    #[derive(Default)]
    struct TableDns {
        txt: HashMap<String, Vec<Vec<u8>>>,
        a: HashMap<String, Vec<Ipv4Addr>>,
    }

    impl SpfDns for TableDns {
        async fn txt(&self, name: &str) -> Answer<Vec<Vec<u8>>> {
            self.txt
                .get(name)
                .cloned()
                .map_or(Answer::NotFound, Answer::Found)
        }
        async fn a(&self, name: &str) -> Answer<Vec<Ipv4Addr>> {
            self.a
                .get(name)
                .cloned()
                .map_or(Answer::NotFound, Answer::Found)
        }
        async fn aaaa(&self, _: &str) -> Answer<Vec<Ipv6Addr>> {
            Answer::NotFound
        }
        async fn mx(&self, _: &str) -> Answer<Vec<String>> {
            Answer::NotFound
        }
        async fn ptr(&self, _: IpAddr) -> Answer<Vec<String>> {
            Answer::NotFound
        }
    }

    fn run(dns: &TableDns, ip: &str, sender: &str) -> SpfVerdict {
        let query = SpfQuery {
            ip: ip.parse().unwrap(),
            helo: "helo.example",
            mail_from: Some(sender),
            receiver: "mx.example",
            now: 0,
        };
        futures_lite(check_host(dns, &query))
    }

    fn result(dns: &TableDns, ip: &str, sender: &str) -> AuthResult {
        run(dns, ip, sender).result
    }

    /// The futures here never wait: poll once with a no-op waker.
    fn futures_lite<F: std::future::Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("table DNS never waits"),
        }
    }

    fn dns(records: &[(&str, &str)]) -> TableDns {
        let mut d = TableDns::default();
        for (name, txt) in records {
            d.txt
                .entry((*name).into())
                .or_default()
                .push(txt.as_bytes().to_vec());
        }
        d
    }

    #[test]
    fn a_matching_ip4_passes_and_the_rest_fails() {
        let d = dns(&[("example.org", "v=spf1 ip4:192.0.2.0/24 -all")]);
        assert_eq!(result(&d, "192.0.2.9", "a@example.org"), AuthResult::Pass);
        assert_eq!(
            result(&d, "198.51.100.1", "a@example.org"),
            AuthResult::Fail
        );
    }

    #[test]
    fn ipv4_mapped_clients_are_ipv4_clients() {
        let d = dns(&[("example.org", "v=spf1 ip4:192.0.2.0/24 -all")]);
        assert_eq!(
            result(&d, "::ffff:192.0.2.9", "a@example.org"),
            AuthResult::Pass
        );
    }

    #[test]
    fn an_include_loop_ends_in_permerror() {
        let d = dns(&[("example.org", "v=spf1 include:example.org -all")]);
        assert_eq!(
            result(&d, "192.0.2.9", "a@example.org"),
            AuthResult::PermError
        );
    }

    #[test]
    fn a_third_void_lookup_is_a_permerror() {
        let d = dns(&[(
            "example.org",
            "v=spf1 a:n1.example a:n2.example a:n3.example -all",
        )]);
        assert_eq!(
            result(&d, "192.0.2.9", "a@example.org"),
            AuthResult::PermError
        );
        let d = dns(&[("example.org", "v=spf1 a:n1.example a:n2.example -all")]);
        assert_eq!(result(&d, "192.0.2.9", "a@example.org"), AuthResult::Fail);
    }

    #[test]
    fn a_fail_carries_the_expanded_explanation() {
        let d = dns(&[
            ("example.org", "v=spf1 -all exp=why.%{d}"),
            ("why.example.org", "%{l} may not send from %{i} for %{d}"),
        ]);
        let v = run(&d, "192.0.2.9", "bob@example.org");
        assert_eq!(v.result, AuthResult::Fail);
        assert_eq!(
            v.explanation.as_deref(),
            Some("bob may not send from 192.0.2.9 for example.org")
        );
    }

    #[test]
    fn exists_expands_reversed_and_escaped_macros() {
        let mut d = dns(&[("example.org", "v=spf1 exists:%{ir}.%{L}.x.example -all")]);
        d.a.insert(
            "9.2.0.192.a%2Bb.x.example".into(),
            vec![Ipv4Addr::new(127, 0, 0, 2)],
        );
        assert_eq!(result(&d, "192.0.2.9", "a+b@example.org"), AuthResult::Pass);
    }

    #[test]
    fn address_literals_and_single_labels_have_no_spf() {
        let d = TableDns::default();
        assert_eq!(result(&d, "192.0.2.9", "a@[192.0.2.9]"), AuthResult::None);
        assert_eq!(result(&d, "192.0.2.9", "a@localhost"), AuthResult::None);
    }

    #[test]
    fn long_names_lose_labels_from_the_left() {
        let long = format!("{}.example.org", ["abcdefghij"; 30].join("."));
        let cut = truncate(&long);
        assert!(cut.len() <= 253 && cut.ends_with(".example.org"));
    }
}
