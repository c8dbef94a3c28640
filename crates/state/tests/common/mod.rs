//! Real Redis for the state tests: a server, or a three-master cluster,
//! on free loopback ports, stopped when dropped.

#![allow(dead_code)]

use portcullis_admission::Charge;
use portcullis_config::{Cidr, Config, RedisSettings, RedisTarget, ReputationRules, StateBackend};
use portcullis_state::{Claim, SlotClaim, Store};
use std::net::{IpAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A redis-server of the test's own, on a free loopback port, stopped
/// when dropped.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(free_port(), &[])
    }

    pub fn start_with(port: u16, extra: &[&str]) -> RedisServer {
        let dir = TempDir::new("redis");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .arg("--dir")
            .arg(&dir.0)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (Debian package redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        RedisServer {
            child,
            port,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three masters with `--cluster-enabled yes`, joined by `redis-cli
/// --cluster create`; stopped when dropped.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                // The bus port is the client port + 10000 unless named:
                // a free port above 55535 would leave it out of range.
                let bus = free_port().to_string();
                RedisServer::start_with(
                    free_port(),
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-node-timeout",
                        "2000",
                        "--cluster-port",
                        &bus,
                    ],
                )
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli must be installed (Debian package redis-tools)");
        assert!(created.success(), "redis-cli --cluster create failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !addrs.iter().all(|a| cluster_ok(a)) {
            assert!(Instant::now() < deadline, "the cluster never became ok");
            std::thread::sleep(Duration::from_millis(50));
        }
        RedisCluster { nodes }
    }

    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}

pub fn cluster_ok(addr: &str) -> bool {
    let (host, port) = addr.split_once(':').expect("host:port");
    Command::new("redis-cli")
        .args(["-h", host, "-p", port, "cluster", "info"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
        .unwrap_or(false)
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("pc-state-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A stranger's connect: the range's and the class's slots (the range
/// holding `range_max`) and both connection-rate charges.
pub fn strangers_claim(range: Cidr, class: &str, per_minute: u64, range_max: u32) -> Claim {
    let rate = |budget: String| Charge {
        key: format!("rl:connections_per_minute:{budget}"),
        budget,
        per_minute,
        cost: 1,
        limit: "connections_per_minute",
        class: "default".into(),
    };
    Claim {
        slots: vec![
            SlotClaim {
                budget: format!("range:{range}"),
                max: range_max,
            },
            SlotClaim {
                budget: class.into(),
                max: 100,
            },
        ],
        charges: vec![rate(format!("range:{range}")), rate(class.into())],
    }
}

/// The reputation rules of the backend suites.
pub fn rules() -> ReputationRules {
    ReputationRules {
        promote_after: 3,
        ..ReputationRules::default()
    }
}

/// A node's config: embedded, or on the Redis `target`.
pub fn config(dir: &TempDir, target: Option<RedisTarget>) -> Config {
    let mut c = Config::embedded_default(dir.0.clone(), "mx.test".into());
    c.reputation = rules();
    if let Some(target) = target {
        c.state_backend = StateBackend::Redis;
        c.redis = Some(RedisSettings {
            target,
            node_timeout: Duration::from_secs(20),
        });
    }
    c
}

/// Run `check` against an embedded store, a fresh Redis and a fresh
/// Redis Cluster.
pub async fn on_every_backend<F, Fut>(check: F)
where
    F: Fn(Store, &'static str) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = TempDir::new("embedded");
    let embedded = Store::open(&config(&dir, None)).expect("embedded store");
    check(embedded, "embedded").await;
    let redis = RedisServer::start();
    let dir = TempDir::new("redis-node");
    let shared =
        Store::open(&config(&dir, Some(RedisTarget::Single(redis.url())))).expect("redis store");
    check(shared.clone(), "redis").await;
    assert_eq!(shared.redis_up(), Some(true), "Redis answered throughout");
    let cluster = RedisCluster::start();
    let dir = TempDir::new("cluster-node");
    let target = RedisTarget::Cluster(cluster.seeds());
    let clustered = Store::open(&config(&dir, Some(target))).expect("cluster store");
    check(clustered.clone(), "redis-cluster").await;
    assert_eq!(
        clustered.redis_up(),
        Some(true),
        "the cluster answered throughout"
    );
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}
