//! `[[milter]]` tables: the milters every message passes, in order.

use super::Invalid;
use crate::{ListenerRole, Milter, MilterFailure, MilterSocket, MilterStep};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMilter {
    name: Option<String>,
    socket: Spanned<String>,
    roles: Option<Spanned<Vec<ListenerRole>>>,
    timeout_ms: Option<Spanned<u64>>,
    #[serde(default)]
    on_failure: MilterFailure,
    #[serde(default)]
    skip: Vec<MilterStep>,
    #[serde(default)]
    macros: BTreeMap<String, String>,
    max_connections: Option<Spanned<usize>>,
}

impl RawMilter {
    pub(crate) fn validate(self) -> Result<Milter, Invalid> {
        let socket = parse_socket(&self.socket)?;
        let roles = match self.roles {
            Some(r) if r.get_ref().is_empty() || r.get_ref().contains(&ListenerRole::Policy) => {
                let why = "roles must name SMTP listener roles (mx, submission, submissions)";
                return Err((r.span().start, why.to_owned()));
            }
            Some(r) => r.into_inner(),
            None => vec![
                ListenerRole::Mx,
                ListenerRole::Submission,
                ListenerRole::Submissions,
            ],
        };
        let timeout_ms = match self.timeout_ms {
            Some(t) if *t.get_ref() == 0 => {
                return Err((t.span().start, "timeout_ms must be above 0".to_owned()));
            }
            Some(t) => t.into_inner(),
            None => Milter::DEFAULT_TIMEOUT_MS,
        };
        let max_connections = match self.max_connections {
            Some(m) if *m.get_ref() == 0 => {
                return Err((m.span().start, "max_connections must be above 0".to_owned()));
            }
            Some(m) => m.into_inner(),
            None => Milter::DEFAULT_MAX_CONNECTIONS,
        };
        Ok(Milter {
            name: self.name.unwrap_or_else(|| self.socket.get_ref().clone()),
            socket,
            roles,
            timeout_ms,
            on_failure: self.on_failure,
            skip: self.skip,
            macros: self.macros.into_iter().collect(),
            max_connections,
        })
    }
}

/// `unix:/path` (absolute) or `inet:host:port` (`inet6:` too, as Postfix
/// writes it; `[::1]:port` for an IPv6 literal).
fn parse_socket(s: &Spanned<String>) -> Result<MilterSocket, Invalid> {
    let at = s.span().start;
    let bad = || {
        (
            at,
            format!(
                "{:?} is not unix:/path or inet:host:port (e.g. \"inet:127.0.0.1:8891\")",
                s.get_ref()
            ),
        )
    };
    let v = s.get_ref();
    if let Some(path) = v.strip_prefix("unix:") {
        let path = PathBuf::from(path);
        return if path.is_absolute() {
            Ok(MilterSocket::Unix(path))
        } else {
            Err(bad())
        };
    }
    let rest = v
        .strip_prefix("inet:")
        .or_else(|| v.strip_prefix("inet6:"))
        .ok_or_else(bad)?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok(MilterSocket::Inet {
        host: host.to_owned(),
        port,
    })
}
