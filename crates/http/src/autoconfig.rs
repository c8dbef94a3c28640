//! What mail clients are told so that users do not type servers and
//! ports: Thunderbird's autoconfig file (clientConfig 1.1) and Outlook's
//! POX autodiscover answer, both naming the mailbox server of `[autoconfig]`
//! (IMAP, POP3) and our submission listeners. Only for our own domains:
//! answering for any domain would make us the provider of gmail.com to
//! whoever asks. Plain functions of the config; `http.rs` serves them.

use portcullis_config::{Config, ListenerRole, MailboxServer, TlsMode};
use std::fmt::Write as _;

/// The domain a Thunderbird request asks about, or `None` when it names one
/// we do not serve. Thunderbird asks `autoconfig.DOMAIN/mail/...` and
/// `DOMAIN/.well-known/autoconfig/...`, usually with `?emailaddress=`; the
/// address wins over the Host header. A request to an address literal (or
/// with no Host) asks for our first domain.
pub(crate) fn requested_domain(
    config: &Config,
    emailaddress: Option<&str>,
    host: Option<&str>,
) -> Option<String> {
    let domain = match (emailaddress, host) {
        (Some(email), _) => email.rsplit_once('@')?.1.to_owned(),
        (None, Some(host)) => {
            let name = strip_port(host);
            if name.parse::<std::net::IpAddr>().is_ok() {
                return config.local_domains.first().cloned();
            }
            name.strip_prefix("autoconfig.").unwrap_or(name).to_owned()
        }
        (None, None) => return config.local_domains.first().cloned(),
    };
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    config.is_local_domain(&domain).then_some(domain)
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` without the port and brackets.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

/// The domain of an address, when it is one of ours.
pub(crate) fn local_domain_of(config: &Config, email: &str) -> Option<String> {
    let (local, domain) = email.rsplit_once('@')?;
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    (!local.is_empty() && config.is_local_domain(&domain)).then_some(domain)
}

/// The first port of the listener with `role`.
fn port(config: &Config, role: ListenerRole) -> Option<u16> {
    config.listener_addr(role).map(|a| a.port())
}

/// Our submission endpoints, implicit TLS first (RFC 8314 §3.3 prefers
/// it): (port, implicit TLS).
fn submission(config: &Config) -> Vec<(u16, bool)> {
    [
        (ListenerRole::Submissions, true),
        (ListenerRole::Submission, false),
    ]
    .into_iter()
    .filter_map(|(role, implicit)| port(config, role).map(|p| (p, implicit)))
    .collect()
}

/// The mailbox servers, with the protocol name each client uses.
fn mailbox_servers(config: &Config) -> Vec<(&'static str, &'static str, &MailboxServer)> {
    let a = &config.autoconfig;
    [("imap", "IMAP", &a.imap), ("pop3", "POP3", &a.pop3)]
        .into_iter()
        .filter_map(|(tb, ol, s)| s.as_ref().map(|s| (tb, ol, s)))
        .collect()
}

pub(crate) fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// Thunderbird's clientConfig 1.1 for `domain`, or `None` when it is not
/// ours: https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat
///
/// Without `[autoconfig] imap` or `pop3` the file lists only our outgoing
/// servers: Thunderbird refuses it and goes on to its other sources, but
/// submission clients (`portcullis sendmail`) find their server in it.
pub(crate) fn thunderbird(config: &Config, domain: &str) -> Option<String> {
    if !config.is_local_domain(domain) {
        return None;
    }
    let incoming = mailbox_servers(config);
    let d = xml_escape(domain);
    let mut servers = String::new();
    for (kind, _, s) in incoming {
        let socket = match s.tls {
            TlsMode::Tls => "SSL",
            TlsMode::Starttls => "STARTTLS",
        };
        let _ = write!(
            servers,
            "    <incomingServer type=\"{kind}\">\n      <hostname>{}</hostname>\n      <port>{}</port>\n      <socketType>{socket}</socketType>\n      <authentication>password-cleartext</authentication>\n      <username>%EMAILADDRESS%</username>\n    </incomingServer>\n",
            xml_escape(&s.host),
            s.port
        );
    }
    let host = xml_escape(&config.hostname);
    for (p, implicit) in submission(config) {
        let socket = if implicit { "SSL" } else { "STARTTLS" };
        let _ = write!(
            servers,
            "    <outgoingServer type=\"smtp\">\n      <hostname>{host}</hostname>\n      <port>{p}</port>\n      <socketType>{socket}</socketType>\n      <authentication>password-cleartext</authentication>\n      <username>%EMAILADDRESS%</username>\n    </outgoingServer>\n"
        );
    }
    Some(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<clientConfig version=\"1.1\">\n  <emailProvider id=\"{d}\">\n    <domain>{d}</domain>\n    <displayName>{d} mail</displayName>\n    <displayShortName>{d}</displayShortName>\n{servers}  </emailProvider>\n</clientConfig>\n"
    ))
}

/// The address an Outlook POX request names (`<EMailAddress>`).
pub(crate) fn outlook_address(request: &str) -> Option<&str> {
    let email = request
        .split("<EMailAddress>")
        .nth(1)?
        .split("</EMailAddress>")
        .next()?
        .trim();
    (email.len() <= 320 && email.contains('@')).then_some(email)
}

/// Outlook's POX autodiscover answer for `email` (of one of our domains):
/// one `Protocol` per mailbox server and per submission listener, as the
/// "Outlook" response schema (2006a) describes them.
pub(crate) fn outlook(config: &Config, email: &str) -> Option<String> {
    local_domain_of(config, email)?;
    let login = xml_escape(email);
    let mut protocols = String::new();
    let mut protocol = |kind: &str, server: &str, port: u16, implicit: bool| {
        // SSL says whether the connection is encrypted at all; Encryption
        // (which Outlook prefers when present) says how.
        let enc = if implicit { "SSL" } else { "TLS" };
        let _ = write!(
            protocols,
            "      <Protocol>\n        <Type>{kind}</Type>\n        <Server>{}</Server>\n        <Port>{port}</Port>\n        <SSL>on</SSL>\n        <Encryption>{enc}</Encryption>\n        <SPA>off</SPA>\n        <AuthRequired>on</AuthRequired>\n        <LoginName>{login}</LoginName>\n      </Protocol>\n",
            xml_escape(server)
        );
    };
    for (_, kind, s) in mailbox_servers(config) {
        protocol(kind, &s.host, s.port, s.tls == TlsMode::Tls);
    }
    for (p, implicit) in submission(config) {
        protocol("SMTP", &config.hostname, p, implicit);
    }
    Some(format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006\">\n  <Response xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a\">\n    <Account>\n      <AccountType>email</AccountType>\n      <Action>settings</Action>\n{protocols}    </Account>\n  </Response>\n</Autodiscover>\n"
    ))
}

/// RFC 6186 SRV records for the mailbox servers of `[autoconfig]`:
/// `_imaps`/`_pop3s` for implicit TLS, `_imap`/`_pop3` for STARTTLS.
pub fn srv_records(config: &Config, domain: &str) -> Vec<String> {
    mailbox_servers(config)
        .into_iter()
        .map(|(kind, _, s)| {
            let service = match s.tls {
                TlsMode::Tls => format!("_{kind}s"),
                TlsMode::Starttls => format!("_{kind}"),
            };
            let target = s.host.trim_end_matches('.');
            format!("{service}._tcp.{domain}. IN SRV 0 1 {} {target}.", s.port)
        })
        .collect()
}

#[cfg(test)]
mod tests;
