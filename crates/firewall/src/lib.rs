//! The blocklist in the kernel (the paper: "blocking before the IP socket
//! acceptance stage"). portcullis owns an nftables table, `inet
//! portcullis`, whose two timed sets hold the blocked ranges; its input
//! chain drops their SYNs to the mx ports before accept. The sets follow
//! the temporal blocklist: at start, at every change (on any node, with
//! Redis), and every 30 s; each sync replaces the sets in one nft
//! transaction, with each element's remaining time as its timeout. The
//! table goes away when the server stops.
//!
//! `[admission] kernel_blocklist` is `"auto"` by default: the table is kept
//! wherever it can work (`nft` is installed and the process holds
//! CAP_NET_ADMIN), and the log says at start which way it runs and why.
//!
//! This crate only mirrors the blocklist into the kernel: which ranges are
//! blocked, and for how long, is the class of service's decision.

pub mod caps;

use anyhow::{Context as _, bail};
use portcullis_admission::BlockEntry;
use portcullis_config::{Cidr, Config, KernelBlocklistMode, ListenerRole};
use portcullis_metrics::{Counter, Metrics};
use portcullis_state::Store;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

const TABLE: &str = "portcullis";
/// A sync also runs this often, for changes a node may have missed.
const RESYNC: Duration = Duration::from_secs(30);
/// The drop counters are read this often for `/metrics`.
const COUNT_EVERY: Duration = Duration::from_secs(10);

/// Whether the kernel keeps the blocklist on this host, and why: what the
/// start's log line says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub on: bool,
    pub reason: &'static str,
}

/// The setting against what the host offers. `true` insists (Err: the
/// server refuses to start, saying what is missing); `"auto"` takes what
/// it finds; `false` is off whatever the host has.
pub fn decide(mode: KernelBlocklistMode, nft: bool, net_admin: bool) -> anyhow::Result<Decision> {
    let (on, reason) = match (mode, nft, net_admin) {
        (KernelBlocklistMode::Off, _, _) => (false, "turned off"),
        (KernelBlocklistMode::On, false, _) => bail!(
            "[admission] kernel_blocklist needs the nft command (Debian package nftables); \
             set kernel_blocklist = \"auto\" to run without it"
        ),
        (KernelBlocklistMode::On, true, false) => bail!(
            "[admission] kernel_blocklist needs CAP_NET_ADMIN: start as root (dropping to `user` \
             keeps that capability alone) or grant it (systemd: AmbientCapabilities=CAP_NET_ADMIN); \
             set kernel_blocklist = \"auto\" to run without it"
        ),
        (KernelBlocklistMode::On, true, true) => (true, "turned on"),
        (KernelBlocklistMode::Auto, false, _) => (false, "no nft"),
        (KernelBlocklistMode::Auto, true, false) => (false, "no CAP_NET_ADMIN"),
        (KernelBlocklistMode::Auto, true, true) => (true, "nft and CAP_NET_ADMIN"),
    };
    Ok(Decision { on, reason })
}

pub struct KernelBlocklist {
    /// The mx listeners' ports: only they are filtered.
    ports: Vec<u16>,
}

impl KernelBlocklist {
    /// The kernel's copy of the blocklist for the mx listeners' ports, when
    /// `[admission] kernel_blocklist` and the host allow it, its table
    /// made; `net_admin`: the process holds CAP_NET_ADMIN. Logs which way
    /// it runs and why.
    pub fn from_config(
        config: &Config,
        net_admin: bool,
    ) -> anyhow::Result<Option<KernelBlocklist>> {
        let mode = config.admission.kernel_blocklist;
        let ports: Vec<u16> = config
            .listeners
            .iter()
            .filter(|l| l.role == ListenerRole::Mx)
            .flat_map(|l| l.bind.iter().map(|a| a.port()))
            .collect();
        let decision = match mode {
            // Not even asking for nft: nothing to filter.
            KernelBlocklistMode::Auto | KernelBlocklistMode::On if ports.is_empty() => Decision {
                on: false,
                reason: "no mx listener",
            },
            _ => decide(
                mode,
                mode != KernelBlocklistMode::Off && nft_present(),
                net_admin,
            )?,
        };
        if !decision.on {
            info!(
                event = "kernel_blocklist",
                mode = "off",
                reason = decision.reason
            );
            return Ok(None);
        }
        match KernelBlocklist::start(ports) {
            Ok(k) => {
                info!(event = "kernel_blocklist", mode = "on", reason = decision.reason, table = TABLE, ports = ?k.ports);
                Ok(Some(k))
            }
            Err(e) if mode == KernelBlocklistMode::Auto => {
                // nft is there and so is the capability, yet the kernel
                // said no (no nf_tables, a sandbox without netlink): the
                // server still runs, refusing in user space.
                warn!(event = "kernel_blocklist", mode = "off", reason = "nft failed", error = %e);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Create the table, or say why not.
    pub fn start(ports: Vec<u16>) -> anyhow::Result<KernelBlocklist> {
        let k = KernelBlocklist { ports };
        let _ = nft(&format!("delete table inet {TABLE}\n"));
        nft(&k.table()).map_err(|e| {
            anyhow::anyhow!("[admission] kernel_blocklist: cannot create the nftables table (it needs CAP_NET_ADMIN): {e}")
        })?;
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

    /// Follow the blocklist until the task is dropped, every change
    /// applied by `nft`'s thread; the drop counters go to `metrics`.
    pub async fn run(self, store: Store, nft: Nft, metrics: Arc<Metrics>) {
        let mut changes = store.blocklist_changes();
        let mut counted = Dropped::default();
        let mut count = tokio::time::interval(COUNT_EVERY);
        let mut resync = tokio::time::interval(RESYNC);
        let mut sync = true;
        loop {
            if sync {
                let entries = store.blocklist().await;
                let script = sync_script(&entries, portcullis_config::clock::now_secs());
                if let Err(e) = nft.apply(script).await {
                    warn!(event = "kernel_blocklist_failed", error = %e);
                }
            }
            tokio::select! {
                r = changes.changed() => { if r.is_err() { return } sync = true }
                _ = resync.tick() => sync = true,
                _ = count.tick() => {
                    sync = false;
                    if let Ok(listing) = nft.list().await {
                        counted.record(&dropped_packets(&listing), &metrics);
                    }
                }
            }
        }
    }
}

/// `nft` is installed (on the PATH, and runs).
fn nft_present() -> bool {
    Command::new("nft")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The one thread that runs `nft` once the server has dropped to `user`.
/// Capabilities belong to a thread, not to the process (capabilities(7),
/// "Thread capability sets"), and a child started with fork/exec gets
/// its parent thread's: so the drop to `user` runs on this thread
/// (`prepare`), which alone keeps CAP_NET_ADMIN, while every other thread
/// of the server loses all its capabilities; every `nft` is started here.
#[derive(Clone)]
pub struct Nft {
    jobs: std::sync::mpsc::Sender<(Job, tokio::sync::oneshot::Sender<anyhow::Result<String>>)>,
}

impl Nft {
    /// Start the thread, run `prepare` on it, and return once `prepare`
    /// is done (Err: what it said, and no thread is left).
    pub fn spawn(
        prepare: impl FnOnce() -> anyhow::Result<()> + Send + 'static,
    ) -> anyhow::Result<Nft> {
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let (jobs, queue) = std::sync::mpsc::channel::<(Job, tokio::sync::oneshot::Sender<_>)>();
        std::thread::Builder::new()
            .name("nft".into())
            .spawn(move || {
                let prepared = prepare();
                let ok = prepared.is_ok();
                let _ = ready_tx.send(prepared);
                if ok {
                    // Ends when the last `Nft` is dropped.
                    for (job, reply) in queue {
                        let _ = reply.send(match job {
                            Job::Apply(script) => nft(&script).map(|()| String::new()),
                            Job::List => nft_list(),
                        });
                    }
                }
            })
            .context("cannot start the nft thread")?;
        ready.recv().context("the nft thread ended at start")??;
        Ok(Nft { jobs })
    }

    /// Run an nft script on the thread (one transaction).
    pub async fn apply(&self, script: String) -> anyhow::Result<()> {
        self.run(Job::Apply(script)).await.map(drop)
    }

    /// The table as `nft list` shows it (its counters).
    pub async fn list(&self) -> anyhow::Result<String> {
        self.run(Job::List).await
    }

    async fn run(&self, job: Job) -> anyhow::Result<String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .send((job, reply))
            .map_err(|_| anyhow::anyhow!("the nft thread has ended"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the nft thread has ended"))?
    }

    /// Remove the table (the server is stopping).
    pub async fn remove_table(&self) {
        let _ = self.apply(format!("delete table inet {TABLE}\n")).await;
    }
}

/// What the nft thread is asked to do.
enum Job {
    Apply(String),
    List,
}

/// Packets the table's two drop rules counted, by family (`ipv4`,
/// `ipv6`): from `nft list table`'s `counter packets N bytes M`, the
/// IPv4 rule first as the table writes it.
pub fn dropped_packets(listing: &str) -> [(&'static str, u64); 2] {
    let mut counts = [("ipv4", 0), ("ipv6", 0)];
    for line in listing.lines() {
        let family = if line.contains("@blocked4") {
            0
        } else if line.contains("@blocked6") {
            1
        } else {
            continue;
        };
        let packets = line
            .split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok());
        counts[family].1 = packets.unwrap_or(0);
    }
    counts
}

/// The counters last read, so `/metrics` gets what was added since.
/// A counter that went back (the table was made again) starts over.
#[derive(Default)]
struct Dropped([u64; 2]);

impl Dropped {
    fn record(&mut self, now: &[(&'static str, u64); 2], metrics: &Metrics) {
        for (i, (family, packets)) in now.iter().enumerate() {
            let added = packets.checked_sub(self.0[i]).unwrap_or(*packets);
            if added > 0 {
                metrics.add(Counter::KernelDrops, &[("family", family)], added);
            }
            self.0[i] = *packets;
        }
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

/// `nft list table` of our table.
fn nft_list() -> anyhow::Result<String> {
    let out = Command::new("nft")
        .args(["list", "table", "inet", TABLE])
        .stdin(Stdio::null())
        .output()
        .context("cannot run nft")?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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

    #[test]
    fn auto_runs_wherever_nft_and_the_capability_are_there() {
        use KernelBlocklistMode::{Auto, Off, On};
        let d = |mode, nft, cap| decide(mode, nft, cap).map_err(|e| e.to_string());
        let on = |reason| Ok(Decision { on: true, reason });
        let off = |reason| Ok(Decision { on: false, reason });
        assert_eq!(d(Auto, true, true), on("nft and CAP_NET_ADMIN"));
        assert_eq!(d(Auto, false, true), off("no nft"));
        assert_eq!(d(Auto, false, false), off("no nft"));
        assert_eq!(d(Auto, true, false), off("no CAP_NET_ADMIN"));
        assert_eq!(d(On, true, true), on("turned on"));
        for (nft, cap) in [(true, true), (true, false), (false, true), (false, false)] {
            assert_eq!(d(Off, nft, cap), off("turned off"));
        }
        let no_nft = d(On, false, true).unwrap_err();
        assert!(
            no_nft.contains("kernel_blocklist needs the nft command"),
            "{no_nft}"
        );
        let no_cap = d(On, true, false).unwrap_err();
        assert!(no_cap.contains("needs CAP_NET_ADMIN"), "{no_cap}");
    }

    #[test]
    fn the_nft_thread_runs_prepare_first_and_reports_its_failure() {
        let err = Nft::spawn(|| bail!("cannot drop"))
            .err()
            .map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("cannot drop"));
        let on_thread = std::sync::Arc::new(std::sync::Mutex::new(None));
        let seen = on_thread.clone();
        let nft = Nft::spawn(move || {
            *seen.lock().unwrap() = std::thread::current().name().map(str::to_owned);
            Ok(())
        });
        assert!(nft.is_ok());
        assert_eq!(on_thread.lock().unwrap().as_deref(), Some("nft"));
    }

    #[test]
    fn the_drop_counters_are_read_per_family_and_added_once() {
        let listing = |v4: u64, v6: u64| {
            format!(
                "table inet portcullis {{\n\tchain input {{\n\t\ttype filter hook input priority -10; policy accept;\n\
                 \t\tip saddr @blocked4 tcp dport {{ 25 }} counter packets {v4} bytes 60 drop\n\
                 \t\tip6 saddr @blocked6 tcp dport {{ 25 }} counter packets {v6} bytes 80 drop\n\t}}\n}}\n"
            )
        };
        assert_eq!(
            dropped_packets(&listing(3, 4051)),
            [("ipv4", 3), ("ipv6", 4051)]
        );
        let metrics = Metrics::default();
        let mut seen = Dropped::default();
        seen.record(&dropped_packets(&listing(3, 4051)), &metrics);
        seen.record(&dropped_packets(&listing(3, 5000)), &metrics);
        // The table made again: its counters start at zero.
        seen.record(&dropped_packets(&listing(0, 7)), &metrics);
        let text = metrics.render(&[]);
        let line = |family: &str| {
            let label = format!("portcullis_kernel_dropped_packets_total{{family=\"{family}\"}} ");
            text.lines()
                .find(|l| l.starts_with(&label))
                .map(str::to_owned)
        };
        assert_eq!(
            line("ipv6").as_deref(),
            Some("portcullis_kernel_dropped_packets_total{family=\"ipv6\"} 5007")
        );
        assert_eq!(
            line("ipv4").as_deref(),
            Some("portcullis_kernel_dropped_packets_total{family=\"ipv4\"} 3")
        );
    }

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
