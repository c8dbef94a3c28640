//! The account file: `accounts.json` in the data dir, rewritten atomically
//! (write, fsync, rename, fsync dir) so a crash never leaves half a file.

use crate::password::{self, PasswordError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid account file: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("no account {0}")]
    NoSuchAccount(String),
    #[error("account {0} already exists")]
    Exists(String),
    #[error("{0:?} is not an email address")]
    BadAddress(String),
    #[error(transparent)]
    Password(#[from] PasswordError),
}

/// One submission account.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Account {
    /// The login name, an address, lower case.
    pub address: String,
    /// PHC string or Dovecot `{SCHEME}hash`. Never logged.
    pub password_hash: String,
    /// Further addresses this account may send as: `alias@domain`, or
    /// `@domain` for a whole domain.
    #[serde(default)]
    pub owns: Vec<String>,
    /// May use any envelope sender and From: (the OP25B draft's
    /// "alternative MSA" for customers with their own domains).
    #[serde(default)]
    pub any_sender: bool,
}

impl Account {
    /// Whether this account may send as `address` (case-insensitive).
    pub fn owns(&self, address: &str) -> bool {
        let a = address.to_ascii_lowercase();
        if self.any_sender || a == self.address {
            return true;
        }
        let domain = a.rsplit_once('@').map(|(_, d)| d);
        self.owns.iter().any(|o| match o.strip_prefix('@') {
            Some(d) => domain == Some(d),
            None => *o == a,
        })
    }
}

/// What an import did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub added: Vec<String>,
    pub updated: Vec<String>,
    /// `(line number, why)` of lines that were not imported.
    pub skipped: Vec<(usize, String)>,
}

/// The set of accounts, as stored in one file.
#[derive(Debug, Default, Clone)]
pub struct AccountStore {
    path: PathBuf,
    accounts: BTreeMap<String, Account>,
}

#[derive(Serialize, Deserialize)]
struct File {
    accounts: Vec<Account>,
}

/// A hash to verify against when the user does not exist, so a miss takes
/// as long as a wrong password (no user enumeration by timing).
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| password::hash_password("portcullis-dummy").unwrap_or_default())
}

impl AccountStore {
    /// Load `path`; a missing file is an empty store.
    pub fn load(path: &Path) -> Result<AccountStore, StoreError> {
        let accounts = match std::fs::read(path) {
            Ok(bytes) => {
                let f: File =
                    serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                        path: path.to_owned(),
                        source,
                    })?;
                f.accounts
                    .into_iter()
                    .map(|a| (a.address.clone(), a))
                    .collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(io(path, source)),
        };
        Ok(AccountStore {
            path: path.to_owned(),
            accounts,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, address: &str) -> Option<&Account> {
        self.accounts.get(&address.to_ascii_lowercase())
    }

    pub fn list(&self) -> impl Iterator<Item = &Account> {
        self.accounts.values()
    }

    /// Check a login. Takes the same time whether or not the user exists.
    pub fn authenticate(&self, username: &str, password: &str) -> Option<&Account> {
        let account = self.get(username);
        let stored: &str = match account {
            Some(a) => &a.password_hash,
            None => dummy_hash(),
        };
        let ok = password::verify_password(stored, password).unwrap_or(false);
        account.filter(|_| ok)
    }

    pub fn add(&mut self, address: &str, password: &str) -> Result<(), StoreError> {
        let address = checked_address(address)?;
        if self.accounts.contains_key(&address) {
            return Err(StoreError::Exists(address));
        }
        let password_hash = password::hash_password(password)?;
        self.accounts.insert(
            address.clone(),
            Account {
                address,
                password_hash,
                owns: Vec::new(),
                any_sender: false,
            },
        );
        Ok(())
    }

    pub fn remove(&mut self, address: &str) -> Result<(), StoreError> {
        self.accounts
            .remove(&address.to_ascii_lowercase())
            .map(|_| ())
            .ok_or_else(|| StoreError::NoSuchAccount(address.to_owned()))
    }

    pub fn set_password(&mut self, address: &str, password: &str) -> Result<(), StoreError> {
        let hash = password::hash_password(password)?;
        self.account_mut(address)?.password_hash = hash;
        Ok(())
    }

    /// Let `address`'s account send as `owned` (an address or `@domain`).
    pub fn grant(&mut self, address: &str, owned: &str) -> Result<(), StoreError> {
        let owned = owned.to_ascii_lowercase();
        let valid = match owned.strip_prefix('@') {
            Some(d) => !d.is_empty() && !d.contains('@'),
            None => checked_address(&owned).is_ok(),
        };
        if !valid {
            return Err(StoreError::BadAddress(owned));
        }
        let a = self.account_mut(address)?;
        if !a.owns.contains(&owned) {
            a.owns.push(owned);
        }
        Ok(())
    }

    pub fn set_any_sender(&mut self, address: &str, any: bool) -> Result<(), StoreError> {
        self.account_mut(address)?.any_sender = any;
        Ok(())
    }

    fn account_mut(&mut self, address: &str) -> Result<&mut Account, StoreError> {
        self.accounts
            .get_mut(&address.to_ascii_lowercase())
            .ok_or_else(|| StoreError::NoSuchAccount(address.to_owned()))
    }

    /// Import a Dovecot passwd-file (`user:{SCHEME}hash:uid:gid:...`).
    /// Existing accounts get the new hash; lines with an unsupported
    /// scheme or a user that is not an address are reported, not imported.
    pub fn import_passwd_file(&mut self, text: &str) -> ImportReport {
        let mut report = ImportReport::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.splitn(3, ':');
            let (user, hash) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
            let Ok(address) = checked_address(user) else {
                report
                    .skipped
                    .push((n + 1, format!("{user:?} is not an email address")));
                continue;
            };
            if !password::is_supported(hash) {
                report
                    .skipped
                    .push((n + 1, "unsupported or malformed password scheme".into()));
                continue;
            }
            match self.accounts.get_mut(&address) {
                Some(a) => {
                    a.password_hash = hash.to_owned();
                    report.updated.push(address);
                }
                None => {
                    self.accounts.insert(
                        address.clone(),
                        Account {
                            address: address.clone(),
                            password_hash: hash.to_owned(),
                            owns: Vec::new(),
                            any_sender: false,
                        },
                    );
                    report.added.push(address);
                }
            }
        }
        report
    }

    /// Write the store back, atomically.
    pub fn save(&self) -> Result<(), StoreError> {
        let file = File {
            accounts: self.accounts.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|source| StoreError::Corrupt {
            path: self.path.clone(),
            source,
        })?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let tmp = self.path.with_extension("json.tmp");
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp).map_err(|e| io(&tmp, e))?;
        f.write_all(&bytes)
            .and_then(|_| f.sync_all())
            .map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| io(&self.path, e))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(dir, e))
    }
}

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `local@domain`, lower-cased, with no spaces or control characters.
fn checked_address(a: &str) -> Result<String, StoreError> {
    let a = a.trim().to_ascii_lowercase();
    let ok = match a.rsplit_once('@') {
        Some((l, d)) => !l.is_empty() && d.contains('.') || d == "localhost",
        None => false,
    } && !a
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == ':');
    if ok {
        Ok(a)
    } else {
        Err(StoreError::BadAddress(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> AccountStore {
        let mut s = AccountStore::default();
        s.add("Alice@Example.test", "pw").unwrap();
        s
    }

    #[test]
    fn authenticates_with_the_right_password_only() {
        let s = store();
        assert_eq!(
            s.authenticate("alice@example.test", "pw").unwrap().address,
            "alice@example.test"
        );
        assert!(s.authenticate("alice@example.test", "wrong").is_none());
        assert!(s.authenticate("nobody@example.test", "pw").is_none());
    }

    #[test]
    fn dummy_hash_is_a_valid_argon2_hash() {
        // Otherwise a miss would return early and be faster than a hit.
        assert!(password::is_supported(dummy_hash()));
    }

    #[test]
    fn owns_its_address_aliases_and_granted_domains() {
        let mut s = store();
        s.grant("alice@example.test", "sales@example.test").unwrap();
        s.grant("alice@example.test", "@alice.test").unwrap();
        let a = s.get("alice@example.test").unwrap();
        assert!(a.owns("ALICE@example.test"));
        assert!(a.owns("sales@example.test"));
        assert!(a.owns("anything@alice.test"));
        assert!(!a.owns("bob@example.test"));
        assert!(!a.owns("x@sub.alice.test"));
    }

    #[test]
    fn import_reads_dovecot_passwd_file() {
        let mut s = store();
        let sha =
            sha_crypt::sha512_simple("pw2", &sha_crypt::Sha512Params::new(5000).unwrap()).unwrap();
        let text = format!(
            "# comment\nbob@example.test:{{SHA512-CRYPT}}{sha}:1000:1000::/home/bob::\nalice@example.test:{{SHA512-CRYPT}}{sha}\ncarol:{{SHA512-CRYPT}}{sha}\ndan@example.test:{{PLAIN}}pw\n"
        );
        let r = s.import_passwd_file(&text);
        assert_eq!(r.added, vec!["bob@example.test"]);
        assert_eq!(r.updated, vec!["alice@example.test"]);
        assert_eq!(
            r.skipped.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            vec![4, 5]
        );
        assert!(s.authenticate("bob@example.test", "pw2").is_some());
        assert!(s.authenticate("alice@example.test", "pw2").is_some());
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = std::env::temp_dir().join(format!("pc-accounts-{}", std::process::id()));
        let path = dir.join("accounts.json");
        let mut s = AccountStore::load(&path).unwrap();
        s.add("a@example.test", "pw").unwrap();
        s.save().unwrap();
        let t = AccountStore::load(&path).unwrap();
        assert!(t.authenticate("a@example.test", "pw").is_some());
    }
}
