//! The accounts' and the way out's state on every backend: containment
//! facts and holds, the suppression list, and the sites' ledger, each
//! against the embedded store, a real Redis and a real Redis Cluster,
//! coming out the same (the ledger is Redis-only: None embedded).
//!
//! Needs `redis-server` and `redis-cli` on PATH.

mod common;
use common::{TempDir, config, ip, on_every_backend};
use portcullis_config::RedisTarget;
use portcullis_state::Store;
use std::net::TcpListener;
use std::time::{Duration, Instant};

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
