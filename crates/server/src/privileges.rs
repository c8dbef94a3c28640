//! Started as root (to bind ports 25, 465 and 587), the server gives root
//! up once every listener is bound: it becomes `user` and owns its data
//! directory. Nothing after this point can regain root. With the kernel's
//! blocklist the thread that drops keeps one capability, CAP_NET_ADMIN,
//! for the `nft` it starts (`portcullis_firewall::caps`); every other
//! capability goes, and every other thread keeps none.

use anyhow::{Context as _, bail};
use std::ffi::CString;
use std::path::Path;
use tracing::{info, warn};

/// What the dropping thread keeps of root's capabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Keep {
    Nothing,
    /// CAP_NET_ADMIN, for `nft` (portcullis-firewall).
    NetAdmin,
}

pub(crate) fn drop_to(user: Option<&str>, data_dir: &Path, keep: Keep) -> anyhow::Result<()> {
    // SAFETY: getuid has no preconditions.
    let root = unsafe { libc::getuid() } == 0;
    match (root, user) {
        (false, _) => Ok(()),
        (true, None) => {
            warn!(
                event = "running_as_root",
                "set `user` in the config to drop root after binding"
            );
            Ok(())
        }
        (true, Some(name)) => become_user(name, data_dir, keep),
    }
}

fn become_user(name: &str, data_dir: &Path, keep: Keep) -> anyhow::Result<()> {
    let (uid, gid) = lookup(name)?;
    chown_tree(data_dir, uid, gid)
        .with_context(|| format!("cannot give {} to {name}", data_dir.display()))?;
    if keep == Keep::NetAdmin {
        portcullis_firewall::caps::keep_across_setuid()?;
    }
    // SAFETY: plain system calls on integers; order matters: groups and
    // gid while still root, uid last.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 {
            bail!("setgroups: {}", std::io::Error::last_os_error());
        }
        if libc::setgid(gid) != 0 {
            bail!("setgid({gid}): {}", std::io::Error::last_os_error());
        }
        if libc::setuid(uid) != 0 {
            bail!("setuid({uid}): {}", std::io::Error::last_os_error());
        }
    }
    if keep == Keep::NetAdmin {
        portcullis_firewall::caps::keep_only_net_admin()?;
    }
    // SAFETY: as above.
    unsafe {
        if libc::setuid(0) == 0 {
            bail!("root could be regained after dropping privileges");
        }
    }
    // A parent directory the user cannot enter would only show up later,
    // as failed deliveries: say so now.
    let probe = data_dir.join(".write-test");
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .with_context(|| {
            format!(
                "as user {name}, cannot write in {} (are its parent directories open to {name}?)",
                data_dir.display()
            )
        })?;
    let kept = match keep {
        Keep::Nothing => "none",
        Keep::NetAdmin => "CAP_NET_ADMIN",
    };
    info!(event = "privileges_dropped", user = name, uid, gid, kept);
    Ok(())
}

fn lookup(name: &str) -> anyhow::Result<(libc::uid_t, libc::gid_t)> {
    let c = CString::new(name).context("user name contains NUL")?;
    // SAFETY: getpwnam returns a pointer into static storage or null; we
    // copy the two integers out at once, before any other call.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        bail!("user {name:?} does not exist (config key `user`)");
    }
    // SAFETY: pw is non-null and points to a valid passwd entry.
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}
