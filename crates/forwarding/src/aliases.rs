//! Aliases: a local address that expands to mailboxes here and/or
//! addresses elsewhere. Stored in `DATA/aliases.json`, edited by
//! `portcullis alias add|del|list`. Expansion stops at a depth limit and
//! at any alias already on the path or already in the message's
//! Delivered-To: fields, so a loop is detected once instead of mail
//! circling forever.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum AliasError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0:?} is not an address (local@domain)")]
    BadAddress(String),
    #[error("no alias {0}")]
    NoSuchAlias(String),
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Aliases {
    map: BTreeMap<String, Vec<String>>,
    path: Option<PathBuf>,
}

/// Where one recipient's mail goes. Each target carries the aliases it
/// was reached through (outermost first), for its Delivered-To: fields.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expansion {
    pub targets: Vec<(String, Vec<String>)>,
    /// Aliases whose expansion looped (or went too deep): bounced once.
    pub loops: Vec<String>,
}

fn normalize(address: &str) -> Result<String, AliasError> {
    let a = address.trim().trim_start_matches('<').trim_end_matches('>');
    match a.rsplit_once('@') {
        Some((l, d)) if !l.is_empty() && !d.is_empty() && !a.contains(char::is_whitespace) => Ok(
            format!("{l}@{}", d.trim_end_matches('.').to_ascii_lowercase()),
        ),
        _ => Err(AliasError::BadAddress(address.to_owned())),
    }
}

/// Local parts compare without case (RFC 5321 allows case-sensitive
/// local parts, but no mailbox here differs only in case).
fn key(address: &str) -> String {
    address.to_ascii_lowercase()
}

impl Aliases {
    pub fn load(path: &Path) -> Result<Aliases, AliasError> {
        let file_err = |message: String| AliasError::File {
            path: path.to_path_buf(),
            message,
        };
        let map = match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| file_err(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(file_err(e.to_string())),
        };
        Ok(Aliases {
            map,
            path: Some(path.to_path_buf()),
        })
    }

    pub fn save(&self) -> Result<(), AliasError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let file_err = |e: std::io::Error| AliasError::File {
            path: path.clone(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            // Before the server's first start the data dir may not exist.
            std::fs::create_dir_all(dir).map_err(file_err)?;
        }
        let tmp = path.with_extension("tmp");
        let json = serde_json::to_vec_pretty(&self.map).map_err(|e| AliasError::File {
            path: path.clone(),
            message: e.to_string(),
        })?;
        {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&tmp).map_err(file_err)?;
            f.write_all(&json).map_err(file_err)?;
            f.sync_all().map_err(file_err)?;
        }
        std::fs::rename(&tmp, path).map_err(file_err)
    }

    /// Add targets to an alias (creating it).
    pub fn add(&mut self, alias: &str, targets: &[String]) -> Result<(), AliasError> {
        let alias = key(&normalize(alias)?);
        let targets = targets
            .iter()
            .map(|t| normalize(t))
            .collect::<Result<Vec<_>, _>>()?;
        let list = self.map.entry(alias).or_default();
        for t in targets {
            if !list.iter().any(|x| key(x) == key(&t)) {
                list.push(t);
            }
        }
        Ok(())
    }

    pub fn remove(&mut self, alias: &str) -> Result<(), AliasError> {
        let k = key(&normalize(alias)?);
        self.map
            .remove(&k)
            .map(|_| ())
            .ok_or(AliasError::NoSuchAlias(k))
    }

    pub fn list(&self) -> impl Iterator<Item = (&String, &Vec<String>)> {
        self.map.iter()
    }

    pub fn is_alias(&self, address: &str) -> bool {
        self.map.contains_key(&key(address))
    }

    /// Expand `address` through the aliases. `delivered_to` are the
    /// message's Delivered-To: addresses (a loop through another host).
    pub fn expand(&self, address: &str, delivered_to: &[String], max_depth: usize) -> Expansion {
        let mut out = Expansion::default();
        self.walk(address, &mut Vec::new(), delivered_to, max_depth, &mut out);
        out
    }

    fn walk(
        &self,
        address: &str,
        path: &mut Vec<String>,
        seen: &[String],
        max_depth: usize,
        out: &mut Expansion,
    ) {
        let k = key(address);
        let Some(targets) = self.map.get(&k) else {
            if !out.targets.iter().any(|(t, _)| key(t) == k) {
                out.targets.push((address.to_owned(), path.clone()));
            }
            return;
        };
        let looped = path.iter().any(|p| key(p) == k) || seen.iter().any(|s| key(s) == k);
        if looped || path.len() >= max_depth {
            if !out.loops.contains(&k) {
                out.loops.push(k);
            }
            return;
        }
        path.push(address.to_owned());
        for t in targets {
            self.walk(t, path, seen, max_depth, out);
        }
        path.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aliases(pairs: &[(&str, &[&str])]) -> Aliases {
        let mut a = Aliases::default();
        for (alias, targets) in pairs {
            a.add(
                alias,
                &targets.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
            .unwrap();
        }
        a
    }

    #[test]
    fn expands_to_mailboxes_and_external_addresses_with_the_path() {
        let a = aliases(&[
            ("team@here.test", &["bob@here.test", "sales@here.test"]),
            ("sales@here.test", &["carol@far.test"]),
        ]);
        let e = a.expand("Team@here.test", &[], 8);
        assert_eq!(
            e.targets,
            [
                (
                    "bob@here.test".to_string(),
                    vec!["Team@here.test".to_string()]
                ),
                (
                    "carol@far.test".to_string(),
                    vec!["Team@here.test".to_string(), "sales@here.test".to_string()]
                ),
            ]
        );
        assert!(e.loops.is_empty());
    }

    #[test]
    fn a_loop_is_detected_once() {
        let a = aliases(&[
            ("a@h.test", &["b@h.test"]),
            ("b@h.test", &["a@h.test", "real@h.test"]),
        ]);
        let e = a.expand("a@h.test", &[], 8);
        assert_eq!(e.loops, ["a@h.test"]);
        assert_eq!(
            e.targets,
            [(
                "real@h.test".to_string(),
                vec!["a@h.test".to_string(), "b@h.test".to_string()]
            )]
        );
    }

    #[test]
    fn a_loop_through_another_host_is_seen_in_delivered_to() {
        let a = aliases(&[("fwd@h.test", &["me@elsewhere.test"])]);
        let e = a.expand("fwd@h.test", &["fwd@h.test".to_string()], 8);
        assert_eq!(e.loops, ["fwd@h.test"]);
        assert!(e.targets.is_empty());
    }

    #[test]
    fn depth_is_limited() {
        let chain: Vec<(String, Vec<String>)> = (0..20)
            .map(|i| (format!("a{i}@h.test"), vec![format!("a{}@h.test", i + 1)]))
            .collect();
        let mut a = Aliases::default();
        for (k, v) in &chain {
            a.add(k, v).unwrap();
        }
        let e = a.expand("a0@h.test", &[], 8);
        assert_eq!(e.loops.len(), 1);
        assert!(e.targets.is_empty());
    }

    #[test]
    fn bad_addresses_are_refused() {
        let mut a = Aliases::default();
        assert!(a.add("no-at-sign", &["x@y.test".into()]).is_err());
        assert!(a.add("a@b.test", &["two words@x.test".into()]).is_err());
        assert!(a.remove("missing@b.test").is_err());
    }
}
