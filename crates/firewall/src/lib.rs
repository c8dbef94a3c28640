//! The blocklist in the kernel (the paper: "blocking before the IP socket
//! acceptance stage"). With `[admission] kernel_blocklist = true`
//! portcullis owns an nftables table, `inet portcullis`, whose two timed
//! sets hold the blocked ranges; its input chain drops their SYNs to the
//! mx ports before accept. The sets follow the temporal blocklist: at
//! start, at every change (on any node, with Redis), and every 30 s; each
//! sync replaces the sets in one nft transaction, with each element's
//! remaining time as its timeout. The table goes away when the server
//! stops.
//!
//! This crate only mirrors the blocklist into the kernel: which ranges are
//! blocked, and for how long, is the class of service's decision.

use anyhow::{Context as _, bail};
use portcullis_admission::BlockEntry;
use portcullis_config::{Cidr, Config, ListenerRole};
use portcullis_state::Store;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;
use tracing::{info, warn};

const TABLE: &str = "portcullis";
/// A sync also runs this often, for changes a node may have missed.
const RESYNC: Duration = Duration::from_secs(30);

pub struct KernelBlocklist {
    /// The mx listeners' ports: only they are filtered.
    ports: Vec<u16>,
}

impl KernelBlocklist {
    /// The kernel's copy of the blocklist for the mx listeners' ports, when
    /// `[admission] kernel_blocklist` asks for it.
    pub fn from_config(config: &Config) -> anyhow::Result<Option<KernelBlocklist>> {
        if !config.admission.kernel_blocklist {
            return Ok(None);
        }
        if config.user.is_some() {
            // After the drop to `user` nft would no longer be allowed.
            bail!(
                "[admission] kernel_blocklist keeps CAP_NET_ADMIN, which dropping to `user` gives up: run as that user with the capability instead (systemd: User= and AmbientCapabilities=CAP_NET_ADMIN)"
            );
        }
        let ports = config
            .listeners
            .iter()
            .filter(|l| l.role == ListenerRole::Mx)
            .flat_map(|l| l.bind.iter().map(|a| a.port()))
            .collect();
        KernelBlocklist::start(ports).map(Some)
    }

    /// Create the table, or refuse to start with the reason.
    pub fn start(ports: Vec<u16>) -> anyhow::Result<KernelBlocklist> {
        let k = KernelBlocklist { ports };
        Command::new("nft").arg("--version").output().context(
            "[admission] kernel_blocklist needs the nft command (Debian package nftables)",
        )?;
        let _ = nft(&format!("delete table inet {TABLE}\n"));
        nft(&k.table()).map_err(|e| {
            anyhow::anyhow!("[admission] kernel_blocklist: cannot create the nftables table (it needs CAP_NET_ADMIN): {e}")
        })?;
        info!(event = "kernel_blocklist", table = TABLE, ports = ?k.ports);
        Ok(k)
    }

    fn table(&self) -> String {
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        let ports = ports.join(", ");
        format!(
            "table inet {TABLE} {{\n\
             \x20 set blocked4 {{ type ipv4_addr; flags interval, timeout; }}\n\
             \x20 set blocked6 {{ type ipv6_addr; flags interval, timeout; }}\n\
             \x20 chain input {{\n\
             \x20   type filter hook input priority -10; policy accept;\n\
             \x20   ip saddr @blocked4 tcp dport {{ {ports} }} counter drop\n\
             \x20   ip6 saddr @blocked6 tcp dport {{ {ports} }} counter drop\n\
             \x20 }}\n\
             }}\n"
        )
    }

    /// Follow the blocklist until the task is dropped.
    pub async fn run(self, store: Store) {
        let mut changes = store.blocklist_changes();
        loop {
            let entries = store.blocklist().await;
            if let Err(e) = nft(&sync_script(&entries, portcullis_config::clock::now_secs())) {
                warn!(event = "kernel_blocklist_failed", error = %e);
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                () = tokio::time::sleep(RESYNC) => {}
            }
        }
    }

    /// Remove the table (the server is stopping).
    pub fn remove() {
        let _ = nft(&format!("delete table inet {TABLE}\n"));
    }
}

/// One nft transaction that replaces both sets: the ranges no other
/// entry covers (interval sets refuse overlapping elements), each with
/// the time its block has left.
pub fn sync_script(entries: &[(Cidr, BlockEntry)], now: u64) -> String {
    let mut live: Vec<(Cidr, u64)> = entries
        .iter()
        .filter(|(_, e)| e.until > now)
        .map(|(c, e)| (*c, e.until - now))
        .collect();
    live.sort_by_key(|(c, _)| c.prefix);
    let mut kept: Vec<(Cidr, u64)> = Vec::new();
    for (c, left) in live {
        if !kept.iter().any(|(k, _)| k.covers(&c)) {
            kept.push((c, left));
        }
    }
    let mut script = format!("flush set inet {TABLE} blocked4\nflush set inet {TABLE} blocked6\n");
    for (set, v4) in [("blocked4", true), ("blocked6", false)] {
        let elements: Vec<String> = kept
            .iter()
            .filter(|(c, _)| c.is_ipv4() == v4)
            .map(|(c, left)| format!("{c} timeout {left}s"))
            .collect();
        if !elements.is_empty() {
            script.push_str(&format!(
                "add element inet {TABLE} {set} {{ {} }}\n",
                elements.join(", ")
            ));
        }
    }
    script
}

/// Run an nft script (one transaction): Err with what nft said.
fn nft(script: &str) -> anyhow::Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run nft")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(until: u64) -> BlockEntry {
        BlockEntry {
            until,
            reason: String::new(),
        }
    }

    #[test]
    fn covered_and_expired_entries_are_left_out() {
        let e = |c: &str, until| (c.parse::<Cidr>().unwrap(), entry(until));
        let entries = [
            e("2001:db8:1::/48", 700),
            e("2001:db8:1:2::/64", 900),
            e("192.0.2.7/32", 160),
            e("198.51.100.0/24", 50),
        ];
        let s = sync_script(&entries, 100);
        assert!(
            s.contains("add element inet portcullis blocked6 { 2001:db8:1::/48 timeout 600s }"),
            "{s}"
        );
        assert!(
            s.contains("add element inet portcullis blocked4 { 192.0.2.7/32 timeout 60s }"),
            "{s}"
        );
        assert!(
            !s.contains("2001:db8:1:2::") && !s.contains("198.51.100"),
            "{s}"
        );
        assert!(s.starts_with(
            "flush set inet portcullis blocked4\nflush set inet portcullis blocked6\n"
        ));
    }
}
