//! One suite, every backend: each behaviour below runs against the
//! embedded store, a real Redis and a real three-master Redis Cluster
//! started by the test, and must come out the same. Redis-only
//! operations (shared quotas, the cluster's AUTH counts) say "count
//! locally" (None) on the embedded store.
//!
//! Needs `redis-server` and `redis-cli` on PATH (Debian's redis-server
//! and redis-tools; `.ci/run` installs them).

use portcullis_admission::{Charge, LevelChange, RangeFacts, StateCommand, Verdict};
use portcullis_config::{Cidr, Config, RedisSettings, RedisTarget, ReputationRules, StateBackend};
use portcullis_state::{Claim, Outcome, Store};
use std::net::{IpAddr, TcpListener};
use std::time::{Duration, Instant};

mod common;
use common::{RedisCluster, RedisServer, TempDir, strangers_claim};

fn rules() -> ReputationRules {
    ReputationRules {
        promote_after: 3,
        ..ReputationRules::default()
    }
}

fn config(dir: &TempDir, target: Option<RedisTarget>) -> Config {
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
async fn on_every_backend<F, Fut>(check: F)
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

/// What a connect decision learns of a range, taking nothing.
async fn facts(s: &Store, range: Cidr) -> RangeFacts {
    s.admit(range, &Claim::default(), false).await.facts
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

fn cidr(s: &str) -> Cidr {
    s.parse().expect("a range")
}

fn charge(key: &str, per_minute: u64, cost: u64) -> Charge {
    Charge {
        key: key.into(),
        budget: key.into(),
        per_minute,
        cost,
        limit: "messages_per_minute",
        class: "default".into(),
    }
}

#[tokio::test]
async fn a_blocked_range_is_refused_at_lookup_until_unblocked() {
    on_every_backend(|s, backend| async move {
        let range = cidr("192.0.2.0/24");
        let block = StateCommand::Block {
            range,
            secs: 600,
            reason: "test".into(),
        };
        s.apply(&block).await.expect("block");
        let found = s.listed(ip("192.0.2.7"));
        let (listed, entry) = found.blocked.expect(backend);
        assert_eq!(listed, range, "{backend}");
        assert_eq!(entry.reason, "test", "{backend}");
        assert_eq!(s.blocklist().await.len(), 1, "{backend}");
        s.apply(&StateCommand::Unblock { range })
            .await
            .expect("unblock");
        let found = s.listed(ip("192.0.2.7"));
        assert!(found.blocked.is_none(), "{backend}");
        assert!(
            s.apply(&StateCommand::Unblock { range }).await.is_err(),
            "{backend}: not listed"
        );
    })
    .await;
}

#[tokio::test]
async fn a_charge_past_the_burst_is_refused_and_names_the_full_bucket() {
    on_every_backend(|s, backend| async move {
        // 60 per minute: a minute's worth (60) fits at once, the 61st not.
        let ok = charge("test:a", 6000, 1);
        for _ in 0..60 {
            s.charge(&[ok.clone(), charge("test:b", 60, 1)])
                .await
                .expect(backend);
        }
        let (index, retry_us) = s
            .charge(&[ok.clone(), charge("test:b", 60, 1)])
            .await
            .expect_err(backend);
        assert_eq!(index, 1, "{backend}: the second bucket is the full one");
        assert!(
            retry_us > 0 && retry_us <= 1_000_000,
            "{backend}: {retry_us}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_refused_charge_draws_from_no_bucket() {
    on_every_backend(|s, backend| async move {
        s.charge(&[charge("test:full", 1, 60)])
            .await
            .expect(backend);
        // All or nothing: the free bucket is not charged when the full one refuses.
        let _ = s
            .charge(&[charge("test:free", 1, 60), charge("test:full", 1, 1)])
            .await
            .expect_err(backend);
        s.charge(&[charge("test:free", 1, 60)])
            .await
            .expect("the free bucket is still empty");
    })
    .await;
}

#[tokio::test]
async fn a_known_sender_range_is_found_at_lookup() {
    on_every_backend(|s, backend| async move {
        let range = cidr("2001:db8:1::/48");
        let add = StateCommand::KnownAdd {
            range,
            name: "partner".into(),
        };
        s.apply(&add).await.expect(backend);
        let found = s.listed(ip("2001:db8:1:2::9"));
        assert_eq!(found.known.as_deref(), Some("partner"), "{backend}");
        assert_eq!(
            s.known().await,
            vec![(range, "partner".to_owned())],
            "{backend}"
        );
        s.apply(&StateCommand::KnownDel { range })
            .await
            .expect(backend);
        assert!(s.known().await.is_empty(), "{backend}");
    })
    .await;
}

#[tokio::test]
async fn a_range_remembers_the_domains_it_authenticated_for() {
    on_every_backend(|s, backend| async move {
        let range = cidr("198.51.100.0/24");
        s.remember_range(range, "example.org").await;
        let found = facts(&s, range).await;
        assert_eq!(found.domains, vec!["example.org".to_owned()], "{backend}");
    })
    .await;
}

#[tokio::test]
async fn user_unknown_answers_are_counted_per_range() {
    on_every_backend(|s, backend| async move {
        let range = cidr("203.0.113.0/24");
        s.penalize(range).await;
        s.penalize(range).await;
        let found = facts(&s, range).await;
        assert_eq!(found.unknown_users, 2, "{backend}");
        let other = facts(&s, cidr("203.0.114.0/24")).await;
        assert_eq!(other.unknown_users, 0, "{backend}");
    })
    .await;
}

#[tokio::test]
async fn enough_ham_promotes_an_identity_once() {
    on_every_backend(|s, backend| async move {
        let key = "domain:example.org";
        assert_eq!(
            s.record(key, Some(Verdict::Ham), true).await,
            None,
            "{backend}"
        );
        assert_eq!(
            s.record(key, Some(Verdict::Ham), true).await,
            None,
            "{backend}"
        );
        let change = s.record(key, Some(Verdict::Ham), true).await;
        assert_eq!(
            change,
            Some(LevelChange::Promoted { from: 0, to: 1 }),
            "{backend}"
        );
        let rep = s.reputation(key).await.expect(backend);
        assert_eq!((rep.level, rep.messages, rep.ham), (1, 3, 3), "{backend}");
        assert_eq!(s.reputations().await.len(), 1, "{backend}");
        assert!(s.reputation("nobody.example").await.is_none(), "{backend}");
    })
    .await;
}

#[tokio::test]
async fn an_operator_report_counts_a_verdict_without_a_message() {
    on_every_backend(|s, backend| async move {
        let report = StateCommand::Report {
            identity: "example.net".into(),
            verdict: "spam".into(),
        };
        s.apply(&report).await.expect(backend);
        let rep = s.reputation("domain:example.net").await.expect(backend);
        assert_eq!((rep.messages, rep.spam), (0, 1), "{backend}");
    })
    .await;
}

#[tokio::test]
async fn shared_quotas_exist_only_with_redis() {
    on_every_backend(|s, backend| async move {
        let limits = portcullis_accounts::QuotaLimits {
            per_hour: 2,
            per_day: 10,
        };
        let now = portcullis_config::clock::now_secs();
        let quota = s.take_quota("recipients:a@x", limits, 2, now).await;
        if backend == "embedded" {
            assert!(
                quota.is_none(),
                "embedded: quotas are counted by the caller"
            );
            return;
        }
        assert_eq!(quota, Some(Ok(())), "{backend}");
        let over = s.take_quota("recipients:a@x", limits, 1, now).await;
        assert!(
            matches!(over, Some(Err(e)) if e.limit == 2),
            "{backend}: {over:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_full_slot_is_refused_until_its_holder_gives_it_back() {
    on_every_backend(|s, backend| async move {
        let held = s.slot("class:test", 1).await.expect(backend);
        assert!(s.slot("class:test", 1).await.is_none(), "{backend}: full");
        assert_eq!(s.held("class:test"), 1, "{backend}: the census");
        drop(held);
        // With Redis the release is sent without waiting: poll for it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.slot("class:test", 1).await.is_none() {
            assert!(Instant::now() < deadline, "{backend}: never given back");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// A stranger's connect: the range's slot, the default class's, and
/// both connection rates.
#[tokio::test]
async fn a_connect_decision_takes_every_slot_and_charge_or_none() {
    on_every_backend(|s, backend| async move {
        let range = cidr("2001:db8:7::/64");
        let claim = strangers_claim(range, "class:default", 60, 2);
        let Outcome::Granted(first) = s.admit(range, &claim, true).await.outcome else {
            panic!("{backend}: the first connect is granted");
        };
        let Outcome::Granted(second) = s.admit(range, &claim, true).await.outcome else {
            panic!("{backend}: the second connect is granted");
        };
        assert_eq!(s.held("class:default"), 2, "{backend}");
        match s.admit(range, &claim, true).await.outcome {
            Outcome::SlotFull(0) => {}
            other => panic!("{backend}: the range's two slots are held: {other:?}"),
        }
        assert_eq!(
            s.held("class:default"),
            2,
            "{backend}: the refused took nothing"
        );
        drop((first, second));
        let tight = strangers_claim(cidr("2001:db8:8::/64"), "class:tight", 1, 2);
        assert!(matches!(
            s.admit(cidr("2001:db8:8::/64"), &tight, true).await.outcome,
            Outcome::Granted(_)
        ));
        match s.admit(cidr("2001:db8:8::/64"), &tight, true).await.outcome {
            Outcome::BucketFull(0, retry) => assert!(retry > 0, "{backend}"),
            other => panic!("{backend}: one connection a minute: {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn a_vouched_range_takes_nothing_when_asked_to_stop() {
    on_every_backend(|s, backend| async move {
        let range = cidr("198.51.100.0/24");
        s.remember_range(range, "example.org").await;
        let claim = strangers_claim(range, "class:default", 60, 2);
        let admitted = s.admit(range, &claim, true).await;
        assert!(matches!(admitted.outcome, Outcome::Vouched), "{backend}");
        assert_eq!(admitted.facts.domains, vec!["example.org".to_owned()]);
        assert_eq!(s.held("class:default"), 0, "{backend}: nothing taken");
    })
    .await;
}

#[tokio::test]
async fn auth_failures_are_counted_for_every_node_with_redis() {
    on_every_backend(|s, backend| async move {
        let throttle = portcullis_accounts::ThrottleConfig {
            base_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            address_lock_after: 3,
            account_lock_after: 3,
            lock_for: Duration::from_secs(60),
        };
        let client = ip("192.0.2.50");
        s.auth_outcome(client, "a@x", false, &throttle).await;
        s.auth_outcome(client, "a@x", false, &throttle).await;
        let counts = s.auth_counts(client, "a@x").await;
        match backend {
            "embedded" => assert!(counts.is_none()),
            _ => {
                let c = counts.expect("Redis answers");
                assert_eq!((c.address.0, c.account.0, c.known), (2, 2, false));
                s.auth_outcome(client, "a@x", true, &throttle).await;
                let c = s.auth_counts(client, "a@x").await.expect("Redis answers");
                assert_eq!((c.address.0, c.known), (0, true));
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_node_decides_on_local_state_while_redis_is_down() {
    let closed = TcpListener::bind("127.0.0.1:0").expect("port");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let dir = TempDir::new("down");
    let target = RedisTarget::Single(format!("redis://127.0.0.1:{port}"));
    let s = Store::open(&config(&dir, Some(target))).expect("store");
    s.charge(&[charge("test:down", 1, 60)])
        .await
        .expect("local bucket");
    assert!(
        s.charge(&[charge("test:down", 1, 1)]).await.is_err(),
        "local bucket is full"
    );
    s.penalize(cidr("192.0.2.0/24")).await;
    let found = facts(&s, cidr("192.0.2.0/24")).await;
    assert_eq!(found.unknown_users, 1, "counted locally");
    assert_eq!(s.redis_up(), Some(false));
    assert!(s.redis_errors() > 0);
    let report = StateCommand::Block {
        range: cidr("192.0.2.0/24"),
        secs: 60,
        reason: "x".into(),
    };
    assert!(
        s.apply(&report).await.is_err(),
        "an operator's change needs Redis"
    );
}

#[tokio::test]
async fn the_embedded_snapshot_survives_a_restart() {
    let dir = TempDir::new("snapshot");
    let s = Store::open(&config(&dir, None)).expect("store");
    let block = StateCommand::Block {
        range: cidr("192.0.2.0/24"),
        secs: 600,
        reason: "kept".into(),
    };
    s.apply(&block).await.expect("block");
    s.maintain().expect("snapshot");
    let again = Store::open(&config(&dir, None)).expect("reopened");
    assert_eq!(again.blocklist().await.len(), 1);
}

#[tokio::test]
async fn greylisting_defers_the_first_try_and_passes_a_retry_after_the_delay() {
    on_every_backend(|s, backend| async move {
        use portcullis_admission::{Greyed, GreylistRules};
        let now_retry = GreylistRules {
            delay: 0,
            expiry: 3600,
            pass: 86_400,
        };
        assert_eq!(
            s.greylist("r|a.test|b@l.test", now_retry).await,
            Greyed::Wait(0),
            "{backend}"
        );
        assert_eq!(
            s.greylist("r|a.test|b@l.test", now_retry).await,
            Greyed::Pass,
            "{backend}"
        );
        let later = GreylistRules {
            delay: 300,
            ..now_retry
        };
        assert_eq!(
            s.greylist("r|c.test|b@l.test", later).await,
            Greyed::Wait(300),
            "{backend}"
        );
        let Greyed::Wait(left) = s.greylist("r|c.test|b@l.test", later).await else {
            panic!("{backend}: a retry inside the delay passed");
        };
        assert!((299..=300).contains(&left), "{backend}: {left}");
        assert_eq!(
            s.greylist("r|a.test|b@l.test", later).await,
            Greyed::Pass,
            "{backend}: still known"
        );
    })
    .await;
}

#[tokio::test]
async fn escalation_exemptions_are_found_on_every_backend() {
    use portcullis_admission::Exemption;
    on_every_backend(|s, backend| async move {
        let within = |p: &'static str| {
            let s = s.clone();
            async move { s.exemption_within(cidr(p)).await }
        };
        assert_eq!(within("2001:db8:1::/48").await, None, "{backend}");
        let known = StateCommand::KnownAdd {
            range: cidr("2001:db8:1:10::/64"),
            name: "partner".into(),
        };
        s.apply(&known).await.expect("known");
        s.remember_range(cidr("2001:db8:2:20::/64"), "example.org")
            .await;
        s.remember_authenticated(cidr("2001:db8:3:30::/64")).await;
        assert_eq!(
            within("2001:db8:1::/56").await,
            Some(Exemption::Known),
            "{backend}"
        );
        assert_eq!(
            within("2001:db8:2::/48").await,
            Some(Exemption::Domain),
            "{backend}"
        );
        assert_eq!(
            within("2001:db8:3::/56").await,
            Some(Exemption::Authenticated),
            "{backend}"
        );
        assert_eq!(within("2001:db8:4::/48").await, None, "{backend}");
    })
    .await;
}

/// Issue 28: the shared blocklist is one hash that every block adds to;
/// without a sweep a long flood leaves every ended block in Redis for
/// ever (and in every node's reload of the lists).
#[tokio::test]
async fn a_flood_of_ended_blocks_is_swept_from_the_shared_blocklist() {
    const FLOOD: u32 = 100_000;
    let redis = RedisServer::start();
    let dir = TempDir::new("sweep");
    let s = Store::open(&config(&dir, Some(RedisTarget::Single(redis.url())))).expect("store");
    let live = StateCommand::Block {
        range: cidr("198.51.100.0/24"),
        secs: 600,
        reason: "still on".into(),
    };
    s.apply(&live).await.expect("block");
    let client = redis::Client::open(redis.url()).expect("client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let hash = "pc:{global}:blocklist";
    let ended = r#"{"until":1000,"reason":"escalated: a flood"}"#;
    for chunk in (0..FLOOD).collect::<Vec<_>>().chunks(10_000) {
        let mut hset = redis::cmd("HSET");
        hset.arg(hash);
        for n in chunk {
            let (a, b) = (n >> 16, n & 0xffff);
            hset.arg(format!("2001:db8:{a:x}:{b:x}::/64")).arg(ended);
        }
        let _: i64 = hset.query_async(&mut c).await.expect("HSET");
    }
    let len = || {
        let mut c = c.clone();
        async move {
            redis::cmd("HLEN")
                .arg(hash)
                .query_async::<u64>(&mut c)
                .await
                .expect("HLEN")
        }
    };
    assert_eq!(len().await, u64::from(FLOOD) + 1);
    let started = Instant::now();
    let removed = s.sweep_shared().await;
    let took = started.elapsed();
    assert_eq!(removed, Some(u64::from(FLOOD)), "took {took:?}");
    assert_eq!(len().await, 1, "the live block stays");
    let left = s.blocklist().await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].1.reason, "still on");
    assert_eq!(s.sweep_shared().await, Some(0), "nothing left to sweep");
    eprintln!("swept {FLOOD} ended blocks in {took:?}");
}

/// Now, in whole seconds: the containment facts are timed by the
/// caller's clock.
fn now() -> u64 {
    portcullis_config::clock::now_secs()
}

#[tokio::test]
async fn containment_facts_add_up_the_same_on_every_backend() {
    use portcullis_containment::{Counter, observe};
    on_every_backend(|s, backend| async move {
        let t0 = now();
        let mut changes = observe::login(ip("2001:db8:1::1"), t0);
        changes.extend(observe::login(ip("192.0.2.7"), t0));
        changes.extend(observe::unknown_recipient(t0));
        changes.extend(observe::unknown_recipient(t0));
        changes.extend(observe::queued(
            "q1",
            &["a@x.test".into(), "b@x.test".into()],
            t0,
        ));
        s.containment_record("Bot@Example.test", &changes, t0, 14)
            .await;
        let again = observe::queued("q2", &["a@x.test".into()], t0);
        let t = s
            .containment_record("bot@example.test", &again, t0, 14)
            .await;
        assert_eq!(t.sum(Counter::UnknownLocal), 2, "{backend}");
        assert_eq!(t.sum(Counter::Messages), 2, "{backend}");
        assert_eq!(t.sum(Counter::Recipients), 3, "{backend}");
        assert_eq!(t.distinct_recipients, 2, "{backend}");
        assert_eq!(t.networks, ["192.0.2.0/24", "2001:db8:1::/64"], "{backend}");
        assert_eq!(t.samples, ["q2", "q1"], "{backend}");
        assert_eq!(t.contained, None, "{backend}");
        let other = s.containment_tally("someone@example.test", t0, 14).await;
        assert_eq!(other.sum(Counter::Messages), 0, "{backend}");
    })
    .await;
}

fn suppression(address: &str, until: u64) -> portcullis_shaping::Suppression {
    portcullis_shaping::Suppression {
        address: address.to_owned(),
        since: 1,
        until,
        reply: "550 5.1.1 no such user".into(),
        class: portcullis_shaping::ReplyClass::MailboxUnknown,
        queue_id: "Q1".into(),
    }
}

#[tokio::test]
async fn a_suppressed_address_is_found_listed_and_lifted() {
    on_every_backend(|s, backend| async move {
        let far = portcullis_config::clock::now_secs() + 86_400;
        s.suppress(suppression("gone@remote.test", far)).await;
        s.suppress(suppression("ended@remote.test", 2)).await;
        let found = s.suppressed("Gone@Remote.test").await;
        assert_eq!(found.map(|e| e.until), Some(far), "{backend}");
        assert!(
            s.suppressed("ended@remote.test").await.is_none(),
            "{backend}: ended"
        );
        let listed: Vec<String> = s
            .suppressions()
            .await
            .into_iter()
            .map(|e| e.address)
            .collect();
        assert_eq!(listed, ["gone@remote.test"], "{backend}");
        assert!(s.unsuppress("gone@remote.test").await, "{backend}");
        assert!(
            s.suppressed("gone@remote.test").await.is_none(),
            "{backend}"
        );
        assert!(
            !s.unsuppress("gone@remote.test").await,
            "{backend}: already lifted"
        );
    })
    .await;
}

#[tokio::test]
async fn a_containment_is_listed_until_lifted_and_lifting_forgets_the_counts() {
    use portcullis_containment::{Action, Contained, Counter, observe};
    on_every_backend(|s, backend| async move {
        let t0 = now();
        s.containment_record("held@example.test", &observe::trap_hit(t0), t0, 14)
            .await;
        let hold = Contained::by_operator(t0);
        s.set_contained("held@example.test", Some(&hold))
            .await
            .expect("held");
        let t = s.containment_tally("held@example.test", t0, 14).await;
        assert_eq!(t.contained.as_ref().map(|c| c.action), Some(Action::Hold));
        assert_eq!(s.contained("HELD@example.test").await, Some(hold.clone()));
        let listed = s.contained_accounts().await;
        assert_eq!(listed.len(), 1, "{backend}");
        assert_eq!(listed[0].0, "held@example.test", "{backend}");
        s.set_contained("held@example.test", None)
            .await
            .expect("released");
        let t = s.containment_tally("held@example.test", t0, 14).await;
        assert_eq!(t.contained, None, "{backend}");
        assert_eq!(t.sum(Counter::Traps), 0, "{backend}");
        assert!(s.contained_accounts().await.is_empty(), "{backend}");
    })
    .await;
}

#[tokio::test]
async fn an_embedded_hold_survives_a_restart_without_maintenance() {
    use portcullis_containment::Contained;
    let dir = TempDir::new("containment");
    let s = Store::open(&config(&dir, None)).expect("store");
    s.set_contained("held@example.test", Some(&Contained::by_operator(now())))
        .await
        .expect("held");
    drop(s);
    let again = Store::open(&config(&dir, None)).expect("reopened");
    assert_eq!(again.contained_accounts().await.len(), 1);
}

#[tokio::test]
async fn the_embedded_suppression_list_survives_a_restart() {
    let dir = TempDir::new("suppression");
    let far = portcullis_config::clock::now_secs() + 86_400;
    {
        let s = Store::open(&config(&dir, None)).expect("store");
        s.suppress(suppression("gone@remote.test", far)).await;
    }
    let s = Store::open(&config(&dir, None)).expect("store again");
    assert!(s.suppressed("gone@remote.test").await.is_some());
}

/// Now, in milliseconds: the sites' ledger is timed by the caller's clock.
fn now_ms() -> u64 {
    portcullis_config::clock::now_us() / 1000
}

/// A start at one connection and 20 messages a minute (3 s apart),
/// waiting at most `max_wait_ms` for its turn.
fn site_claim(not_before: u64, max_wait_ms: u64) -> portcullis_shaping::LedgerClaim {
    portcullis_shaping::LedgerClaim {
        max_connections: 1,
        interval_ms: 3_000,
        max_wait_ms,
        not_before,
    }
}

fn shared_pause(until: u64, reason: &str) -> portcullis_shaping::SharedPause {
    portcullis_shaping::SharedPause {
        until,
        reason: reason.into(),
        pauses: 1,
        rate: Some(10),
        refused_at: Some(20),
        step: 2,
        keep_until: until + 3_600_000,
    }
}

#[tokio::test]
async fn a_sites_ledger_holds_its_connections_and_paces_its_starts() {
    use portcullis_shaping::{SiteLedger, Taken};
    on_every_backend(|s, backend| async move {
        let now = now_ms();
        let first = s.take("google", site_claim(now, 2_000), now).await;
        if backend == "embedded" {
            assert!(first.is_none(), "embedded: the node's own state decides");
            assert!(!s.shares_sites());
            return;
        }
        assert!(s.shares_sites());
        let first = first.expect(backend);
        assert!(first.pause.is_none(), "{backend}");
        let Taken::Granted { at, hold } = first.taken else {
            panic!("{backend}: {:?}", first.taken);
        };
        assert_eq!(at, now, "{backend}");
        let full = s.take("google", site_claim(now, 2_000), now).await;
        assert!(
            matches!(full.expect(backend).taken, Taken::Full),
            "{backend}"
        );
        drop(hold);
        // The connection is given back without waiting: poll for it.
        // The next start is 3 s after the first: more than 2 s away.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let a = s
                .take("google", site_claim(now, 2_000), now)
                .await
                .expect(backend);
            match a.taken {
                Taken::Busy { at } => {
                    assert_eq!(at, now + 3_000, "{backend}");
                    break;
                }
                Taken::Full => assert!(Instant::now() < deadline, "{backend}: never given back"),
                other => panic!("{backend}: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let later = s.take("google", site_claim(now, 5_000), now).await;
        assert!(
            matches!(later.expect(backend).taken, Taken::Granted { at, .. } if at == now + 3_000),
            "{backend}: reserved at its turn"
        );
        let other = s.take("yahoo", site_claim(now, 2_000), now).await;
        assert!(
            matches!(other.expect(backend).taken, Taken::Granted { .. }),
            "{backend}: another site is another ledger"
        );
    })
    .await;
}

#[tokio::test]
async fn a_pause_in_the_ledger_stops_every_start_and_a_later_one_wins() {
    use portcullis_shaping::{SiteLedger, Taken};
    on_every_backend(|s, backend| async move {
        let now = now_ms();
        let kept = s
            .pause("google", shared_pause(now + 60_000, "421 4.7.28"))
            .await;
        if backend == "embedded" {
            assert!(kept.is_none(), "embedded: no ledger");
            return;
        }
        kept.expect(backend);
        let a = s
            .take("google", site_claim(now, 2_000), now)
            .await
            .expect(backend);
        assert!(matches!(a.taken, Taken::Paused), "{backend}: {:?}", a.taken);
        let p = a.pause.expect("the record comes with the answer");
        assert_eq!(
            (
                p.until,
                p.reason.as_str(),
                p.rate,
                p.refused_at,
                p.step,
                p.pauses
            ),
            (now + 60_000, "421 4.7.28", Some(10), Some(20), 2, 1),
            "{backend}"
        );
        // An older pause (a node that saw an earlier answer) is ignored.
        s.pause("google", shared_pause(now + 1_000, "421 4.7.0"))
            .await
            .expect(backend);
        let a = s
            .take("google", site_claim(now, 2_000), now)
            .await
            .expect(backend);
        assert_eq!(a.pause.map(|p| p.until), Some(now + 60_000), "{backend}");
        // Once it is over, starts go again and still learn its cut rate.
        let after = now + 60_000;
        let a = s
            .take("google", site_claim(after, 2_000), after)
            .await
            .expect(backend);
        assert!(matches!(a.taken, Taken::Granted { .. }), "{backend}");
        assert_eq!(a.pause.and_then(|p| p.rate), Some(10), "{backend}");
    })
    .await;
}

#[tokio::test]
async fn a_sites_ledger_says_nothing_while_redis_is_down() {
    use portcullis_shaping::SiteLedger;
    let closed = TcpListener::bind("127.0.0.1:0").expect("port");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let dir = TempDir::new("sites-down");
    let target = RedisTarget::Single(format!("redis://127.0.0.1:{port}"));
    let s = Store::open(&config(&dir, Some(target))).expect("store");
    let now = now_ms();
    assert!(
        s.take("google", site_claim(now, 2_000), now)
            .await
            .is_none()
    );
    let kept = s.pause("google", shared_pause(now + 60_000, "421")).await;
    assert!(kept.is_none(), "the node decides alone");
}
