//! Who serves a data directory. The server's very first step is an
//! exclusive `flock` on `DATA/lock`, whatever its state backend, before
//! it reads or changes anything else there: a second `serve` on the same
//! directory stops at once, and never recovers (deletes, re-queues) the
//! spool the first one is writing. The kernel drops the lock when the
//! process dies, so a crash leaves nothing to clean up. The CLI looks at
//! the same lock to tell "no server" from "a server that does not answer
//! yet" before it takes an offline path.

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

/// Held for the life of the server; dropping it releases the directory.
#[derive(Debug)]
pub struct Ownership {
    _lock: File,
}

#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    #[error("another portcullis already serves {0} (it holds {0}/lock)")]
    InUse(PathBuf),
    #[error("cannot lock the data directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub fn lock_path(data_dir: &Path) -> PathBuf {
    data_dir.join("lock")
}

/// Take the data directory for this process, or say who has it.
pub fn claim(data_dir: &Path) -> Result<Ownership, OwnershipError> {
    let path = lock_path(data_dir);
    let io = |source| OwnershipError::Io {
        path: path.clone(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    if !try_flock(&file, libc::LOCK_EX) {
        return Err(OwnershipError::InUse(data_dir.to_path_buf()));
    }
    Ok(Ownership { _lock: file })
}

/// Whether a server holds `data_dir` (answering on its control socket
/// or not: it may still be recovering its spool).
pub fn server_running(data_dir: &Path) -> bool {
    match File::open(lock_path(data_dir)) {
        Ok(f) => !try_flock(&f, libc::LOCK_SH),
        Err(_) => false,
    }
}

/// Files the CLI writes into the data directory belong to its owner (the
/// server's `user`): run as root, a new 0600 file would otherwise be
/// unreadable to the server that dropped to that user. `paths` (files or
/// directories, recursively) are given the data directory's owner when
/// this process is root and the directory belongs to someone else.
pub fn give_to_owner(data_dir: &Path, paths: &[PathBuf]) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let owner = std::fs::metadata(data_dir)?;
    if owner.uid() == 0 {
        return Ok(());
    }
    for p in paths {
        chown_tree(p, owner.uid(), owner.gid())?;
    }
    Ok(())
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

fn try_flock(f: &File, how: libc::c_int) -> bool {
    // SAFETY: flock on a descriptor we own; no memory is shared. A shared
    // lock taken only to test is released when `f` is closed.
    unsafe { libc::flock(f.as_raw_fd(), how | libc::LOCK_NB) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pc-owner-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_second_claim_is_refused_while_the_first_is_held() {
        let d = dir("twice");
        let first = claim(&d).unwrap();
        assert!(matches!(claim(&d), Err(OwnershipError::InUse(_))));
        assert!(server_running(&d));
        drop(first);
        assert!(!server_running(&d));
        assert!(claim(&d).is_ok());
    }

    #[test]
    fn no_lock_file_means_no_server() {
        assert!(!server_running(&dir("none")));
    }
}
