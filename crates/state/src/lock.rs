//! Who owns the embedded state of a data directory: the running server
//! holds an exclusive `flock` on `DATA/state/lock`; the CLI sees it and
//! goes through the server instead of editing a snapshot the server would
//! overwrite.

use portcullis_config::{Config, StateBackend};
use std::path::Path;

/// The embedded state belongs to one process. The server holds an
/// exclusive lock on `DATA/state/lock`; the CLI sees it and hands its
/// changes to the server (the control socket) instead of editing a
/// snapshot the server would overwrite.
pub fn lock_or_share(config: &Config) -> anyhow::Result<Option<std::fs::File>> {
    if config.state_backend != StateBackend::Embedded {
        return Ok(None);
    }
    let path = config.data_dir.join("state").join("lock");
    let file = open_lock(&path)?;
    if !try_flock(&file, libc::LOCK_EX) {
        anyhow::bail!(
            "{}: another portcullis already serves this data directory",
            path.display()
        );
    }
    Ok(Some(file))
}

fn open_lock(path: &Path) -> anyhow::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn try_flock(f: &std::fs::File, how: libc::c_int) -> bool {
    use std::os::fd::AsRawFd as _;
    // SAFETY: flock on a descriptor we own; no memory is shared.
    unsafe { libc::flock(f.as_raw_fd(), how | libc::LOCK_NB) == 0 }
}

/// Whether a running server owns the embedded state of `data_dir`.
pub fn server_running(data_dir: &Path) -> bool {
    let path = data_dir.join("state").join("lock");
    match std::fs::OpenOptions::new().read(true).open(&path) {
        Ok(f) => !try_flock(&f, libc::LOCK_SH),
        Err(_) => false,
    }
}
