//! The one capability the kernel's blocklist needs, CAP_NET_ADMIN, kept
//! by one thread across the drop from root to `user` and handed to the
//! `nft` it starts; every other capability goes (capabilities(7)).
//! Capabilities belong to each thread, so this runs on the thread that
//! will run `nft` (`Nft::spawn`).

use anyhow::{Context as _, bail};

/// CAP_NET_ADMIN's number (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
/// capset(2)'s header version 3 (`_LINUX_CAPABILITY_VERSION_3`): each set
/// is 64 bits, passed as two 32-bit words, capabilities 0-31 then 32-63.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    /// 0: the calling thread.
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`: one 32-bit word of each set.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// capset(2)'s two words holding exactly `caps` (each below 64) in the
/// effective, permitted and inheritable sets.
fn only(caps: &[u32]) -> [CapData; 2] {
    let mut data = [CapData::default(); 2];
    for &cap in caps {
        let bit = 1u32 << (cap % 32);
        if let Some(word) = data.get_mut((cap / 32) as usize) {
            word.effective |= bit;
            word.permitted |= bit;
            word.inheritable |= bit;
        }
    }
    data
}

/// A capability mask of /proc/…/status (`CapEff:\t0000000000001000`,
/// hexadecimal, bit n for capability n); None when `field` is not there.
fn status_mask(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// The calling thread holds CAP_NET_ADMIN in its effective set (as root,
/// or granted by systemd's `AmbientCapabilities=`), so `nft` started from
/// it may change the firewall.
pub fn holds_net_admin() -> bool {
    std::fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|s| status_mask(&s, "CapEff"))
        .is_some_and(|mask| mask & (1 << CAP_NET_ADMIN) != 0)
}

/// Before the setuid, on the dropping thread: leaving uid 0 empties the
/// permitted set unless the thread set KEEPCAPS first (capabilities(7),
/// "Effect of user ID changes on capabilities"). glibc's setuid changes
/// every thread's ids, but this flag is this thread's only: the others
/// lose everything.
pub fn keep_across_setuid() -> anyhow::Result<()> {
    // SAFETY: prctl on integers.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1 as libc::c_ulong) } != 0 {
        bail!(
            "prctl(PR_SET_KEEPCAPS): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// After the setuid, on the thread that set KEEPCAPS: of the permitted set
/// it kept, hold CAP_NET_ADMIN alone, effective (for this thread) and
/// ambient, so that `nft`, a program without file capabilities started by
/// a non-root user, gets it at exec (capabilities(7), "Transformation of
/// capabilities during execve()": P'(ambient) joins the new permitted and
/// effective sets). An ambient capability must be both permitted and
/// inheritable, hence all three sets.
pub fn keep_only_net_admin() -> anyhow::Result<()> {
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = only(&[CAP_NET_ADMIN]);
    // SAFETY: a v3 header and the two data words it asks for, both live
    // for the call; capset only reads them. No libc wrapper is needed for
    // one system call (and glibc's is not in the libc crate).
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        bail!("capset(CAP_NET_ADMIN): {}", std::io::Error::last_os_error());
    }
    // SAFETY: prctl on integers.
    unsafe {
        if libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
            libc::c_ulong::from(CAP_NET_ADMIN),
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        ) != 0
        {
            bail!(
                "prctl(PR_CAP_AMBIENT_RAISE, CAP_NET_ADMIN): {}",
                std::io::Error::last_os_error()
            );
        }
        // Its job is done: no later uid change should keep anything.
        libc::prctl(libc::PR_SET_KEEPCAPS, 0 as libc::c_ulong);
    }
    // What the kernel says this thread now holds, not what we asked for.
    let status = std::fs::read_to_string("/proc/thread-self/status")
        .context("cannot read /proc/thread-self/status")?;
    let want = 1u64 << CAP_NET_ADMIN;
    for field in ["CapEff", "CapPrm", "CapAmb"] {
        let mask = status_mask(&status, field);
        if mask != Some(want) {
            bail!("after the drop {field} is {mask:x?}, not CAP_NET_ADMIN alone ({want:x})");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_admin_is_bit_12_of_the_first_word_in_every_set() {
        let [low, high] = only(&[CAP_NET_ADMIN]);
        assert_eq!(
            low,
            CapData {
                effective: 0x1000,
                permitted: 0x1000,
                inheritable: 0x1000
            }
        );
        assert_eq!(high, CapData::default());
    }

    #[test]
    fn capabilities_above_31_go_in_the_second_word() {
        // CAP_NET_BIND_SERVICE (10) and CAP_BPF (39), CAP_CHECKPOINT_RESTORE (40).
        let [low, high] = only(&[10, 39, 40]);
        assert_eq!(low.permitted, 1 << 10);
        assert_eq!(high.permitted, (1 << 7) | (1 << 8));
        assert_eq!(
            (high.effective, high.inheritable),
            (high.permitted, high.permitted)
        );
        assert_eq!(only(&[64]), [CapData::default(); 2], "no such capability");
        assert_eq!(std::mem::size_of::<[CapData; 2]>(), 24, "two v3 words");
    }

    #[test]
    fn status_masks_are_read_as_hexadecimal() {
        let status = "Name:\tportcullis\nCapInh:\t0000000000000000\n\
                      CapPrm:\t0000000000001000\nCapEff:\t000001ffffffffff\n\
                      CapAmb:\t0000000000001000\n";
        assert_eq!(status_mask(status, "CapPrm"), Some(1 << CAP_NET_ADMIN));
        assert_eq!(status_mask(status, "CapEff"), Some(0x1ff_ffff_ffff));
        assert_eq!(status_mask(status, "CapInh"), Some(0));
        assert_eq!(status_mask(status, "CapBnd"), None);
        assert_eq!(status_mask("CapEff:\tnothex\n", "CapEff"), None);
    }

    #[test]
    fn this_thread_is_asked_what_it_holds() {
        // Whatever the test runs as, the answer is the kernel's.
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let eff = status_mask(&status, "CapEff").expect("CapEff in /proc/thread-self/status");
        assert_eq!(holds_net_admin(), eff & (1 << CAP_NET_ADMIN) != 0);
    }
}
