//! Several nodes on one Redis (issue 18): what one node does, the others
//! see; a stranger's connect costs one round trip; a node that dies
//! gives its concurrency slots back within the node timeout.
//!
//! Needs `redis-server` and `redis-cli` on PATH.

mod common;

use common::{RedisCluster, RedisServer, TempDir, strangers_claim};
use portcullis_admission::StateCommand;
use portcullis_config::{Config, RedisSettings, RedisTarget, StateBackend};
use portcullis_state::{Claim, Outcome, Store};
use std::process::Command;
use std::time::{Duration, Instant};

fn node(dir: &TempDir, target: RedisTarget, node_timeout: Duration) -> Store {
    let mut c = Config::embedded_default(dir.0.clone(), "mx.test".into());
    c.state_backend = StateBackend::Redis;
    c.redis = Some(RedisSettings {
        target,
        node_timeout,
    });
    Store::open(&c).expect("a Redis store")
}

/// Poll `done` every 10 ms until it holds or `within` passed.
async fn eventually(within: Duration, what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Redis's MONITOR feed: every command a client sends, one line each
/// (a script's own calls are marked `lua`).
struct Monitor {
    child: std::process::Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    port: u16,
}

impl Monitor {
    fn start(port: u16) -> Monitor {
        use std::io::BufRead;
        let mut child = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "monitor"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("redis-cli");
        let out = child.stdout.take().expect("piped");
        let mut lines = std::io::BufReader::new(out).lines();
        assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("OK"));
        Monitor { child, lines, port }
    }

    /// The commands clients sent since the start, up to a marker.
    fn client_commands(mut self) -> Vec<String> {
        redis_cli(self.port, &["echo", "end-of-test"]);
        let mut seen = Vec::new();
        for line in self.lines.by_ref().map_while(Result::ok) {
            if line.contains("end-of-test") {
                break;
            }
            if !line.contains(" lua]") {
                seen.push(line);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        seen
    }
}

#[tokio::test]
async fn a_strangers_connect_is_one_round_trip() {
    let redis = RedisServer::start();
    let dir = TempDir::new("one-trip");
    let s = node(
        &dir,
        RedisTarget::Single(redis.url()),
        Duration::from_secs(20),
    );
    let range = "2001:db8:5::/64".parse().expect("range");
    // Warm up: the connection, and the script loaded once.
    let _ = s.admit(range, &Claim::default(), true).await;
    let monitor = Monitor::start(redis.port);
    let admitted = s
        .admit(
            range,
            &strangers_claim("2001:db8:5::/64".parse().unwrap(), "class:default", 600, 4),
            true,
        )
        .await;
    let sent = monitor.client_commands();
    assert!(matches!(admitted.outcome, Outcome::Granted(ref s) if s.len() == 2));
    assert_eq!(sent.len(), 1, "lookup, two leases, two charges: {sent:#?}");
    assert!(sent[0].contains("\"EVALSHA\""), "{sent:?}");
}

#[tokio::test]
async fn a_block_made_on_one_node_is_enforced_by_another_within_a_second() {
    let redis = RedisServer::start();
    let cluster = RedisCluster::start();
    for target in [
        RedisTarget::Single(redis.url()),
        RedisTarget::Cluster(cluster.seeds()),
    ] {
        let (da, db) = (TempDir::new("node-a"), TempDir::new("node-b"));
        let a = node(&da, target.clone(), Duration::from_secs(20));
        let b = node(&db, target.clone(), Duration::from_secs(20));
        let following = tokio::spawn(b.clone().follow_cluster());
        let range = "203.0.113.0/24".parse().expect("range");
        let block = StateCommand::Block {
            range,
            secs: 600,
            reason: "made on node A".into(),
        };
        a.apply(&block).await.expect("Redis answers");
        let client = "203.0.113.9".parse().expect("address");
        assert!(a.listed(client).blocked.is_some(), "at once on node A");
        eventually(
            Duration::from_secs(1),
            "node B enforces the block",
            async || b.listed(client).blocked.is_some(),
        )
        .await;
        a.apply(&StateCommand::Unblock { range })
            .await
            .expect("unblock");
        eventually(
            Duration::from_secs(1),
            "node B lifts the block",
            async || b.listed(client).blocked.is_none(),
        )
        .await;
        following.abort();
    }
}

#[tokio::test]
async fn a_live_node_keeps_its_slots_past_the_node_timeout() {
    let redis = RedisServer::start();
    let timeout = Duration::from_secs(1);
    let (da, db) = (TempDir::new("live-a"), TempDir::new("live-b"));
    let a = node(&da, RedisTarget::Single(redis.url()), timeout);
    let b = node(&db, RedisTarget::Single(redis.url()), timeout);
    let beating = tokio::spawn(a.clone().follow_cluster());
    let held = a.slot("class:partner", 1).await.expect("a free slot");
    tokio::time::sleep(timeout * 3).await;
    assert!(
        b.slot("class:partner", 1).await.is_none(),
        "node A's heartbeat renewed its lease"
    );
    drop(held);
    beating.abort();
}

#[tokio::test]
async fn a_dead_nodes_slots_lapse_within_the_node_timeout() {
    let redis = RedisServer::start();
    let timeout = Duration::from_secs(1);
    let (da, db) = (TempDir::new("dead-a"), TempDir::new("dead-b"));
    let a = node(&da, RedisTarget::Single(redis.url()), timeout);
    let b = node(&db, RedisTarget::Single(redis.url()), timeout);
    let held = a.slot("class:partner", 1).await.expect("a free slot");
    // Node A dies holding the slot: no release, no heartbeat.
    std::mem::forget(held);
    drop(a);
    assert!(b.slot("class:partner", 1).await.is_none(), "still held");
    eventually(timeout * 3, "the dead node's lease lapses", async || {
        b.slot("class:partner", 1).await.is_some()
    })
    .await;
}

#[tokio::test]
async fn one_node_of_many_sends_a_periods_reports_with_every_nodes_rows() {
    let redis = RedisServer::start();
    let (da, db, dc) = (
        TempDir::new("rep-a"),
        TempDir::new("rep-b"),
        TempDir::new("rep-c"),
    );
    let timeout = Duration::from_secs(5);
    let target = || RedisTarget::Single(redis.url());
    let nodes = [
        node(&da, target(), timeout),
        node(&db, target(), timeout),
        node(&dc, target(), timeout),
    ];
    let mut roles = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        roles.push(
            n.hand_in_period("dmarc", 86_400, format!("rows of {i}").as_bytes())
                .await,
        );
    }
    use portcullis_state::PeriodRole::{Contributor, Sender};
    assert_eq!(roles, [Sender, Contributor, Contributor]);
    let mut all = nodes[0].handed_in_periods("dmarc", 86_400).await;
    all.sort();
    assert_eq!(
        all,
        [
            b"rows of 0".to_vec(),
            b"rows of 1".to_vec(),
            b"rows of 2".to_vec()
        ]
    );
    // The next period is claimed afresh; another kind is its own period.
    assert_eq!(
        nodes[2].hand_in_period("dmarc", 172_800, b"x").await,
        Sender
    );
    assert_eq!(
        nodes[1].hand_in_period("tlsrpt", 86_400, b"y").await,
        Sender
    );
}

#[tokio::test]
async fn without_redis_a_node_reports_alone() {
    let dir = TempDir::new("rep-alone");
    let c = Config::embedded_default(dir.0.clone(), "mx.test".into());
    let store = Store::open(&c).unwrap();
    let role = store.hand_in_period("dmarc", 86_400, b"rows").await;
    assert_eq!(role, portcullis_state::PeriodRole::Alone);
    assert!(store.handed_in_periods("dmarc", 86_400).await.is_empty());
}

/// A start at one connection to `site`, 3 s from the last across nodes.
async fn site_start(s: &Store, now: u64) -> portcullis_shaping::Taken {
    use portcullis_shaping::{LedgerClaim, SiteLedger};
    let claim = LedgerClaim {
        max_connections: 1,
        interval_ms: 3_000,
        max_wait_ms: 2_000,
        not_before: now,
    };
    s.take("google", claim, now)
        .await
        .expect("Redis answers")
        .taken
}

#[tokio::test]
async fn two_nodes_share_a_sites_connections_and_pace() {
    use portcullis_shaping::Taken;
    let redis = RedisServer::start();
    let cluster = RedisCluster::start();
    for target in [
        RedisTarget::Single(redis.url()),
        RedisTarget::Cluster(cluster.seeds()),
    ] {
        let (da, db) = (TempDir::new("site-a"), TempDir::new("site-b"));
        let a = node(&da, target.clone(), Duration::from_secs(20));
        let b = node(&db, target, Duration::from_secs(20));
        let now = portcullis_config::clock::now_us() / 1000;
        let held = site_start(&a, now).await;
        assert!(matches!(held, Taken::Granted { at, .. } if at == now));
        assert!(matches!(site_start(&b, now).await, Taken::Full));
        drop(held);
        eventually(
            Duration::from_secs(5),
            "node A gives it back",
            async || matches!(site_start(&b, now).await, Taken::Busy { at } if at == now + 3_000),
        )
        .await;
        let turn = now + 3_000;
        assert!(matches!(site_start(&b, turn).await, Taken::Granted { at, .. } if at == turn));
    }
}

#[tokio::test]
async fn a_dead_nodes_site_connections_lapse_within_the_node_timeout() {
    use portcullis_shaping::Taken;
    let redis = RedisServer::start();
    let timeout = Duration::from_secs(1);
    let (da, db) = (TempDir::new("site-dead-a"), TempDir::new("site-dead-b"));
    let a = node(&da, RedisTarget::Single(redis.url()), timeout);
    let b = node(&db, RedisTarget::Single(redis.url()), timeout);
    let started = portcullis_config::clock::now_us() / 1000;
    let Taken::Granted { hold, .. } = site_start(&a, started).await else {
        panic!("a free connection");
    };
    // Node A dies holding the connection: no release, no heartbeat.
    std::mem::forget(hold);
    drop(a);
    let now = || portcullis_config::clock::now_us() / 1000;
    assert!(matches!(site_start(&b, now()).await, Taken::Full));
    eventually(
        timeout * 3,
        "the dead node's connection lapses",
        async || !matches!(site_start(&b, now()).await, Taken::Full),
    )
    .await;
}
