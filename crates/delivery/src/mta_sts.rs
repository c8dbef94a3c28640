//! MTA-STS at the edge (RFC 8461): the `_mta-sts` TXT lookup, the policy
//! fetch over HTTPS (verified against the system CAs plus
//! `[delivery] mta_sts_ca`, bounded in time and size, no redirects), and
//! the durable cache in `DATA/mta-sts/`, kept for the policy's max_age
//! across restarts. What a policy means is `crates/mtasts`; enforcing it
//! is the router's.

use crate::BoxFuture;
use portcullis_dns::hickory_resolver::TokioResolver;
use portcullis_mtasts::{Cached, MAX_POLICY_BYTES, Policy, Refresh, StsRecord};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

/// The headers of an answer: far more than any policy host sends.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// A destination's policy, if it has one (tests answer from a table).
pub trait StsSource: Send + Sync {
    fn policy<'a>(&'a self, domain: &'a str, now: u64) -> BoxFuture<'a, Option<Policy>>;
}

pub struct MtaSts {
    resolver: TokioResolver,
    https: tokio_rustls::TlsConnector,
    dir: PathBuf,
    memory: Mutex<HashMap<String, Cached>>,
    timeout: Duration,
    /// 443; tests that cannot bind it name another.
    port: u16,
}

impl MtaSts {
    /// `nameservers` empty: the system resolver.
    pub fn new(
        nameservers: &[SocketAddr],
        dns_timeout: Duration,
        extra_ca: &[PathBuf],
        dir: PathBuf,
        timeout: Duration,
    ) -> Result<MtaSts, String> {
        Ok(MtaSts {
            resolver: portcullis_dns::resolver(nameservers, dns_timeout)
                .map_err(|e| e.to_string())?,
            https: crate::client::verified_tls(extra_ca)?,
            dir,
            memory: Mutex::default(),
            timeout,
            port: 443,
        })
    }

    async fn lookup(&self, domain: &str, now: u64) -> Option<Policy> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let cached = self.cached(&domain);
        let record = self.record(&domain).await;
        match portcullis_mtasts::refresh(cached.as_ref(), record.as_ref(), now) {
            Refresh::UseCached => cached.map(|c| c.policy),
            Refresh::NoPolicy => None,
            Refresh::Fetch => {
                let fetched = tokio::time::timeout(self.timeout, self.fetch(&domain)).await;
                match fetched.unwrap_or_else(|_| Err("the fetch timed out".into())) {
                    Ok(policy) => {
                        let id = record.map(|r| r.id).unwrap_or_default();
                        info!(event = "mta_sts_policy", domain = %domain, mode = policy.mode.name(), id = %id);
                        self.store(
                            &domain,
                            Cached {
                                policy: policy.clone(),
                                id,
                                fetched_at: now,
                            },
                        );
                        Some(policy)
                    }
                    // §5.1: a failed refresh keeps an unexpired cached
                    // policy; with none, the domain has no policy yet.
                    Err(e) => {
                        warn!(event = "mta_sts_fetch_failed", domain = %domain, error = %e);
                        cached.filter(|c| !c.expired(now)).map(|c| c.policy)
                    }
                }
            }
        }
    }

    /// What a domain publishes now, ignoring the cache (the CLI's
    /// `portcullis mta-sts`): its record's id and policy, None without a
    /// record, or why the policy could not be had.
    pub async fn query(&self, domain: &str) -> Result<Option<(String, Policy)>, String> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let Some(record) = self.record(&domain).await else {
            return Ok(None);
        };
        let policy = tokio::time::timeout(self.timeout, self.fetch(&domain))
            .await
            .unwrap_or_else(|_| Err("the fetch timed out".into()))?;
        Ok(Some((record.id, policy)))
    }

    /// The one MTA-STS TXT record; None when there is none or DNS fails
    /// (a cached policy then still holds, §5.1).
    async fn record(&self, domain: &str) -> Option<StsRecord> {
        let texts =
            portcullis_dns::txt_records(&self.resolver, &format!("_mta-sts.{domain}.")).await;
        portcullis_mtasts::pick_record(texts.iter().map(String::as_str))
    }

    /// §3.3: GET https://mta-sts.DOMAIN/.well-known/mta-sts.txt, the
    /// certificate valid for that name, 200 and text/plain only (a
    /// redirect is a failure), the body at most 64 KiB.
    async fn fetch(&self, domain: &str) -> Result<Policy, String> {
        let host = format!("mta-sts.{domain}");
        let ips = self
            .resolver
            .lookup_ip(format!("{host}.").as_str())
            .await
            .map_err(|e| format!("{host}: {e}"))?;
        let addr = ips
            .iter()
            .next()
            .ok_or_else(|| format!("{host} has no address"))?;
        let tcp = tokio::net::TcpStream::connect(SocketAddr::new(addr, self.port))
            .await
            .map_err(|e| format!("{host}: {e}"))?;
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|_| format!("{host} is not a valid TLS server name"))?;
        let mut tls = self
            .https
            .connect(name, tcp)
            .await
            .map_err(|e| format!("{host}: TLS: {e}"))?;
        // HTTP/1.0: the answer is never chunked and ends with the
        // connection.
        let request = format!(
            "GET /.well-known/mta-sts.txt HTTP/1.0\r\nHost: {host}\r\nUser-Agent: portcullis\r\n\r\n"
        );
        tls.write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        let limit = (MAX_HEADER_BYTES + MAX_POLICY_BYTES + 1) as u64;
        match (&mut tls).take(limit).read_to_end(&mut answer).await {
            Ok(_) => {}
            // Many HTTP servers close without TLS close_notify; a
            // truncated body is caught by Content-Length below.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Err(e) => return Err(e.to_string()),
        }
        if answer.len() as u64 >= limit {
            return Err(format!(
                "the answer of {host} is larger than {MAX_POLICY_BYTES} bytes"
            ));
        }
        let body = policy_body(&answer).map_err(|e| format!("{host}: {e}"))?;
        portcullis_mtasts::parse_policy(body).map_err(|e| e.to_string())
    }

    fn path(&self, domain: &str) -> PathBuf {
        self.dir.join(format!("{domain}.json"))
    }

    fn cached(&self, domain: &str) -> Option<Cached> {
        if let Some(c) = self.memory.lock().ok()?.get(domain) {
            return Some(c.clone());
        }
        let c: Cached = serde_json::from_slice(&std::fs::read(self.path(domain)).ok()?).ok()?;
        self.memory
            .lock()
            .ok()?
            .insert(domain.to_owned(), c.clone());
        Some(c)
    }

    fn store(&self, domain: &str, c: Cached) {
        let saved = std::fs::create_dir_all(&self.dir)
            .and_then(|()| serde_json::to_vec(&c).map_err(std::io::Error::other))
            .and_then(|bytes| {
                let tmp = self.path(domain).with_extension("tmp");
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, self.path(domain))
            });
        if let Err(e) = saved {
            warn!(event = "mta_sts_cache_failed", domain = %domain, error = %e);
        }
        if let Ok(mut m) = self.memory.lock() {
            m.insert(domain.to_owned(), c);
        }
    }
}

impl StsSource for MtaSts {
    fn policy<'a>(&'a self, domain: &'a str, now: u64) -> BoxFuture<'a, Option<Policy>> {
        Box::pin(self.lookup(domain, now))
    }
}

/// The body of an HTTP answer that may be a policy: status 200 (§3.3:
/// redirects are not followed) and a text/plain media type.
fn policy_body(answer: &[u8]) -> Result<&str, String> {
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer has no end of headers")?;
    let head = std::str::from_utf8(&answer[..split]).map_err(|_| "the headers are not text")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" {
        return Err(format!(
            "answered {status:?}, not 200 (redirects are not followed)"
        ));
    }
    let headers: Vec<(&str, &str)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    };
    let plain =
        header("content-type").is_some_and(|v| v.to_ascii_lowercase().starts_with("text/plain"));
    if !plain {
        return Err("the policy is not served as text/plain".into());
    }
    let body = &answer[split + 4..];
    if let Some(length) = header("content-length").and_then(|v| v.parse::<usize>().ok())
        && length != body.len()
    {
        return Err(format!(
            "the answer was cut short ({} of {length} bytes)",
            body.len()
        ));
    }
    std::str::from_utf8(body).map_err(|_| "the policy is not UTF-8".into())
}

#[cfg(test)]
mod tests {
    use super::policy_body;

    #[test]
    fn takes_the_body_of_a_200_text_plain_answer() {
        let a =
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nversion: STSv1\r\n";
        assert_eq!(policy_body(a).unwrap(), "version: STSv1\r\n");
    }

    #[test]
    fn refuses_a_body_cut_short() {
        let a = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 99\r\n\r\nversion: STSv1\r\n";
        assert!(policy_body(a).unwrap_err().contains("cut short"));
    }

    #[test]
    fn refuses_a_redirect() {
        let a = b"HTTP/1.1 301 Moved\r\nLocation: https://elsewhere/\r\nContent-Type: text/plain\r\n\r\n";
        assert!(policy_body(a).unwrap_err().contains("redirects"));
    }

    #[test]
    fn refuses_another_media_type() {
        let a = b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\nversion: STSv1\r\n";
        assert!(policy_body(a).is_err());
    }
}
