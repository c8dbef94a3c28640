//! check_host() (RFC 7208 §4): the evaluation of a sender's SPF record
//! against a client address, with the processing limits of §4.6.4 and
//! the explanation of §6.2. DNS comes through [`SpfDns`]; the clock is
//! passed in. Nothing here knows about sockets or a resolver library.

use super::record::{self, Macro, MacroString, Mechanism, Piece, Qualifier, Record};
use super::{Answer, SpfDns};
use crate::AuthResult;
use std::net::IpAddr;

/// §4.6.4: at most 10 terms that cause DNS queries, and (SHOULD) at most
/// two of them answering with nothing.
const MAX_LOOKUPS: u32 = 10;
const MAX_VOID_LOOKUPS: u32 = 2;
/// §4.6.4: an MX answer with more names, or PTR names beyond this many.
const MAX_NAMES: usize = 10;

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

    fn count_lookup(&mut self) -> Result<(), Abort> {
        self.lookups += 1;
        if self.lookups > MAX_LOOKUPS {
            return Err(perm("more than 10 DNS-querying terms"));
        }
        Ok(())
    }

    /// A query that answered with nothing (§4.6.4).
    fn count_void(&mut self) -> Result<(), Abort> {
        self.voids += 1;
        if self.voids > MAX_VOID_LOOKUPS {
            return Err(perm("more than 2 void lookups"));
        }
        Ok(())
    }

    async fn matches(&mut self, mechanism: &Mechanism, domain: &str) -> Result<bool, Abort> {
        match mechanism {
            Mechanism::All => Ok(true),
            Mechanism::Ip4(net, len) => Ok(in_network(self.ip, (*net).into(), *len)),
            Mechanism::Ip6(net, len) => Ok(in_network(self.ip, (*net).into(), *len)),
            Mechanism::Include(spec) => {
                self.count_lookup()?;
                let target = self.target(spec, domain).await?;
                match self.check(&target).await?.0 {
                    AuthResult::Pass => Ok(true),
                    AuthResult::TempError => Err(temp(format!("include:{target}"))),
                    AuthResult::PermError | AuthResult::None => {
                        Err(perm(format!("include:{target} has no usable SPF record")))
                    }
                    _ => Ok(false),
                }
            }
            Mechanism::A {
                domain: spec,
                cidr4,
                cidr6,
            } => {
                self.count_lookup()?;
                let target = self.optional_target(spec.as_ref(), domain).await?;
                let found = self.addresses(&target, true).await?;
                Ok(found.iter().any(|a| self.in_dual(*a, *cidr4, *cidr6)))
            }
            Mechanism::Mx {
                domain: spec,
                cidr4,
                cidr6,
            } => {
                self.count_lookup()?;
                let target = self.optional_target(spec.as_ref(), domain).await?;
                self.mx_matches(&target, *cidr4, *cidr6).await
            }
            Mechanism::Ptr(spec) => {
                self.count_lookup()?;
                let target = self.optional_target(spec.as_ref(), domain).await?;
                let names = self.validated_names().await?;
                Ok(names.iter().any(|n| is_within(n, &target)))
            }
            Mechanism::Exists(spec) => {
                self.count_lookup()?;
                let target = self.target(spec, domain).await?;
                // §5.7: always an A query, whatever the client's family.
                match self.dns.a(&target).await {
                    Answer::Found(a) if !a.is_empty() => Ok(true),
                    Answer::Found(_) | Answer::NotFound => self.count_void().map(|_| false),
                    Answer::Error(e) => Err(temp(format!("A {target}: {e}"))),
                }
            }
        }
    }

    fn in_dual(&self, addr: IpAddr, cidr4: u8, cidr6: u8) -> bool {
        let len = if addr.is_ipv4() { cidr4 } else { cidr6 };
        in_network(self.ip, addr, len)
    }

    /// A or AAAA, whichever the client's address is.
    async fn family_lookup(&self, name: &str) -> Answer<Vec<IpAddr>> {
        match self.ip {
            IpAddr::V4(_) => self
                .dns
                .a(name)
                .await
                .map(|v| v.into_iter().map(IpAddr::V4).collect()),
            IpAddr::V6(_) => self
                .dns
                .aaaa(name)
                .await
                .map(|v| v.into_iter().map(IpAddr::V6).collect()),
        }
    }

    /// The client family's addresses of `name` (§5.3). `void` counts an
    /// empty answer toward the limit.
    async fn addresses(&mut self, name: &str, void: bool) -> Result<Vec<IpAddr>, Abort> {
        match self.family_lookup(name).await {
            Answer::Found(a) if !a.is_empty() => Ok(a),
            Answer::Found(_) | Answer::NotFound => {
                if void {
                    self.count_void()?;
                }
                Ok(Vec::new())
            }
            Answer::Error(e) => Err(temp(format!("address lookup {name}: {e}"))),
        }
    }

    async fn mx_matches(&mut self, target: &str, cidr4: u8, cidr6: u8) -> Result<bool, Abort> {
        let hosts = match self.dns.mx(target).await {
            Answer::Found(h) if !h.is_empty() => h,
            Answer::Found(_) | Answer::NotFound => return self.count_void().map(|_| false),
            Answer::Error(e) => return Err(temp(format!("MX {target}: {e}"))),
        };
        if hosts.len() > MAX_NAMES {
            return Err(perm(format!("MX {target} has more than 10 names")));
        }
        for host in hosts.iter().filter(|h| !h.is_empty() && *h != ".") {
            let found = self.addresses(host, false).await?;
            if found.iter().any(|a| self.in_dual(*a, cidr4, cidr6)) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The client's PTR names whose forward lookup gives the client's
    /// address back (§5.5); a DNS error means no names.
    async fn validated_names(&mut self) -> Result<Vec<String>, Abort> {
        let names = match self.dns.ptr(self.ip).await {
            Answer::Found(n) if !n.is_empty() => n,
            Answer::Found(_) | Answer::NotFound => {
                self.count_void()?;
                return Ok(Vec::new());
            }
            Answer::Error(_) => return Ok(Vec::new()),
        };
        let mut out = Vec::new();
        for name in names.into_iter().take(MAX_NAMES) {
            if let Answer::Found(addrs) = self.family_lookup(&name).await
                && addrs.contains(&self.ip)
            {
                out.push(name);
            }
        }
        Ok(out)
    }

    async fn optional_target(
        &mut self,
        spec: Option<&MacroString>,
        domain: &str,
    ) -> Result<String, Abort> {
        match spec {
            Some(spec) => self.target(spec, domain).await,
            None => Ok(domain.to_owned()),
        }
    }

    /// A domain-spec expanded into the name to query (§4.8, §7.3).
    async fn target(&mut self, spec: &MacroString, domain: &str) -> Result<String, Abort> {
        let p = self.p_value(spec, domain).await;
        let expanded = self.expand(spec, domain, &p);
        Ok(truncate(&expanded))
    }

    /// The `p` macro's value, looked up only when the string uses it.
    async fn p_value(&mut self, spec: &MacroString, domain: &str) -> String {
        if !spec.uses('p') {
            return String::new();
        }
        let names = self.validated_names().await.unwrap_or_default();
        names
            .iter()
            .find(|n| is_within(n, domain))
            .or(names.first())
            .map_or_else(
                || "unknown".to_owned(),
                |n| n.trim_end_matches('.').to_owned(),
            )
    }

    fn expand(&self, spec: &MacroString, domain: &str, p: &str) -> String {
        let values = MacroValues {
            sender_local: self.local,
            sender_domain: self.sender_domain,
            domain,
            ip: self.ip,
            helo: self.helo,
            receiver: self.receiver,
            now: self.now,
            p,
        };
        values.expand(spec)
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

/// Whether `ip` is in `net/len`; addresses of different families never
/// match.
fn in_network(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// `name` is `domain` or below it (case-insensitive, trailing dots aside).
fn is_within(name: &str, domain: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    name == domain || name.ends_with(&format!(".{domain}"))
}

/// §4.8: an expanded name longer than 253 octets loses labels from the
/// left until it fits.
fn truncate(name: &str) -> String {
    let mut name = name.trim_end_matches('.');
    while name.len() > 253 {
        match name.split_once('.') {
            Some((_, rest)) => name = rest,
            None => break,
        }
    }
    name.to_owned()
}

/// The values macros expand to (§7.2).
struct MacroValues<'a> {
    sender_local: &'a str,
    sender_domain: &'a str,
    domain: &'a str,
    ip: IpAddr,
    helo: &'a str,
    receiver: &'a str,
    now: u64,
    p: &'a str,
}

impl MacroValues<'_> {
    fn expand(&self, spec: &MacroString) -> String {
        spec.0
            .iter()
            .map(|piece| match piece {
                Piece::Literal(t) => t.clone(),
                Piece::Escape(t) => (*t).to_owned(),
                Piece::Macro(m) => transform(&self.value(m.letter), m),
            })
            .collect()
    }

    fn value(&self, letter: char) -> String {
        match letter {
            's' => format!("{}@{}", self.sender_local, self.sender_domain),
            'l' => self.sender_local.to_owned(),
            'o' => self.sender_domain.to_owned(),
            'd' => self.domain.to_owned(),
            'i' => dotted_ip(self.ip),
            'p' => self.p.to_owned(),
            'v' => if self.ip.is_ipv4() { "in-addr" } else { "ip6" }.to_owned(),
            'h' => self.helo.to_owned(),
            'c' => self.ip.to_string(),
            'r' => self.receiver.to_owned(),
            't' => self.now.to_string(),
            _ => String::new(),
        }
    }
}

/// `i`: dotted decimal, or (§7.3) 32 dot-separated nibbles for IPv6.
fn dotted_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let hex: Vec<String> = v6
                .octets()
                .iter()
                .flat_map(|b| [b >> 4, b & 0xf])
                .map(|n| format!("{n:x}"))
                .collect();
            hex.join(".")
        }
    }
}

/// Split on the delimiters, maybe reverse, keep the rightmost parts,
/// join with dots; URL-escape for an upper-case letter (§7.3).
fn transform(value: &str, m: &Macro) -> String {
    let delimiters = if m.delimiters.is_empty() {
        "."
    } else {
        m.delimiters.as_str()
    };
    let mut parts: Vec<&str> = value.split(|c| delimiters.contains(c)).collect();
    if m.reverse {
        parts.reverse();
    }
    if let Some(keep) = m.keep {
        let skip = parts.len().saturating_sub(keep);
        parts.drain(..skip);
    }
    let joined = parts.join(".");
    if m.escape {
        url_escape(&joined)
    } else {
        joined
    }
}

fn url_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

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
