//! Admission decisions per second on one core (a current-thread runtime):
//! each decision is what a port-25 connect costs the state: the lists
//! (from memory), then one decision for the range's facts, the range's
//! and the default class's concurrency slots (leases in Redis, given
//! back at once, without waiting) and both connection-rate charges.
//! Embedded always; Redis too when `PORTCULLIS_BENCH_REDIS` names one,
//! and a Redis Cluster when `PORTCULLIS_BENCH_CLUSTER` lists its seed
//! nodes (comma-separated); `bench/admission.sh` starts both.
//!
//! `PORTCULLIS_BENCH_PATTERN` chooses the clients: `fresh64` (default),
//! a fresh IPv6 /64 for every decision; `rotate`, 100,000 addresses
//! rotating inside 64 /64s (what a flood from a few hosts looks like).
//!
//! `cargo bench -p portcullis-state --bench admission`

use portcullis_admission::{Identity, Policy};
use portcullis_config::{Config, RedisSettings, RedisTarget, StateBackend};
use portcullis_state::{Claim, Outcome, SlotClaim, Store};
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

const IN_FLIGHT: u64 = 64;

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("pc-bench-{}", std::process::id()));
    let config = Config::embedded_default(dir.clone(), "bench.test".into());
    let rotate = std::env::var("PORTCULLIS_BENCH_PATTERN").as_deref() == Ok("rotate");
    let mut runs = Vec::new();
    if std::env::var("PORTCULLIS_BENCH_SKIP_EMBEDDED").is_err() {
        runs.push(("embedded", config.clone(), 1_000_000));
    }
    let shared = |target| Config {
        state_backend: StateBackend::Redis,
        redis: Some(RedisSettings {
            target,
            node_timeout: Duration::from_secs(20),
        }),
        ..config.clone()
    };
    if let Ok(url) = std::env::var("PORTCULLIS_BENCH_REDIS") {
        runs.push(("redis", shared(RedisTarget::Single(url)), 200_000));
    }
    if let Ok(nodes) = std::env::var("PORTCULLIS_BENCH_CLUSTER") {
        let nodes = nodes.split(',').map(str::to_owned).collect();
        runs.push((
            "redis-cluster",
            shared(RedisTarget::Cluster(nodes)),
            200_000,
        ));
    }
    let n = if rotate { 100_000 } else { 0 };
    for (name, config, decisions) in runs {
        let decisions = if rotate { n } else { decisions };
        let state = Store::open(&config).expect("state");
        let policy = Policy::from_config(&config);
        let rate = rt.block_on(run(state.clone(), policy, decisions, rotate));
        let pattern = if rotate {
            "100,000 addresses in 64 /64s"
        } else {
            "a fresh /64 each"
        };
        println!("admission decisions/s on one core, {name}, {pattern}: {rate:.0}");
        println!(
            "local state after {decisions} decisions, {name}: {:?}",
            state.sizes()
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn client(i: u64, rotate: bool) -> IpAddr {
    let net = 0x2001_0db8_0001_0000_u128 << 64;
    let bits = if rotate {
        // 64 /64s, a different interface identifier every time.
        net | u128::from(i % 64) << 64 | u128::from(i / 64 + 1)
    } else {
        net | u128::from(i) << 64 | 1
    };
    IpAddr::V6(Ipv6Addr::from(bits))
}

async fn run(state: Store, policy: Policy, n: u64, rotate: bool) -> f64 {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..IN_FLIGHT {
        let (state, policy) = (state.clone(), policy.clone());
        tasks.spawn(async move {
            let mut admitted = 0u64;
            for i in (w..n).step_by(IN_FLIGHT as usize) {
                let ip = client(i, rotate);
                let range = policy.range_of(ip);
                if state.listed(ip).blocked.is_some() {
                    continue;
                }
                let class = policy.class_for(&Identity::Unknown, None);
                let claim = Claim {
                    slots: vec![
                        SlotClaim {
                            budget: format!("range:{range}"),
                            max: policy.admission.per_range_max_connections.max(1_000),
                        },
                        SlotClaim {
                            budget: class.budget(),
                            max: 1_000_000,
                        },
                    ],
                    charges: policy.connect_charges(&class, range),
                };
                if let Outcome::Granted(_) = state.admit(range, &claim, true).await.outcome {
                    admitted += 1;
                }
            }
            admitted
        });
    }
    while tasks.join_next().await.is_some() {}
    n as f64 / start.elapsed().as_secs_f64()
}
