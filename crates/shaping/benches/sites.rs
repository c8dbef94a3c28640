//! The cost of the shaping decisions: SITE_MESSAGES messages (100,000)
//! spread over SITES sites (1,000), each message one site of its MX set,
//! one admission and one end of transaction (half of the sites answer a
//! rate answer now and then, so pauses, deferrals and recoveries are
//! exercised). Prints decisions a second and the memory the sites hold.
//! Run by `bench/shaping.sh`.

use portcullis_shaping::{Action, Admit, PaceSettings, ReplyClass, SiteLimits, SiteState, Sites};
use std::collections::HashMap;
use std::time::Instant;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (sites_n, messages) = (env("SITES", 1000), env("SITE_MESSAGES", 100_000));
    let table = Sites::new(
        &[],
        SiteLimits {
            max_connections: 20,
            messages_per_connection: 0,
            messages_per_minute: 600,
            connections_per_minute: 0,
        },
    );
    let hosts: Vec<[String; 2]> = (0..sites_n)
        .map(|i| [format!("mx1.d{i}.test"), format!("mx2.d{i}.test")])
        .collect();
    let before = rss_kib();
    let mut states: HashMap<String, SiteState> = HashMap::new();
    let rate = [(
        ReplyClass::RateLimited,
        Action::Pause,
        "421 4.7.0".to_owned(),
    )];
    let (mut go, mut deferred, mut full) = (0u64, 0u64, 0u64);
    let t0 = Instant::now();
    for (m, now) in (0..messages).zip(1_800_000_000_000u64..) {
        let i = m % sites_n;
        // The site of the destination (its MX set), then its decision.
        let (name, limits) = table.site_of(hosts[i].iter().map(String::as_str));
        let state = states
            .entry(name)
            .or_insert_with_key(|n| SiteState::new(n, limits, PaceSettings::default()));
        match state.admit(now) {
            Admit::Go { .. } => {
                go += 1;
                let answer: &[(ReplyClass, Action, String)] = if i % 2 == 0 && m % 997 == 0 {
                    &rate
                } else {
                    &[]
                };
                state.done(now, answer);
            }
            Admit::Defer { .. } => deferred += 1,
            Admit::Full => full += 1,
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "| sites | messages | decisions/s | started | sent back | full | memory (KiB) |\n|---|---|---|---|---|---|---|\n| {sites_n} | {messages} | {:.0} | {go} | {deferred} | {full} | {} |",
        messages as f64 / secs,
        rss_kib().saturating_sub(before)
    );
}
