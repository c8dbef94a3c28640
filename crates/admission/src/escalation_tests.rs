//! Escalation across a prefix, and identified ranges at connect: plain
//! logic with the clock passed in.

use crate::*;
use portcullis_config::{Cidr, ClassLimits, Config};

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn rules(after: u32) -> EscalationRules {
    EscalationRules {
        after,
        window_secs: 600,
        ipv6_ceiling: 48,
        ipv4_ceiling: 24,
    }
}

/// The /64 numbered `n` inside 2001:db8:1::/48.
fn slash64(n: u32) -> Cidr {
    cidr(&format!("2001:db8:1:{n:x}::/64"))
}

#[test]
fn ranges_widen_by_eight_bits_up_to_the_ceiling() {
    let r = rules(4);
    assert_eq!(
        r.parent_of(slash64(0x1234)),
        Some(cidr("2001:db8:1:1200::/56"))
    );
    assert_eq!(
        r.parent_of(cidr("2001:db8:1:1200::/56")),
        Some(cidr("2001:db8:1::/48"))
    );
    assert_eq!(r.parent_of(cidr("2001:db8:1::/48")), None, "the ceiling");
    assert_eq!(
        r.parent_of(cidr("192.0.2.7/32")),
        Some(cidr("192.0.2.0/24"))
    );
    assert_eq!(r.parent_of(cidr("192.0.2.0/24")), None);
}

#[test]
fn k_distinct_children_within_the_window_block_their_parent() {
    let mut e = Escalation::default();
    let r = rules(4);
    for n in 0..3 {
        assert_eq!(e.record(&r, slash64(n), 100 + u64::from(n)), None);
    }
    let up = e.record(&r, slash64(3), 110).expect("the fourth child");
    assert_eq!(up.parent, cidr("2001:db8:1::/56"));
    assert_eq!(up.children, 4);
    assert!(
        up.reason.contains("4 ranges inside 2001:db8:1::/56"),
        "{}",
        up.reason
    );
}

#[test]
fn the_same_child_counts_once() {
    let mut e = Escalation::default();
    let r = rules(3);
    for t in 0..10 {
        assert_eq!(e.record(&r, slash64(7), 100 + t), None);
    }
}

#[test]
fn children_older_than_the_window_are_forgotten() {
    let mut e = Escalation::default();
    let r = rules(3);
    e.record(&r, slash64(1), 100);
    e.record(&r, slash64(2), 100);
    assert_eq!(
        e.record(&r, slash64(3), 100 + 600),
        None,
        "the first two are stale"
    );
    assert_eq!(e.record(&r, slash64(4), 700), None);
    assert!(
        e.record(&r, slash64(5), 700).is_some(),
        "three fresh children"
    );
}

#[test]
fn a_blocked_slash_56_counts_toward_its_slash_48() {
    let mut e = Escalation::default();
    let r = rules(2);
    let mut blocked = Vec::new();
    for n in [0x000, 0x001, 0x100, 0x101] {
        if let Some(up) = e.record(&r, slash64(n), 100) {
            blocked.push(up.parent);
            if let Some(up) = e.record(&r, up.parent, 100) {
                blocked.push(up.parent);
            }
        }
    }
    assert_eq!(
        blocked,
        vec![
            cidr("2001:db8:1::/56"),
            cidr("2001:db8:1:100::/56"),
            cidr("2001:db8:1::/48")
        ]
    );
}

#[test]
fn an_exempt_parent_counts_nothing_for_a_window() {
    let mut e = Escalation::default();
    let r = rules(2);
    e.record(&r, slash64(1), 100);
    let up = e.record(&r, slash64(2), 100).expect("two children");
    e.exempt(&r, up.parent, 100);
    for n in 3..50 {
        assert_eq!(e.record(&r, slash64(n), 200), None, "quiet");
    }
    e.record(&r, slash64(60), 700);
    assert!(
        e.record(&r, slash64(61), 700).is_some(),
        "the window passed: decided (and looked up) again"
    );
}

#[test]
fn exemptions_are_found_around_and_inside_the_prefix() {
    let rules = portcullis_config::ReputationRules::default();
    let now = 1_000_000;
    let p = cidr("2001:db8:1::/56");
    let mut st = EmbeddedState::default();
    assert_eq!(st.exemption_within(&p, now), None);
    st.remember_authenticated(cidr("2001:db8:1:7::/64"), now);
    assert_eq!(st.exemption_within(&p, now), Some(Exemption::Authenticated));
    assert_eq!(
        st.exemption_within(&p, now + AUTHENTICATED_RANGE_TTL_SECS),
        None,
        "a login is remembered for a while, not for ever"
    );
    st.remember_range(cidr("2001:db8:1:8::/64"), "example.org", now);
    assert_eq!(st.exemption_within(&p, now), Some(Exemption::Domain));
    let known = StateCommand::KnownAdd {
        range: cidr("2001:db8::/32"),
        name: "isp".into(),
    };
    st.apply(&known, &rules, now).unwrap();
    assert_eq!(
        st.exemption_within(&p, now),
        Some(Exemption::Known),
        "a known range around the prefix counts too"
    );
    assert_eq!(
        st.exemption_within(&cidr("2001:db9::/48"), now),
        None,
        "elsewhere"
    );
}

#[test]
fn escalation_is_off_when_after_is_zero() {
    let mut e = Escalation::default();
    for n in 0..100 {
        assert_eq!(e.record(&rules(0), slash64(n), 100), None);
    }
    assert!(e.is_empty());
}

fn policy() -> Policy {
    let mut c = Config::embedded_default("/tmp/x".into(), "mx.test".into());
    let limits = |conns, cpm| ClassLimits {
        max_connections: Some(conns),
        connections_per_minute: Some(cpm),
        ..ClassLimits::default()
    };
    c.classes.insert("default".into(), limits(10, 60));
    c.classes.insert("new".into(), limits(5, 100));
    c.classes.insert("trusted".into(), limits(20, 1000));
    c.admission.per_range_connections_per_minute = 3;
    Policy::from_config(&c)
}

#[test]
fn an_identified_range_is_not_held_to_the_strangers_per_range_rate() {
    let p = policy();
    let range = cidr("2001:db8:ffff::/64");
    let stranger = p.class_for(&Identity::Unknown, None);
    let known = p.class_for(&Identity::Known("partner".into()), None);
    let limits = |sc: &SenderClass| -> Vec<&'static str> {
        let charges = p.connect_charges(sc, range);
        charges
            .iter()
            .map(|c| if c.class == "range" { "range" } else { "class" })
            .collect()
    };
    assert_eq!(limits(&stranger), ["range", "class"]);
    assert_eq!(limits(&known), ["class"], "its class's rate alone");
}

#[test]
fn a_range_shared_by_domains_gets_the_sum_of_their_connect_limits() {
    let p = policy();
    let range = cidr("198.51.100.0/24");
    let a = p.class_for(&Identity::Domain("a.test".into()), None);
    let mut b = p.class_for(&Identity::Domain("b.test".into()), None);
    b.class = "trusted".into();
    b.limits = p.classes["trusted"].clone();
    let shared = p.shared_range_class(range, &[a.clone(), b]).unwrap();
    assert_eq!(shared.limits.max_connections, Some(25));
    assert_eq!(shared.limits.connections_per_minute, Some(1100));
    assert_eq!(
        shared.budget(),
        "range:198.51.100.0/24",
        "one budget for the range"
    );
    assert_eq!(
        p.shared_range_class(range, std::slice::from_ref(&a)),
        Some(a),
        "one domain: its own class"
    );
}

#[test]
fn one_unlimited_domain_makes_a_shared_range_unlimited() {
    let p = policy();
    let range = cidr("198.51.100.0/24");
    let a = p.class_for(&Identity::Domain("a.test".into()), None);
    let mut b = a.clone();
    b.limits.connections_per_minute = Some(0);
    let shared = p.shared_range_class(range, &[a, b]).unwrap();
    assert_eq!(shared.limits.connections_per_minute, None);
    assert!(p.connect_charges(&shared, range).is_empty());
}
