//! Sites: destinations grouped by the MX hosts they resolve to (KumoMTA's
//! "site name"), so that every domain hosted at one provider shares one
//! set of limits. A provider the table knows (Google, Microsoft, Yahoo,
//! Apple, or one of the operator's `[[delivery.site]]` entries) is named
//! by its MX host patterns; any other destination's site is its sorted
//! set of MX host names, and it gets the generic limits.

use serde::{Deserialize, Serialize};

/// What one site may take from us.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteLimits {
    /// Connections open to the site at once.
    pub max_connections: u32,
    /// Messages one connection carries before it is closed (0: no limit).
    pub messages_per_connection: u32,
    /// Messages a minute (0: no limit until a rate answer sets one).
    pub messages_per_minute: u32,
    /// Connections opened a minute (0: no limit).
    pub connections_per_minute: u32,
}

impl Default for SiteLimits {
    fn default() -> Self {
        SiteLimits {
            max_connections: 20,
            messages_per_connection: 0,
            messages_per_minute: 0,
            connections_per_minute: 0,
        }
    }
}

/// A `[[delivery.site]]` table: a provider's MX host patterns and the
/// limits that differ from the built-in or generic ones. An entry named
/// like a built-in one (`google`, `microsoft`, `yahoo`, `apple`) changes
/// that entry.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteRule {
    pub name: String,
    /// MX host names, `*.` for any subdomain: `*.mail.protection.outlook.com`.
    #[serde(default)]
    pub mx: Vec<String>,
    pub max_connections: Option<u32>,
    pub messages_per_connection: Option<u32>,
    pub messages_per_minute: Option<u32>,
    pub connections_per_minute: Option<u32>,
}

#[derive(Clone, Debug)]
struct Entry {
    name: String,
    mx: Vec<String>,
    limits: SiteLimits,
}

/// The site table: known providers, then the generic limits.
#[derive(Clone, Debug)]
pub struct Sites {
    entries: Vec<Entry>,
    generic: SiteLimits,
}

impl Default for Sites {
    fn default() -> Self {
        Sites::new(&[], SiteLimits::default())
    }
}

fn limits(c: u32, per_conn: u32, per_min: u32, conn_per_min: u32) -> SiteLimits {
    SiteLimits {
        max_connections: c,
        messages_per_connection: per_conn,
        messages_per_minute: per_min,
        connections_per_minute: conn_per_min,
    }
}

/// The large providers, by their MX hosts, with limits well inside what
/// their postmaster pages describe; a rate answer lowers them further.
fn builtin() -> Vec<Entry> {
    let e = |name: &str, mx: &[&str], limits| Entry {
        name: name.to_owned(),
        mx: mx.iter().map(|s| (*s).to_owned()).collect(),
        limits,
    };
    vec![
        e(
            "google",
            &["*.google.com", "*.googlemail.com"],
            limits(10, 100, 600, 0),
        ),
        e(
            "microsoft",
            &["*.protection.outlook.com", "*.outlook.com", "*.hotmail.com"],
            limits(8, 50, 300, 0),
        ),
        e(
            "yahoo",
            &["*.yahoodns.net", "*.yahoo.com", "*.aol.com"],
            limits(5, 20, 120, 0),
        ),
        e(
            "apple",
            &["*.mail.icloud.com", "*.me.com"],
            limits(5, 20, 120, 0),
        ),
    ]
}

/// Whether `host` matches `pattern` (`*.` for any subdomain), without
/// regard to case or a final dot.
fn host_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.');
    let pattern = pattern.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host
                    .to_ascii_lowercase()
                    .ends_with(&format!(".{}", suffix.to_ascii_lowercase()))
        }
        None => host.eq_ignore_ascii_case(pattern),
    }
}

impl Sites {
    /// The built-in providers changed and added to by `operator`, and
    /// `generic` for every other site.
    pub fn new(operator: &[SiteRule], generic: SiteLimits) -> Sites {
        let mut entries = builtin();
        for rule in operator {
            let at = entries.iter().position(|e| e.name == rule.name);
            let base = at.map_or(generic, |i| entries[i].limits);
            let limits = SiteLimits {
                max_connections: rule.max_connections.unwrap_or(base.max_connections),
                messages_per_connection: rule
                    .messages_per_connection
                    .unwrap_or(base.messages_per_connection),
                messages_per_minute: rule.messages_per_minute.unwrap_or(base.messages_per_minute),
                connections_per_minute: rule
                    .connections_per_minute
                    .unwrap_or(base.connections_per_minute),
            };
            match at {
                Some(i) => {
                    entries[i].limits = limits;
                    if !rule.mx.is_empty() {
                        entries[i].mx = rule.mx.clone();
                    }
                }
                // The operator's own entries come before the built-in
                // ones, so they can claim hosts a built-in pattern covers.
                None => entries.insert(
                    0,
                    Entry {
                        name: rule.name.clone(),
                        mx: rule.mx.clone(),
                        limits,
                    },
                ),
            }
        }
        Sites { entries, generic }
    }

    /// The site of a destination whose MX hosts are `hosts` (in any
    /// order), and its limits.
    pub fn site_of<'a>(&self, hosts: impl IntoIterator<Item = &'a str>) -> (String, SiteLimits) {
        let mut names: Vec<String> = hosts
            .into_iter()
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
            .collect();
        for e in &self.entries {
            if names
                .iter()
                .any(|h| e.mx.iter().any(|p| host_matches(p, h)))
            {
                return (e.name.clone(), e.limits);
            }
        }
        names.sort();
        names.dedup();
        (names.join(","), self.generic)
    }

    /// The limits of a site by its name (the generic ones for a site
    /// named by its hosts).
    pub fn limits(&self, site: &str) -> SiteLimits {
        self.entries
            .iter()
            .find(|e| e.name == site)
            .map_or(self.generic, |e| e.limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_workspace_domains_share_the_google_site() {
        let s = Sites::default();
        let a = s.site_of(["aspmx.l.google.com", "alt1.aspmx.l.google.com."]);
        let b = s.site_of(["smtp.google.com"]);
        assert_eq!(a.0, "google");
        assert_eq!(b.0, "google");
        assert_eq!(a.1.max_connections, 10);
    }

    #[test]
    fn the_other_providers_are_known_by_their_mx_hosts() {
        let s = Sites::default();
        assert_eq!(
            s.site_of(["example-com.mail.protection.outlook.com"]).0,
            "microsoft"
        );
        assert_eq!(s.site_of(["mta5.am0.yahoodns.net"]).0, "yahoo");
        assert_eq!(s.site_of(["mx01.mail.icloud.com"]).0, "apple");
    }

    #[test]
    fn an_unknown_destination_is_its_sorted_mx_set_with_generic_limits() {
        let generic = limits(3, 0, 60, 0);
        let s = Sites::new(&[], generic);
        let a = s.site_of(["MX2.example.test", "mx1.example.test"]);
        let b = s.site_of(["mx1.example.test", "mx2.example.test", "mx1.example.test"]);
        assert_eq!(a, ("mx1.example.test,mx2.example.test".to_owned(), generic));
        assert_eq!(a, b);
    }

    #[test]
    fn a_pattern_does_not_match_the_bare_suffix_or_a_lookalike() {
        assert!(!host_matches("*.google.com", "google.com"));
        assert!(!host_matches("*.google.com", "evilgoogle.com"));
        assert!(host_matches("*.google.com", "ASPMX.L.Google.Com"));
    }

    #[test]
    fn an_operator_entry_overrides_a_built_in_one_key_by_key() {
        let rule = SiteRule {
            name: "google".into(),
            mx: vec![],
            max_connections: Some(2),
            messages_per_connection: None,
            messages_per_minute: Some(30),
            connections_per_minute: None,
        };
        let s = Sites::new(&[rule], SiteLimits::default());
        let (name, l) = s.site_of(["aspmx.l.google.com"]);
        assert_eq!(name, "google");
        assert_eq!(
            (
                l.max_connections,
                l.messages_per_connection,
                l.messages_per_minute
            ),
            (2, 100, 30)
        );
    }

    #[test]
    fn an_operator_site_groups_its_own_hosts() {
        let rule = SiteRule {
            name: "isp".into(),
            mx: vec!["*.mx.isp.test".into()],
            max_connections: Some(1),
            messages_per_connection: None,
            messages_per_minute: None,
            connections_per_minute: None,
        };
        let s = Sites::new(&[rule], limits(7, 0, 0, 0));
        let (name, l) = s.site_of(["a.mx.isp.test"]);
        assert_eq!((name.as_str(), l.max_connections), ("isp", 1));
        assert_eq!(s.limits("isp").max_connections, 1);
        assert_eq!(s.limits("a.example,b.example").max_connections, 7);
    }
}
