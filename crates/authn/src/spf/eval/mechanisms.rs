//! Whether one mechanism matches the client (RFC 7208 §5): all, include,
//! a, mx, ptr, ip4, ip6 and exists, with the address and PTR lookups they
//! need. Each DNS-querying term is counted against the limits in
//! `limits`; the qualifier and what a match means is the caller's
//! business.

use super::limits::MAX_NAMES;
use super::{Abort, Evaluation, perm, temp};
use crate::AuthResult;
use crate::spf::record::Mechanism;
use crate::spf::{Answer, SpfDns};
use std::net::IpAddr;

impl<D: SpfDns> Evaluation<'_, D> {
    pub(super) async fn matches(
        &mut self,
        mechanism: &Mechanism,
        domain: &str,
    ) -> Result<bool, Abort> {
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
    pub(super) async fn validated_names(&mut self) -> Result<Vec<String>, Abort> {
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
pub(super) fn is_within(name: &str, domain: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    name == domain || name.ends_with(&format!(".{domain}"))
}
