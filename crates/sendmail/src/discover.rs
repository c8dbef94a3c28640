//! Where to submit (issue 9; RFC 6186; spamops §3.2): the SRV records
//! `_submissions._tcp` (implicit TLS) and `_submission._tcp` (STARTTLS) of
//! the domain; without them, the Thunderbird autoconfig file the domain
//! publishes; without that, the configured host on 465, then 587, then
//! 25 if allowed.

use hickory_resolver::TokioResolver;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte (465).
    Implicit,
    /// STARTTLS, required (587, or 25 when allowed).
    StartTls,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// How it was found, for the error message.
    pub via: &'static str,
}

pub fn resolver(nameservers: &[SocketAddr]) -> Result<TokioResolver, String> {
    let mut b = if nameservers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| e.to_string())?
    } else {
        let cfg = portcullis_dns::resolver_config(nameservers);
        TokioResolver::builder_with_config(cfg, TokioRuntimeProvider::default())
    };
    b.options_mut().timeout = Duration::from_secs(5);
    b.options_mut().attempts = 1;
    b.build().map_err(|e| e.to_string())
}

/// SRV candidates in RFC 6186 order: implicit TLS first, then by
/// priority (and weight, highest first, for simplicity).
pub async fn srv(r: &TokioResolver, domain: &str) -> Vec<Candidate> {
    let mut out = Vec::new();
    for (label, security) in [
        ("_submissions._tcp", Security::Implicit),
        ("_submission._tcp", Security::StartTls),
    ] {
        let Ok(answer) = r.srv_lookup(format!("{label}.{domain}.")).await else {
            continue;
        };
        let mut records: Vec<_> = answer
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        records.sort_by_key(|s| (s.priority, std::cmp::Reverse(s.weight)));
        for s in records {
            let host = s.target.to_utf8().trim_end_matches('.').to_owned();
            // RFC 6186 §3.4: a target of "." means the service is not offered.
            if host.is_empty() || s.port == 0 {
                continue;
            }
            out.push(Candidate {
                host,
                port: s.port,
                security,
                via: "SRV",
            });
        }
    }
    out
}

/// The outgoing servers of a Thunderbird autoconfig file
/// (`http://autoconfig.DOMAIN/mail/config-v1.1.xml`).
pub async fn autoconfig(domain: &str, port: u16, timeout: Duration) -> Vec<Candidate> {
    let host = format!("autoconfig.{domain}");
    let fetch = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .ok()?;
        let req = format!("GET /mail/config-v1.1.xml HTTP/1.0\r\nHost: {host}\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut body = Vec::new();
        (&mut s)
            .take(256 * 1024)
            .read_to_end(&mut body)
            .await
            .ok()?;
        Some(String::from_utf8_lossy(&body).into_owned())
    };
    match tokio::time::timeout(timeout, fetch).await {
        Ok(Some(text)) if text.starts_with("HTTP/1.") && text.contains(" 200 ") => {
            parse_autoconfig(&text)
        }
        _ => Vec::new(),
    }
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = s.find(open)? + open.len();
    let end = s[start..].find(close)? + start;
    Some(s[start..end].trim())
}

fn parse_autoconfig(text: &str) -> Vec<Candidate> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("<outgoingServer") {
        let block = &rest[i..];
        let end = block.find("</outgoingServer>").unwrap_or(block.len());
        let server = &block[..end];
        rest = &block[end..];
        if !server.contains("type=\"smtp\"") {
            continue;
        }
        let (Some(host), Some(port)) = (
            between(server, "<hostname>", "</hostname>"),
            between(server, "<port>", "</port>"),
        ) else {
            continue;
        };
        let security = match between(server, "<socketType>", "</socketType>") {
            Some("SSL") => Security::Implicit,
            Some("STARTTLS") => Security::StartTls,
            _ => continue, // plain: never with credentials
        };
        if let Ok(port) = port.parse() {
            out.push(Candidate {
                host: host.to_owned(),
                port,
                security,
                via: "autoconfig",
            });
        }
    }
    out.sort_by_key(|c| c.security != Security::Implicit);
    out
}

/// The configured host, on the ports spamops §3.2 names, in its order.
pub fn configured(host: &str, allow_port25: bool) -> Vec<Candidate> {
    let mut out = vec![
        Candidate {
            host: host.to_owned(),
            port: 465,
            security: Security::Implicit,
            via: "config",
        },
        Candidate {
            host: host.to_owned(),
            port: 587,
            security: Security::StartTls,
            via: "config",
        },
    ];
    if allow_port25 {
        out.push(Candidate {
            host: host.to_owned(),
            port: 25,
            security: Security::StartTls,
            via: "config",
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_outgoing_servers_from_autoconfig_and_skips_plain_ones() {
        let xml = r#"<clientConfig><emailProvider id="x"><incomingServer type="imap"><hostname>imap.x.test</hostname><port>993</port><socketType>SSL</socketType></incomingServer>
<outgoingServer type="smtp"><hostname>mail.x.test</hostname><port>587</port><socketType>STARTTLS</socketType></outgoingServer>
<outgoingServer type="smtp"><hostname>mail.x.test</hostname><port>465</port><socketType>SSL</socketType></outgoingServer>
<outgoingServer type="smtp"><hostname>mail.x.test</hostname><port>25</port><socketType>plain</socketType></outgoingServer></emailProvider></clientConfig>"#;
        let c = parse_autoconfig(xml);
        assert_eq!(
            c.iter().map(|c| (c.port, c.security)).collect::<Vec<_>>(),
            [(465, Security::Implicit), (587, Security::StartTls)]
        );
    }

    #[test]
    fn configured_order_is_465_587_then_25_only_when_allowed() {
        assert_eq!(
            configured("h", false)
                .iter()
                .map(|c| c.port)
                .collect::<Vec<_>>(),
            [465, 587]
        );
        assert_eq!(
            configured("h", true)
                .iter()
                .map(|c| c.port)
                .collect::<Vec<_>>(),
            [465, 587, 25]
        );
    }
}
