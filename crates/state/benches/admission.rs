//! Admission decisions per second on one core (a current-thread runtime):
//! each decision is what a port-25 connect costs the state, a lookup
//! (blocklist, known senders, domain ranges), the range's and the class's
//! concurrency slots (leases in Redis, given back at once) and the
//! class's charges, for a client from a fresh IPv6 /64. Embedded always; Redis too when
//! `PORTCULLIS_BENCH_REDIS` names one (bench/admission.sh starts it).
//!
//! `cargo bench -p portcullis-state --bench admission`

use portcullis_admission::{Identity, Policy};
use portcullis_config::{Config, StateBackend};
use portcullis_state::Store as AdmissionState;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Instant;

const DECISIONS: u64 = 200_000;
const IN_FLIGHT: u64 = 64;

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("pc-bench-{}", std::process::id()));
    let mut config = Config::embedded_default(dir.clone(), "bench.test".into());
    let mut runs = vec![("embedded", config.clone())];
    if let Ok(url) = std::env::var("PORTCULLIS_BENCH_REDIS") {
        config.state_backend = StateBackend::Redis;
        config.redis_url = Some(url);
        runs.push(("redis", config));
    }
    for (name, config) in runs {
        let state = AdmissionState::open(&config).expect("state");
        let policy = Policy::from_config(&config);
        let n = if name == "redis" {
            DECISIONS / 4
        } else {
            DECISIONS
        };
        let rate = rt.block_on(run(state.clone(), policy, n));
        println!("admission decisions/s on one core, {name}: {rate:.0}");
        println!("state after {n} fresh /64s, {name}: {:?}", state.sizes());
    }
    let _ = std::fs::remove_dir_all(dir);
}

async fn run(state: AdmissionState, policy: Policy, n: u64) -> f64 {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..IN_FLIGHT {
        let (state, policy) = (state.clone(), policy.clone());
        tasks.spawn(async move {
            let mut admitted = 0u64;
            for i in (w..n).step_by(IN_FLIGHT as usize) {
                let ip = IpAddr::V6(Ipv6Addr::from(
                    0x2001_0db8_0001_0000_u128 << 64 | u128::from(i) << 64 | 1,
                ));
                let range = policy.range_of(ip);
                let found = state.lookup(ip, range).await;
                let class = policy.class_for(&Identity::Unknown, None);
                let per_range = policy.admission.per_range_max_connections.max(1);
                let _range_slot = state.lease(&format!("range:{range}"), per_range).await;
                let max = class.limits.max_connections.unwrap_or(0).max(1_000_000);
                let _class_slot = state.lease(&class.budget(), max).await;
                if found.blocked.is_none()
                    && state
                        .charge(&policy.connect_charges(&class, range))
                        .await
                        .is_ok()
                {
                    admitted += 1;
                }
            }
            admitted
        });
    }
    while tasks.join_next().await.is_some() {}
    n as f64 / start.elapsed().as_secs_f64()
}
