//! `DATA/acme/`: the account key (`account.key`), the certificate chain
//! (`cert.pem`), its key (`key.pem`) and the names it was ordered for
//! (`names`, one a line). Every file is written whole to a
//! temporary name with mode 0600 and renamed into place, so a crash
//! leaves the old file or the new one, never half of one, and no other
//! user can read a key even for a moment.

use crate::AcmeError;
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::pki_types::pem::PemObject;
use std::path::{Path, PathBuf};

/// A certificate chain (leaf first) and its private key, both PEM.
#[derive(Clone)]
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    // The key is a secret: never in a log line, even by accident.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("chain_pem", &self.chain_pem)
            .finish_non_exhaustive()
    }
}

pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store in `data_dir/acme`.
    pub fn new(data_dir: &Path) -> Store {
        Store {
            dir: data_dir.join("acme"),
        }
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    fn names_path(&self) -> PathBuf {
        self.dir.join("names")
    }

    /// The names the stored certificate was ordered for (None: unknown,
    /// e.g. no certificate yet).
    pub fn names(&self) -> Option<Vec<String>> {
        let text = std::fs::read_to_string(self.names_path()).ok()?;
        Some(text.lines().map(str::to_owned).collect())
    }

    fn account_key_path(&self) -> PathBuf {
        self.dir.join("account.key")
    }

    /// The certificate obtained before, if both files are there.
    pub fn load(&self) -> Result<Option<Issued>, AcmeError> {
        let (cert, key) = (self.cert_path(), self.key_path());
        if !cert.exists() || !key.exists() {
            return Ok(None);
        }
        Ok(Some(Issued {
            chain_pem: read(&cert)?,
            key_pem: read(&key)?,
        }))
    }

    /// Keep a new certificate: the key first, so that a crash between the
    /// two writes leaves a key without its certificate (refused at load,
    /// then obtained again) rather than a certificate served with the
    /// wrong key.
    pub fn save(&self, issued: &Issued, names: &[String]) -> Result<(), AcmeError> {
        self.make_dir()?;
        write_private(&self.key_path(), issued.key_pem.as_bytes())?;
        write_private(&self.cert_path(), issued.chain_pem.as_bytes())?;
        write_private(&self.names_path(), names.join("\n").as_bytes())
    }

    /// The account key (PKCS#8), made on first use: RFC 8555 §7.3 names
    /// an account by its key, so keeping the key keeps the account.
    pub(crate) fn account_key(&self) -> Result<PrivatePkcs8KeyDer<'static>, AcmeError> {
        let path = self.account_key_path();
        if path.exists() {
            let pem = read(&path)?;
            return PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
                AcmeError::Stored(format!(
                    "{} is not a PKCS#8 private key: {e}",
                    path.display()
                ))
            });
        }
        let key = rcgen::KeyPair::generate().map_err(|e| AcmeError::Key(e.to_string()))?;
        self.make_dir()?;
        write_private(&path, key.serialize_pem().as_bytes())?;
        Ok(PrivatePkcs8KeyDer::from(key.serialize_der()))
    }

    fn make_dir(&self) -> Result<(), AcmeError> {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(&self.dir).map_err(|error| AcmeError::File {
            action: "create",
            path: self.dir.display().to_string(),
            error,
        })
    }
}

fn read(path: &Path) -> Result<String, AcmeError> {
    std::fs::read_to_string(path).map_err(|error| AcmeError::File {
        action: "read",
        path: path.display().to_string(),
        error,
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AcmeError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let failed = |action, error| AcmeError::File {
        action,
        path: path.display().to_string(),
        error,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp).map_err(|e| failed("write", e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| failed("write", e))?;
    std::fs::rename(&tmp, path).map_err(|e| failed("replace", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("portcullis-acme-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn the_account_key_is_made_once_and_kept_private() {
        let d = dir("account");
        let store = Store::new(&d);
        let first = store.account_key().unwrap();
        let again = store.account_key().unwrap();
        assert_eq!(first.secret_pkcs8_der(), again.secret_pkcs8_der());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(d.join("acme/account.key"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_saved_certificate_loads_back_and_its_files_are_private() {
        let d = dir("cert");
        let store = Store::new(&d);
        assert!(store.load().unwrap().is_none());
        let issued = Issued {
            chain_pem: "CHAIN".into(),
            key_pem: "KEY".into(),
        };
        let names = [
            "mx.example.test".to_owned(),
            "mta-sts.example.test".to_owned(),
        ];
        assert_eq!(store.names(), None);
        store.save(&issued, &names).unwrap();
        assert_eq!(store.names().as_deref(), Some(&names[..]));
        let back = store.load().unwrap().unwrap();
        assert_eq!(
            (back.chain_pem.as_str(), back.key_pem.as_str()),
            ("CHAIN", "KEY")
        );
        for f in ["cert.pem", "key.pem", "names"] {
            let meta = std::fs::metadata(d.join("acme").join(f)).unwrap();
            let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        assert!(!format!("{back:?}").contains("KEY\""));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
