//! The embedded backend's snapshot: `DATA/state/embedded.json`, written
//! atomically (temporary file, fsync, rename) so a crash leaves either the
//! old snapshot or the new one, never half of one.

use portcullis_admission::EmbeddedState;
use std::path::{Path, PathBuf};

pub fn snapshot_path(data_dir: &Path) -> PathBuf {
    data_dir.join("state").join("embedded.json")
}

pub fn load_snapshot(path: &Path) -> anyhow::Result<EmbeddedState> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| anyhow::anyhow!("{}: not a state snapshot: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(EmbeddedState::default()),
        Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
    }
}

/// Write `data` to `path` whole or not at all (temporary file, fsync,
/// rename), readable by the server's user only (0600): state snapshots,
/// the admin token, report files.
pub fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write as _;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}
