//! What `serve` would refuse at start, checked without starting it:
//! `check-config` runs these so that a config (or a reload) that looks
//! fine is fine. The data directory can be made and written, and the
//! certificate and key load and belong together.

use anyhow::{Context as _, bail};
use portcullis_config::Config;
use std::path::Path;

/// Everything `serve` checks before it binds a port, with nothing created
/// or changed.
pub fn preflight(config: &Config) -> anyhow::Result<()> {
    data_dir_usable(&config.data_dir)?;
    crate::tls::check(config)?;
    Ok(())
}

/// The data directory exists and is a directory we may write in, or it
/// does not exist yet and its nearest existing parent is one (`serve`
/// creates it). Asked with access(2), so nothing is written.
pub(crate) fn data_dir_usable(dir: &Path) -> anyhow::Result<()> {
    let mut probe = dir;
    loop {
        match std::fs::metadata(probe) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => bail!(
                "data directory {}: {} is not a directory",
                dir.display(),
                probe.display()
            ),
            // Not there yet, or under a file (found when the walk gets
            // there): look at the parent.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                probe = match probe.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => Path::new("."),
                };
            }
            Err(e) => bail!("data directory {}: {e}", dir.display()),
        }
    }
    writable(probe).with_context(|| {
        if probe == dir {
            format!("data directory {} is not writable", dir.display())
        } else {
            format!(
                "data directory {} cannot be created in {}",
                dir.display(),
                probe.display()
            )
        }
    })
}

fn writable(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: access(2) reads a NUL-terminated path we own.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_directory_under_a_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("portcullis-pre-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("plain");
        std::fs::write(&file, b"").unwrap();
        let e = data_dir_usable(&file.join("data")).unwrap_err();
        assert!(format!("{e:#}").contains("is not a directory"), "{e:#}");
        assert!(data_dir_usable(&dir.join("new/deeper")).is_ok());
        assert!(data_dir_usable(&dir).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
