//! Admission as a specification: plain logic, a clock passed in.

use crate::*;
use portcullis_config::{Cidr, ClassLimits, Config};
use std::net::IpAddr;

const MIN: u64 = 60_000_000;

fn policy() -> Policy {
    let mut c = Config::embedded_default("/tmp/x".into(), "mx.test".into());
    let small = |mpm| ClassLimits {
        max_connections: Some(5),
        connections_per_minute: Some(1000),
        messages_per_minute: Some(mpm),
        recipients_per_message: Some(3),
        recipients_per_minute: Some(1000),
        bytes_per_minute: Some(1000),
    };
    c.classes.insert("default".into(), small(10));
    c.classes.insert("new".into(), small(100));
    c.classes.insert("trusted".into(), small(1000));
    c.reputation.promote_after = 5;
    c.reputation.promote_max_spam_percent = 10;
    c.reputation.demote_min_verdicts = 4;
    c.reputation.demote_spam_percent = 50;
    c.admission.remediation_url = "https://mx.test/why".into();
    Policy::from_config(&c)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Messages admitted for a class within one instant.
fn burst(p: &Policy, st: &mut EmbeddedState, sc: &SenderClass, now: u64) -> usize {
    (0..10_000)
        .take_while(|_| st.charge(&p.message_charges(sc), now).is_ok())
        .count()
}

#[test]
fn unknown_senders_share_one_pool() {
    let p = policy();
    let mut st = EmbeddedState::default();
    let a = p.class_for(&Identity::Unknown, None);
    let b = p.class_for(&Identity::Unknown, None);
    let t = 1_000 * MIN;
    let first = burst(&p, &mut st, &a, t);
    assert_eq!(first, 10);
    assert_eq!(
        burst(&p, &mut st, &b, t),
        0,
        "a second stranger finds the pool spent"
    );
}

#[test]
fn an_identified_sender_gets_its_own_budget() {
    let p = policy();
    let mut st = EmbeddedState::default();
    let t = 1_000 * MIN;
    burst(&p, &mut st, &p.class_for(&Identity::Unknown, None), t);
    let good = p.class_for(&Identity::Domain("good.test".into()), None);
    assert_eq!(good.class, "new");
    assert_eq!(burst(&p, &mut st, &good, t), 100);
    let other = p.class_for(&Identity::Domain("other.test".into()), None);
    assert_eq!(burst(&p, &mut st, &other, t), 100, "budgets are per sender");
}

#[test]
fn the_pool_refills_with_time() {
    let p = policy();
    let mut st = EmbeddedState::default();
    let sc = p.class_for(&Identity::Unknown, None);
    let t = 1_000 * MIN;
    burst(&p, &mut st, &sc, t);
    assert_eq!(
        burst(&p, &mut st, &sc, t + MIN / 10),
        1,
        "one message per 6 s"
    );
    assert_eq!(burst(&p, &mut st, &sc, t + 2 * MIN), 10);
}

#[test]
fn deferral_names_class_limit_and_remediation() {
    let p = policy();
    let mut st = EmbeddedState::default();
    let sc = p.class_for(&Identity::Unknown, None);
    let t = 1_000 * MIN;
    burst(&p, &mut st, &sc, t);
    let charges = p.message_charges(&sc);
    let (i, retry) = st.charge(&charges, t).unwrap_err();
    let d = p.deferral(Stage::Mail, &sc, &charges[i], retry);
    assert_eq!((d.code, d.status), (451, (4, 7, 1)));
    assert!(d.text.contains("class default"), "{}", d.text);
    assert!(d.text.contains("10 messages per minute"), "{}", d.text);
    assert!(d.text.contains("https://mx.test/why"), "{}", d.text);
    let c = p.deferral(Stage::Connect, &sc, &charges[i], retry);
    assert_eq!((c.code, c.status), (421, (4, 7, 0)));
}

#[test]
fn a_64_rotation_is_one_range() {
    let p = policy();
    let a = p.range_of(ip("2001:db8:1:2::1"));
    let b = p.range_of(ip("2001:db8:1:2:ffff:1234:5678:9abc"));
    let c = p.range_of(ip("2001:db8:1:3::1"));
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.to_string(), "2001:db8:1:2::/64");
    assert_eq!(p.range_of(ip("192.0.2.7")).to_string(), "192.0.2.7/32");
    assert_eq!(
        p.range_of(ip("::ffff:192.0.2.7")).to_string(),
        "192.0.2.7/32"
    );
}

#[test]
fn per_range_connection_rate_holds_a_rotating_client() {
    let mut p = policy();
    p.admission.per_range_connections_per_minute = 3;
    let mut st = EmbeddedState::default();
    let sc = p.class_for(&Identity::Unknown, None);
    let t = 1_000 * MIN;
    let admitted = (1..=10)
        .filter(|n| {
            let addr = ip(&format!("2001:db8:1:2::{n:x}"));
            st.charge(&p.connect_charges(&sc, p.range_of(addr)), t)
                .is_ok()
        })
        .count();
    assert_eq!(admitted, 3);
}

#[test]
fn charges_are_all_or_nothing() {
    let p = policy();
    let mut st = EmbeddedState::default();
    let sc = p.class_for(&Identity::Unknown, None);
    let t = 1_000 * MIN;
    let mut both = p.message_charges(&sc);
    both.extend(p.data_charges(&sc, 5000));
    assert!(
        st.charge(&both, t).is_ok(),
        "an empty bucket takes a large message"
    );
    assert!(st.charge(&both, t).is_err());
    // The message bucket was not charged by the refused attempt.
    assert_eq!(burst(&p, &mut st, &sc, t), 9);
}

#[test]
fn recipients_per_message_is_a_count() {
    let p = policy();
    let sc = p.class_for(&Identity::Unknown, None);
    assert!(p.recipients_exceeded(&sc, 2).is_none());
    let d = p.recipients_exceeded(&sc, 3).unwrap();
    assert_eq!((d.code, d.status), (452, (4, 5, 3)));
}

#[test]
fn promotion_follows_good_verdicts() {
    let p = policy();
    let mut st = EmbeddedState::default();
    let key = Identity::Domain("good.test".into()).key();
    for n in 0..4 {
        let (_, change) = st.record(&key, Some(Verdict::Ham), true, &p.rules, n);
        assert_eq!(change, None);
    }
    let (rep, change) = st.record(&key, Some(Verdict::Ham), true, &p.rules, 5);
    assert_eq!(change, Some(LevelChange::Promoted { from: 0, to: 1 }));
    assert_eq!(
        p.class_for(&Identity::Domain("good.test".into()), Some(&rep))
            .class,
        "trusted"
    );
}

#[test]
fn demotion_follows_spam() {
    let p = policy();
    let mut st = EmbeddedState::default();
    let key = "domain:bad.test";
    for n in 0..5 {
        st.record(key, Some(Verdict::Ham), true, &p.rules, n);
    }
    assert_eq!(st.reputation(key).unwrap().level, 1);
    st.record(key, Some(Verdict::Spam), true, &p.rules, 10);
    st.record(key, Some(Verdict::Spam), true, &p.rules, 11);
    st.record(key, Some(Verdict::Ham), true, &p.rules, 12);
    let (_, change) = st.record(key, Some(Verdict::Spam), true, &p.rules, 13);
    assert_eq!(change, Some(LevelChange::Demoted { from: 1, to: 0 }));
}

#[test]
fn between_the_thresholds_a_sender_stays_put() {
    let p = policy();
    let mut st = EmbeddedState::default();
    let key = "domain:mixed.test";
    // 20% spam: too much to be promoted (10%), too little to be demoted (50%).
    for n in 0..50 {
        let v = if n % 5 == 0 {
            Verdict::Spam
        } else {
            Verdict::Ham
        };
        let (_, change) = st.record(key, Some(v), true, &p.rules, n);
        assert_eq!(change, None, "message {n}");
    }
}

#[test]
fn messages_without_verdicts_never_move_a_level() {
    let p = policy();
    let mut st = EmbeddedState::default();
    for n in 0..100 {
        let (rep, change) = st.record("domain:quiet.test", None, true, &p.rules, n);
        assert_eq!((rep.level, change), (0, None));
    }
    assert_eq!(st.reputation("domain:quiet.test").unwrap().messages, 100);
}

#[test]
fn operator_reports_count_as_verdicts() {
    let p = policy();
    let mut st = EmbeddedState::default();
    for _ in 0..5 {
        let cmd = StateCommand::Report {
            identity: "Good.Test".into(),
            verdict: "ham".into(),
        };
        st.apply(&cmd, &p.rules, 7).unwrap();
    }
    let rep = st.reputation("domain:good.test").unwrap();
    assert_eq!((rep.level, rep.messages), (1, 0));
    let bad = StateCommand::Report {
        identity: "x".into(),
        verdict: "meh".into(),
    };
    assert!(st.apply(&bad, &p.rules, 7).is_err());
}

#[test]
fn blocklist_entries_cover_their_range_and_expire() {
    let p = policy();
    let mut st = EmbeddedState::default();
    let range: Cidr = "2001:db8:1::/48".parse().unwrap();
    let cmd = StateCommand::Block {
        range,
        secs: 60,
        reason: "flood".into(),
    };
    st.apply(&cmd, &p.rules, 1000).unwrap();
    let inside = ip("2001:db8:1:99::5");
    let hit = st.lookup(inside, p.range_of(inside), 1030).blocked.unwrap();
    assert_eq!((hit.0, hit.1.reason.as_str()), (range, "flood"));
    assert!(
        st.lookup(ip("2001:db8:2::5"), p.range_of(ip("2001:db8:2::5")), 1030)
            .blocked
            .is_none()
    );
    assert!(
        st.lookup(inside, p.range_of(inside), 1061)
            .blocked
            .is_none(),
        "expired"
    );
    st.sweep(1061 * 1_000_000);
    assert!(st.blocklist(1061).is_empty());
}

#[test]
fn known_senders_match_the_most_specific_range() {
    let p = policy();
    let mut st = EmbeddedState::default();
    for (r, n) in [("198.51.100.0/24", "wide"), ("198.51.100.128/25", "narrow")] {
        let cmd = StateCommand::KnownAdd {
            range: r.parse().unwrap(),
            name: n.into(),
        };
        st.apply(&cmd, &p.rules, 0).unwrap();
    }
    let look = |a: &str| st.lookup(ip(a), p.range_of(ip(a)), 0).known;
    assert_eq!(look("198.51.100.200").as_deref(), Some("narrow"));
    assert_eq!(look("198.51.100.1").as_deref(), Some("wide"));
    assert_eq!(look("198.51.101.1"), None);
}

#[test]
fn domain_ranges_are_remembered_per_range() {
    let p = policy();
    let mut st = EmbeddedState::default();
    let a = ip("2001:db8:5:1::10");
    st.remember_range(p.range_of(a), "good.test", 100);
    let other_in_range = ip("2001:db8:5:1::99");
    assert_eq!(
        st.lookup(other_in_range, p.range_of(other_in_range), 200)
            .domains,
        ["good.test"]
    );
    let elsewhere = ip("2001:db8:5:2::1");
    assert!(
        st.lookup(elsewhere, p.range_of(elsewhere), 200)
            .domains
            .is_empty()
    );
}

#[test]
fn allocations_name_holders_and_skip_coarse_ones() {
    let text = "# prefix holder\n2001:db8:100::/40 ExampleNet\n10.0.0.0/8 TooBig\n203.0.113.0/24 Small-ISP\n";
    let a = Allocations::parse(text, 16, 32).unwrap();
    assert_eq!(a.holder(ip("2001:db8:100:5::1")), Some("ExampleNet"));
    assert_eq!(
        a.holder(ip("10.1.2.3")),
        None,
        "a /8 says nothing about a sender"
    );
    assert_eq!(a.holder(ip("203.0.113.9")), Some("Small-ISP"));
    let err = Allocations::parse("2001:db8::/32 A\nnot-a-prefix B\n", 16, 32).unwrap_err();
    assert_eq!(err.line, 2);
}

#[test]
fn concurrency_slots_are_returned_when_dropped() {
    let c = Concurrency::default();
    let a = c.try_acquire("class:default", 2).unwrap();
    let _b = c.try_acquire("class:default", 2).unwrap();
    assert!(c.try_acquire("class:default", 2).is_none());
    drop(a);
    assert!(c.try_acquire("class:default", 2).is_some());
    assert_eq!(c.held("class:default"), 1);
}

#[test]
fn identities_rank_as_the_paper_lists_them() {
    let d = Identity::Domain("a.test".into());
    let k = Identity::Known("k".into());
    assert_eq!(Identity::Unknown.stronger(k.clone()), k);
    assert_eq!(k.clone().stronger(d.clone()), d);
    assert_eq!(d.clone().stronger(k), d);
    assert_eq!(Identity::parse("domain:a.test"), Identity::parse("A.Test."));
}

#[test]
fn snapshot_round_trips() {
    let p = policy();
    let mut st = EmbeddedState::default();
    st.apply(
        &StateCommand::KnownAdd {
            range: "192.0.2.0/24".parse().unwrap(),
            name: "k".into(),
        },
        &p.rules,
        0,
    )
    .unwrap();
    st.record("domain:a.test", Some(Verdict::Ham), true, &p.rules, 5);
    let json = serde_json::to_string(&st).unwrap();
    let back: EmbeddedState = serde_json::from_str(&json).unwrap();
    assert_eq!(back.known(), st.known());
    assert_eq!(
        back.reputation("domain:a.test"),
        st.reputation("domain:a.test")
    );
}

#[test]
fn user_unknown_answers_slow_the_range_for_a_while() {
    let p = policy();
    let mut st = EmbeddedState::default();
    let a = ip("192.0.2.9");
    st.penalize(p.range_of(a), 100);
    st.penalize(p.range_of(a), 110);
    assert_eq!(st.lookup(a, p.range_of(a), 120).unknown_users, 2);
    let later = 110 + UNKNOWN_USER_MEMORY_SECS;
    assert_eq!(st.lookup(a, p.range_of(a), later).unknown_users, 0);
    st.penalize(p.range_of(a), later);
    assert_eq!(
        st.lookup(a, p.range_of(a), later).unknown_users,
        1,
        "counting starts afresh"
    );
}

#[test]
fn an_address_names_the_reputation_of_its_identity_range() {
    let p = policy();
    assert_eq!(p.key_of("127.0.0.1"), "range:127.0.0.1/32");
    assert_eq!(p.key_of("range:127.0.0.1/32"), "range:127.0.0.1/32");
    assert_eq!(p.key_of("2001:db8::7"), "range:2001:db8::/64");
    assert_eq!(p.key_of("2001:db8::7/128"), "range:2001:db8::/64");
    assert_eq!(p.key_of("192.0.2.0/24"), "range:192.0.2.0/24");
    assert_eq!(p.key_of("example.org"), "domain:example.org");
    assert_eq!(p.key_of("known:corp"), "known:corp");
}
