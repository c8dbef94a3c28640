//! One suite, every backend: each behaviour below runs against the
//! embedded store, a real Redis and a real three-master Redis Cluster
//! started by the test, and must come out the same. Redis-only
//! operations (shared quotas, the cluster's AUTH counts) say "count
//! locally" (None) on the embedded store.
//!
//! Needs `redis-server` and `redis-cli` on PATH (Debian's redis-server
//! and redis-tools; `.ci/run` installs them).

use portcullis_admission::{Charge, LevelChange, RangeFacts, StateCommand, Verdict};
use portcullis_config::{Cidr, RedisTarget};
use portcullis_state::{Claim, Outcome, Store};
use std::net::TcpListener;
use std::time::{Duration, Instant};

mod common;
use common::{RedisServer, TempDir, config, ip, on_every_backend, strangers_claim};

/// What a connect decision learns of a range, taking nothing.
async fn facts(s: &Store, range: Cidr) -> RangeFacts {
    s.admit(range, &Claim::default(), false).await.facts
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
