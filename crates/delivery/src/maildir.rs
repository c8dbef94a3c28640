//! Local delivery into Maildir (the format of qmail, Dovecot and Postfix's
//! `home_mailbox = Maildir/`): write into `tmp/`, make it durable, rename
//! into `new/`, make the rename durable. Only after that may the caller
//! drop the message from the spool (at-least-once delivery).
//!
//! Messages delivered together share their syncs, as the spool does: the
//! whole batch is written, synced once, then renamed, then each touched
//! `new/` directory synced once.
//!
//! It is told where to put a message and reports whether it is there;
//! who may receive mail is decided before the queue.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Try again later (disk full, I/O error).
    #[error("temporary failure: {0}")]
    Temporary(String),
    /// Will never work (a mailbox name that cannot be a directory).
    #[error("permanent failure: {0}")]
    Permanent(String),
}

/// One message for one local mailbox.
#[derive(Debug, Clone)]
pub struct LocalDelivery<'a> {
    pub domain: &'a str,
    pub local: &'a str,
    /// Maildir++ folder (e.g. `Junk`), `None` for the inbox.
    pub folder: Option<&'a str>,
    /// The envelope sender, for Return-Path (RFC 5321 4.4); empty for `<>`.
    pub return_path: &'a str,
    /// The message, starting with its trace headers.
    pub data: &'a [u8],
}

/// The tree of mailboxes: `root/DOMAIN/LOCAL/{tmp,new,cur}`.
#[derive(Debug, Clone)]
pub struct MaildirStore {
    root: PathBuf,
    hostname: String,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl MaildirStore {
    pub fn new(root: PathBuf, hostname: &str) -> MaildirStore {
        MaildirStore {
            root,
            hostname: hostname.replace(['/', ':'], "_"),
        }
    }

    /// The Maildir of a mailbox (and folder), whether or not it exists yet.
    pub fn maildir(
        &self,
        domain: &str,
        local: &str,
        folder: Option<&str>,
    ) -> Result<PathBuf, DeliveryError> {
        let mut p = self
            .root
            .join(safe_name(domain)?)
            .join(safe_name(&local.to_lowercase())?);
        if let Some(f) = folder {
            p.push(format!(".{}", safe_name(f)?));
        }
        Ok(p)
    }

    /// Deliver a batch; one result per item, in order.
    pub fn deliver(&self, batch: &[LocalDelivery<'_>]) -> Vec<Result<PathBuf, DeliveryError>> {
        let staged: Vec<Result<(PathBuf, PathBuf, File), DeliveryError>> =
            batch.iter().map(|d| self.stage(d)).collect();
        let synced = sync_files(
            staged
                .iter()
                .filter_map(|s| s.as_ref().ok())
                .map(|(_, _, f)| f),
        );
        let mut dirs = Vec::new();
        let results: Vec<_> = staged
            .into_iter()
            .map(|s| {
                let (tmp, new, _file) = s?;
                synced.clone()?;
                fs::rename(&tmp, &new).map_err(|e| temporary(&new, e))?;
                if let Some(parent) = new.parent()
                    && !dirs.iter().any(|d: &PathBuf| d == parent)
                {
                    dirs.push(parent.to_owned());
                }
                Ok(new)
            })
            .collect();
        let dir_synced: Result<(), DeliveryError> = dirs.iter().try_for_each(|d| sync_dir(d));
        results
            .into_iter()
            .map(|r| r.and_then(|p| dir_synced.clone().map(|_| p)))
            .collect()
    }

    /// Write the message into `tmp/` (not yet synced).
    fn stage(&self, d: &LocalDelivery<'_>) -> Result<(PathBuf, PathBuf, File), DeliveryError> {
        let dir = self.maildir(d.domain, d.local, d.folder)?;
        ensure_maildir(&dir)?;
        let name = self.unique_name(d.data.len());
        let tmp = dir.join("tmp").join(&name);
        let new = dir.join("new").join(&name);
        let mut f = File::create(&tmp).map_err(|e| temporary(&tmp, e))?;
        let header = format!(
            "Return-Path: <{}>\r\nDelivered-To: {}@{}\r\n",
            d.return_path, d.local, d.domain
        );
        let written = f
            .write_all(header.as_bytes())
            .and_then(|_| f.write_all(d.data));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(temporary(&tmp, e));
        }
        Ok((tmp, new, f))
    }

    /// `time.M<usec>P<pid>Q<n>.host,S=<size>` (the Maildir naming of
    /// qmail's and Dovecot's documentation).
    fn unique_name(&self, size: usize) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        format!(
            "{}.M{}P{}Q{n}.{},S={size}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            self.hostname
        )
    }
}

/// A directory name taken from mail: no separators, no dot files, no
/// control characters.
fn safe_name(s: &str) -> Result<&str, DeliveryError> {
    let ok = !s.is_empty()
        && !s.starts_with('.')
        && s.len() <= 255
        && !s.chars().any(|c| c == '/' || c.is_control());
    if ok {
        Ok(s)
    } else {
        Err(DeliveryError::Permanent(format!(
            "{s:?} cannot be a mailbox name"
        )))
    }
}

fn temporary(path: &Path, e: std::io::Error) -> DeliveryError {
    DeliveryError::Temporary(format!("{}: {e}", path.display()))
}

/// Create `dir/{tmp,new,cur}` if missing, durably: a new directory entry is
/// only durable once its parent has been synced.
fn ensure_maildir(dir: &Path) -> Result<(), DeliveryError> {
    if dir.join("new").is_dir() {
        return Ok(());
    }
    for sub in ["tmp", "new", "cur"] {
        fs::create_dir_all(dir.join(sub)).map_err(|e| temporary(dir, e))?;
    }
    let mut p = Some(dir);
    while let Some(d) = p {
        sync_dir(d)?;
        p = d.parent().filter(|q| !q.as_os_str().is_empty());
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), DeliveryError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| temporary(dir, e))
}

/// Make the written files durable. With more than a few, one `syncfs` of
/// the file system costs one journal commit instead of one per file.
fn sync_files<'a>(files: impl Iterator<Item = &'a File>) -> Result<(), DeliveryError> {
    let files: Vec<&File> = files.collect();
    #[cfg(target_os = "linux")]
    if files.len() > 4 {
        use std::os::fd::AsRawFd;
        // SAFETY: syncfs takes a file descriptor we own and open.
        let rc = unsafe { libc::syncfs(files[0].as_raw_fd()) };
        if rc == 0 {
            return Ok(());
        }
    }
    for f in files {
        f.sync_data()
            .map_err(|e| DeliveryError::Temporary(format!("sync failed: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(name: &str) -> (MaildirStore, PathBuf) {
        let root = std::env::temp_dir().join(format!("pc-maildir-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        (MaildirStore::new(root.clone(), "mx.test"), root)
    }

    fn item<'a>(local: &'a str, data: &'a [u8]) -> LocalDelivery<'a> {
        LocalDelivery {
            domain: "local.test",
            local,
            folder: None,
            return_path: "a@remote.test",
            data,
        }
    }

    #[test]
    fn delivers_into_new_with_return_path() {
        let (s, root) = store("one");
        let r = s.deliver(&[item("User", b"Subject: x\r\n\r\nhi\r\n")]);
        let path = r[0].clone().unwrap();
        assert!(path.starts_with(root.join("local.test/user/new")));
        let text = fs::read_to_string(path).unwrap();
        assert!(text.starts_with(
            "Return-Path: <a@remote.test>\r\nDelivered-To: User@local.test\r\nSubject: x"
        ));
        assert_eq!(
            fs::read_dir(root.join("local.test/user/tmp"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn a_batch_shares_one_sync_and_lands_whole() {
        let (s, root) = store("batch");
        let items: Vec<_> = (0..20).map(|_| item("u", b"x\r\n")).collect();
        assert!(s.deliver(&items).iter().all(|r| r.is_ok()));
        assert_eq!(
            fs::read_dir(root.join("local.test/u/new")).unwrap().count(),
            20
        );
    }

    #[test]
    fn junk_folder_is_a_maildirplusplus_subfolder() {
        let (s, root) = store("junk");
        let mut d = item("u", b"x\r\n");
        d.folder = Some("Junk");
        s.deliver(&[d])[0].clone().unwrap();
        assert!(root.join("local.test/u/.Junk/new").is_dir());
    }

    #[test]
    fn refuses_mailbox_names_that_escape_the_tree() {
        let (s, _) = store("escape");
        for bad in ["../x", ".hidden", "a/b", ""] {
            assert!(
                matches!(
                    s.deliver(&[item(bad, b"x")])[0],
                    Err(DeliveryError::Permanent(_))
                ),
                "{bad}"
            );
        }
    }
}
