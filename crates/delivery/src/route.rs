//! Where mail for a domain goes (RFC 5321 §5.1): its MX hosts in order of
//! preference, shuffled among equals, each with its addresses; the domain
//! itself when it has no MX (implicit MX); nowhere for a null MX (RFC
//! 7505). The router asks through [`MxResolver`], so tests route with a
//! table; [`DnsRoutes`] asks DNS.

use crate::BoxFuture;
use portcullis_dns::hickory_resolver::TokioResolver;
use portcullis_dns::hickory_resolver::proto::rr::RData;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MxHost {
    pub name: String,
    pub preference: u16,
    pub addrs: Vec<IpAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Hosts(Vec<MxHost>),
    /// `MX 0 .`: the domain accepts no mail (RFC 7505) — bounce at once.
    NullMx,
    /// NXDOMAIN: no such domain.
    NoSuchDomain,
    /// The lookup failed for now; try again later.
    TempFail(String),
}

/// Where a domain's mail goes.
pub trait MxResolver: Send + Sync {
    fn route<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Route>;
}

/// Routes from DNS: MX records, then each exchanger's addresses.
pub struct DnsRoutes {
    resolver: TokioResolver,
}

impl DnsRoutes {
    /// `nameservers` empty: the system resolver.
    pub fn new(
        nameservers: &[SocketAddr],
        timeout: Duration,
    ) -> Result<DnsRoutes, portcullis_dns::ResolverError> {
        Ok(DnsRoutes {
            resolver: portcullis_dns::resolver(nameservers, timeout)?,
        })
    }

    async fn lookup(&self, domain: &str) -> Route {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        let mut mx: Vec<(u16, String)> = match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(m) => Some((
                        m.preference,
                        m.exchange.to_ascii().trim_end_matches('.').to_owned(),
                    )),
                    _ => None,
                })
                .collect(),
            Err(e) if e.is_nx_domain() => return Route::NoSuchDomain,
            Err(e) if e.is_no_records_found() => Vec::new(),
            Err(e) => return Route::TempFail(dns_failure(&format!("MX for {domain}"), &e)),
        };
        if mx.len() == 1 && mx[0].1.is_empty() {
            return Route::NullMx;
        }
        if mx.is_empty() {
            // RFC 5321 §5.1: no MX, the domain's own address records.
            mx.push((0, domain.trim_end_matches('.').to_owned()));
        }
        shuffle_equal_preferences(&mut mx);
        let mut hosts = Vec::new();
        for (preference, name) in mx {
            if let Ok(ips) = self.resolver.lookup_ip(format!("{name}.").as_str()).await {
                let mut addrs: Vec<IpAddr> = ips.iter().collect();
                // Both families, IPv6 first (the white paper's "Practical
                // Considerations"), the other as fallback.
                addrs.sort_by_key(|a| !a.is_ipv6());
                hosts.push(MxHost {
                    name,
                    preference,
                    addrs,
                });
            }
        }
        if hosts.is_empty() {
            return Route::TempFail(format!("no address for any mail exchanger of {domain}"));
        }
        Route::Hosts(hosts)
    }
}

impl MxResolver for DnsRoutes {
    fn route<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Route> {
        Box::pin(self.lookup(domain))
    }
}

/// A lookup that failed for now, in words that say it was DNS (the queue
/// shows this as the reason a message waits).
fn dns_failure(what: &str, e: &portcullis_dns::hickory_resolver::net::NetError) -> String {
    match e {
        portcullis_dns::hickory_resolver::net::NetError::Timeout => {
            format!("DNS lookup of {what} timed out")
        }
        e => format!("DNS lookup of {what} failed: {e}"),
    }
}

/// Sort by preference; within one preference, a rotation picked from the
/// clock, which spreads load across equal MX hosts (RFC 5321 §5.1).
fn shuffle_equal_preferences(mx: &mut [(u16, String)]) {
    mx.sort();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize);
    let mut start = 0;
    while start < mx.len() {
        let pref = mx[start].0;
        let end = start + mx[start..].iter().take_while(|(p, _)| *p == pref).count();
        let group = &mut mx[start..end];
        let n = group.len();
        group.rotate_left(seed % n);
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dns_timeout_says_it_was_dns() {
        use portcullis_dns::hickory_resolver::net::NetError;
        assert_eq!(
            dns_failure("MX for example.test", &NetError::Timeout),
            "DNS lookup of MX for example.test timed out"
        );
    }

    #[test]
    fn equal_preferences_stay_together_in_order_of_preference() {
        let mut mx = vec![
            (20, "c".to_owned()),
            (10, "a".into()),
            (10, "b".into()),
            (30, "d".into()),
        ];
        shuffle_equal_preferences(&mut mx);
        let prefs: Vec<u16> = mx.iter().map(|(p, _)| *p).collect();
        assert_eq!(prefs, vec![10, 10, 20, 30]);
        let mut firsts: Vec<&str> = mx[..2].iter().map(|(_, n)| n.as_str()).collect();
        firsts.sort();
        assert_eq!(firsts, vec!["a", "b"]);
    }
}
