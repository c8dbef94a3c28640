//! How portcullis asks DNS: the name servers of `[dns] nameservers` (each
//! on its own port, UDP then TCP) or the system's, with the configured
//! timeout and one attempt, and never `/etc/hosts` (an answer about mail
//! must come from DNS, not from the local machine's idea of `localhost`).
//!
//! Every room that resolves names (authentication checks, the delivery
//! router, the sendmail client) builds its resolver here, so they all ask
//! the same servers the same way. This crate decides nothing about the
//! answers.

pub use hickory_resolver;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use std::net::SocketAddr;
use std::time::Duration;

/// Why no resolver could be made (an unreadable /etc/resolv.conf, say).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the DNS resolver: {0}")]
pub struct ResolverError(String);

/// A resolver config asking exactly these servers (UDP, then TCP), each
/// on its own port: what tests and operators name in `[dns] nameservers`.
pub fn resolver_config(nameservers: &[SocketAddr]) -> ResolverConfig {
    let servers = nameservers
        .iter()
        .map(|sa| {
            let mut ns = NameServerConfig::udp_and_tcp(sa.ip());
            for c in &mut ns.connections {
                c.port = sa.port();
            }
            ns
        })
        .collect();
    ResolverConfig::from_name_servers(servers)
}

/// Options for configured name servers: one attempt within `timeout`,
/// and DNS only (no hosts file).
pub fn resolver_opts(timeout: Duration) -> ResolverOpts {
    let mut opts = ResolverOpts::default();
    opts.timeout = timeout;
    opts.attempts = 1;
    opts.use_hosts_file = ResolveHosts::Never;
    opts
}

/// The resolver for `nameservers`, or the system's when it is empty.
pub fn resolver(
    nameservers: &[SocketAddr],
    timeout: Duration,
) -> Result<TokioResolver, ResolverError> {
    build(nameservers, timeout, |_| {})
}

/// A resolver that keeps no negative answer: for the periodic checks
/// (is the new DKIM record published yet? does a report destination
/// confirm?), where "not yet" must not be remembered for the zone's
/// negative TTL after the record appears.
pub fn resolver_without_negative_cache(
    nameservers: &[SocketAddr],
    timeout: Duration,
) -> Result<TokioResolver, ResolverError> {
    build(nameservers, timeout, |o| {
        o.negative_max_ttl = Some(Duration::ZERO)
    })
}

/// The resolver of a periodic task that runs every `every` seconds, or
/// None (said in the log) when the task is off (`every` 0) or no resolver
/// can be made: the task then does not run.
pub fn periodic_resolver(
    nameservers: &[SocketAddr],
    timeout: Duration,
    every: u64,
    task: &'static str,
) -> Option<TokioResolver> {
    if every == 0 {
        return None;
    }
    match resolver_without_negative_cache(nameservers, timeout) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(event = "periodic_task_off", task, error = %e);
            None
        }
    }
}

fn build(
    nameservers: &[SocketAddr],
    timeout: Duration,
    adjust: impl FnOnce(&mut ResolverOpts),
) -> Result<TokioResolver, ResolverError> {
    let (config, mut opts) = if nameservers.is_empty() {
        hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| ResolverError(e.to_string()))?
    } else {
        (resolver_config(nameservers), resolver_opts(timeout))
    };
    adjust(&mut opts);
    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .map_err(|e| ResolverError(e.to_string()))
}

/// The TXT records at `name` (a fully qualified name, trailing dot), each
/// record's strings joined; empty when there are none or the lookup
/// fails (callers that must tell the two apart ask hickory themselves).
pub async fn txt_records(resolver: &TokioResolver, name: &str) -> Vec<String> {
    use hickory_resolver::proto::rr::{RData, RecordType};
    let Ok(lookup) = resolver.lookup(name, RecordType::TXT).await else {
        return Vec::new();
    };
    lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(t) => Some(
                t.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}
