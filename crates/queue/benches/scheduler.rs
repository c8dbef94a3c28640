//! The queue's scheduling cost with a large queue spread over many sites
//! (issue 30): MESSAGES messages (100,000) to DOMAINS_PER_SITE domains at
//! each of SITES sites (1,000 sites; a site is the MX host set, so the
//! domains of one site share its limits), recovered from a spool on disk
//! and handed to the real scheduler with the real `SiteGate`. The courier
//! answers at once (no network), so what is measured is the queue's own
//! work: each decision is one attempt started by the scheduler, its
//! site's admission (go, or sent back with a return time), the outcome
//! recorded and the message completed or put back to wait.
//!
//! With PAUSE=1 each site answers its first transaction with a rate
//! answer (Postfix anvil's `421 4.7.0 Error: too much mail from`): the site
//! pauses, and the rest of its messages are sent back to wait; the run
//! ends when every message has been decided once.
//!
//! Each site takes SITE_RATE messages a minute (600, spaced evenly) and
//! 20 connections at once, so the run is paced by the sites: the ideal
//! time is MESSAGES / (SITES x SITE_RATE / 60) seconds. Printed: decisions
//! a second of wall time, server CPU per decision, the time to deliver
//! all against the ideal, and the memory the queued messages hold: the
//! RSS, and the bytes live on the heap (counted by this bench's
//! allocator), which the RSS exceeds by what the allocator keeps.
//! Run by `bench/shaping.sh`; BENCH_DIR puts the spool elsewhere
//! (default: the system's temp dir; /dev/shm keeps the disk out of it).

use portcullis_config::Config;
use portcullis_delivery::{
    Addressee, Answer, BoxFuture, Courier, Destination, Leg, Parcel, RcptOutcome, SiteGate, Status,
};
use portcullis_metrics::Metrics;
use portcullis_queue::{
    Envelope, Queue, QueueSettings, QueuedRecipient, Schedule, Spool, SpoolOptions,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The system allocator, counting the bytes live on the heap: what the
/// queue holds, apart from what the allocator keeps after it is freed.
struct Counting;

static LIVE: AtomicU64 = AtomicU64::new(0);

unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's layout, passed on unchanged.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: a pointer this allocator gave, with its layout.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_mib() -> u64 {
    LIVE.load(Ordering::Relaxed) >> 20
}

fn env(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// A field of /proc/self/status in KiB.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// User plus system CPU time of this process.
fn cpu() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // The fields after the command name, which may hold spaces.
            let rest = s.rsplit_once(')')?.1.to_owned();
            let f: Vec<u64> = rest
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|x| x.parse().ok())
                .collect();
            Some(f.iter().sum::<u64>())
        })
        .unwrap_or(0);
    // CLK_TCK is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// Answers at once through the site gate, as the router does: the site
/// admits the transaction (delivered) or sends it back with a return time.
struct SiteCourier {
    gate: SiteGate,
    started: AtomicU64,
    sent_back: AtomicU64,
    /// Each site's first transaction is answered `421 4.7.0` (PAUSE=1):
    /// the site pauses and the rest of its messages are sent back.
    pause_first: bool,
    answered: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl SiteCourier {
    /// The receiver's answer: a rate answer the first time (PAUSE=1).
    fn answer(&self, site: &str) -> RcptOutcome {
        let first = self.pause_first
            && self
                .answered
                .lock()
                .map(|mut a| a.insert(site.to_owned()))
                .unwrap_or(false);
        if first {
            let text = "421 4.7.0 Error: too much mail from 192.0.2.1";
            RcptOutcome::Temporary(Answer::new(Status(4, 7, 0), text).with_code(Some(421)))
        } else {
            RcptOutcome::Delivered(Answer::new(Status(2, 0, 0), "250 ok").with_code(Some(250)))
        }
    }
}

impl Courier for SiteCourier {
    fn legs(&self, to: &[Addressee]) -> Vec<Leg> {
        let domain = to[0].address.rsplit_once('@').map_or("", |(_, d)| d);
        vec![Leg {
            name: domain.to_owned(),
            destination: Destination::Remote(domain.to_owned()),
            members: (0..to.len()).collect(),
        }]
    }

    fn carry<'a>(
        &'a self,
        _parcel: &'a Parcel,
        to: &'a [Addressee],
        leg: &'a Leg,
    ) -> BoxFuture<'a, Vec<RcptOutcome>> {
        Box::pin(async move {
            // "u7.s42.test" is hosted at site 42: its MX is mx.s42.test.
            let site_part = leg.name.split_once('.').map_or("", |(_, s)| s);
            let mx = format!("mx.{site_part}");
            let (site, limits) = self.gate.site_of([mx.as_str()]);
            match self.gate.enter(&site, limits).await {
                Ok(ticket) => {
                    self.started.fetch_add(1, Ordering::Relaxed);
                    let mut outcomes = vec![self.answer(&site); to.len()];
                    self.gate.classify(&mut outcomes);
                    ticket.leave(&outcomes);
                    outcomes
                }
                Err(d) => {
                    self.sent_back.fetch_add(1, Ordering::Relaxed);
                    vec![d.outcome(); to.len()]
                }
            }
        })
    }
}

fn envelope(id: String, to: String) -> Envelope {
    Envelope {
        id,
        sender: "bulk@bench.test".into(),
        recipients: vec![QueuedRecipient {
            address: to,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Write the messages to a spool, as a busy day would leave them.
async fn fill(dir: &std::path::Path, messages: usize, sites: usize, per_site: usize) {
    let (spool, _) = Spool::open(dir, SpoolOptions::default()).expect("spool");
    let data = Arc::new(vec![b'x'; env("MESSAGE_BYTES", 1024)]);
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in 0..256 {
        let (spool, data) = (spool.clone(), data.clone());
        tasks.spawn(async move {
            for m in (chunk..messages).step_by(256) {
                let to = format!("r{m}@u{}.s{}.test", (m / sites) % per_site, m % sites);
                let e = envelope(spool.new_id(), to);
                spool.commit(e, data.clone()).await.expect("commit");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let messages = env("SITE_MESSAGES", 100_000);
    let sites = env("SITES", 1000);
    let per_site = env("DOMAINS_PER_SITE", 10);
    let rate = env("SITE_RATE", 600);
    let base = std::env::var("BENCH_DIR").map_or_else(|_| std::env::temp_dir(), PathBuf::from);
    let dir = base.join(format!("pc-sched-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);

    let t = Instant::now();
    fill(&dir, messages, sites, per_site).await;
    let filled = t.elapsed();

    let mut config = Config::embedded_default(dir.clone(), "bench.test".into());
    config.delivery.max_per_domain = 20;
    config.delivery.max_per_domain_per_minute = u32::try_from(rate).unwrap_or(u32::MAX);
    let courier = Arc::new(SiteCourier {
        gate: SiteGate::new(&config),
        started: AtomicU64::new(0),
        sent_back: AtomicU64::new(0),
        pause_first: env("PAUSE", 0) == 1,
        answered: std::sync::Mutex::default(),
    });

    let (rss0, live0) = (status_kib("VmRSS:"), live_mib());
    let t = Instant::now();
    let (spool, pending) = Spool::open(&dir, SpoolOptions::default()).expect("reopen");
    let recovered = t.elapsed();
    let rss_queued = status_kib("VmRSS:").saturating_sub(rss0);
    let live_queued = live_mib().saturating_sub(live0);
    assert_eq!(pending.len(), messages, "recovered every message");

    let settings = QueueSettings {
        hostname: "bench.test".into(),
        schedule: Schedule::from_config(&config.delivery),
        max_active: 512,
        suppression: None,
    };
    let (cpu0, t) = (cpu(), Instant::now());
    let (queue, _task) = Queue::start(
        spool,
        pending,
        courier.clone(),
        settings,
        Arc::new(Metrics::default()),
    );
    // Until every message is delivered, or (PAUSE=1) has been decided
    // once: delivered, or sent back until its site's pause ends.
    let decided =
        || courier.started.load(Ordering::Relaxed) + courier.sent_back.load(Ordering::Relaxed);
    while (courier.pause_first && decided() < messages as u64)
        || (!courier.pause_first && queue.spool().live_count() > 0)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (wall, used) = (t.elapsed(), cpu().saturating_sub(cpu0));
    let decisions = decided();
    let (run, ideal) = if courier.pause_first {
        (
            "each site paused by a 421",
            "all decided once in".to_owned(),
        )
    } else {
        let ideal = messages as f64 / (sites as f64 * rate as f64 / 60.0);
        (
            "paced by the sites",
            format!("all delivered in (ideal {ideal:.1} s)"),
        )
    };
    println!(
        "| run | sites (domains) | messages of {} bytes | written in | recovered in | memory queued (heap) | decisions (sent back) | decisions/s | CPU per decision | {ideal} | RSS at end (peak; heap) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n\
         | {run} | {sites} ({}) | {messages} | {:.1} s | {:.2} s | {} MiB ({} MiB) | {decisions} ({}) | {:.0} | {:.1} µs | {:.1} s | {} MiB ({} MiB; {} MiB) |",
        env("MESSAGE_BYTES", 1024),
        sites * per_site,
        filled.as_secs_f64(),
        recovered.as_secs_f64(),
        rss_queued / 1024,
        live_queued,
        courier.sent_back.load(Ordering::Relaxed),
        decisions as f64 / wall.as_secs_f64(),
        used.as_secs_f64() * 1e6 / decisions.max(1) as f64,
        wall.as_secs_f64(),
        status_kib("VmRSS:") / 1024,
        status_kib("VmHWM:") / 1024,
        live_mib(),
    );
    let _ = std::fs::remove_dir_all(&dir);
}
