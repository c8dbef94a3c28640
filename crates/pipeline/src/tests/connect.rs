//! The connect stage.

use super::*;
use portcullis_admission::StateCommand;
use portcullis_smtp::Status;

#[tokio::test]
async fn a_blocked_range_is_refused_before_any_session_exists() {
    let w = world(TableChecks::default());
    let block = StateCommand::Block {
        range: "192.0.2.0/24".parse().unwrap(),
        secs: 600,
        reason: "spam run".into(),
    };
    w.inbound.admission.state.apply(&block).await.unwrap();
    let r = w
        .inbound
        .admit(ListenerRole::Mx, "192.0.2.10".parse().unwrap())
        .await;
    let Err(r) = r else { panic!("admitted") };
    assert_eq!(r.cause, crate::RefusalCause::Blocklist);
    let r = r.reply;
    assert_eq!((r.code, r.status), (421, Some(Status(4, 7, 0))));
    assert!(r.lines[0].contains("spam run"), "{r}");
}

#[tokio::test]
async fn submission_ports_have_no_class_of_service_at_connect() {
    let w = world(TableChecks::default());
    let gate = w
        .inbound
        .admit(ListenerRole::Submission, "192.0.2.10".parse().unwrap())
        .await;
    assert!(matches!(gate, Ok(None)));
}

#[tokio::test]
async fn the_default_pool_refuses_connections_past_its_limit() {
    let mut c = config();
    c.classes.get_mut("default").unwrap().max_connections = Some(2);
    let w = world_with(c, TableChecks::default(), MemoryIntake::default());
    let a = w.mx_from("192.0.2.1:1").await;
    let b = w.mx_from("198.51.100.1:1").await;
    // A third stranger, from anywhere, shares the same pool.
    let third = w
        .inbound
        .admit(ListenerRole::Mx, "203.0.113.1".parse().unwrap())
        .await;
    assert!(
        matches!(&third, Err(r) if r.reply.code == 421 && r.cause == crate::RefusalCause::Class),
        "the pool is full"
    );
    drop((a, b));
    let again = w
        .inbound
        .admit(ListenerRole::Mx, "203.0.113.1".parse().unwrap())
        .await;
    assert!(again.is_ok(), "the slots came back with the connections");
}

#[tokio::test]
async fn an_address_on_a_reject_list_is_refused_with_the_lists_name() {
    let mut c = config();
    c.dns_lists = vec![portcullis_config::DnsList {
        zone: "bl.test".into(),
        name: Some("Test BL".into()),
        kind: Default::default(),
        action: Default::default(),
        dynamic: false,
        min_rating: None,
    }];
    let checks = TableChecks {
        listed: ["10.2.0.192.bl.test".to_owned()].into(),
        ..Default::default()
    };
    let w = world_with(c, checks, MemoryIntake::default());
    let r = w.mx().await.connect().await.expect_err("listed");
    assert_eq!((r.code, r.status), (554, Some(Status(5, 7, 1))));
    assert!(r.lines[0].contains("Test BL"), "{r}");
}

#[tokio::test]
async fn reverse_dns_is_required_only_when_configured() {
    let unconfirmed = || TableChecks {
        iprev: Some((AuthResult::Fail, None)),
        ..Default::default()
    };
    let w = world(unconfirmed());
    assert_eq!(
        w.mx().await.connect().await,
        Ok(None),
        "not required by default"
    );
    let mut c = config();
    c.reverse_dns.require_confirmed = true;
    let w = world_with(c.clone(), unconfirmed(), MemoryIntake::default());
    let r = w.mx().await.connect().await.expect_err("refused");
    assert_eq!((r.code, r.status), (550, Some(Status(5, 7, 25))));
    let dns_down = TableChecks {
        iprev: Some((AuthResult::TempError, None)),
        ..Default::default()
    };
    let w = world_with(c, dns_down, MemoryIntake::default());
    let r = w.mx().await.connect().await.expect_err("deferred");
    assert_eq!((r.code, r.status), (450, Some(Status(4, 7, 25))));
}

#[tokio::test]
async fn the_confirmed_name_goes_to_received() {
    let w = world(TableChecks::default());
    assert_eq!(
        w.mx().await.connect().await,
        Ok(Some("client.test".to_owned()))
    );
}

async fn admit(w: &World, ip: &str) -> Result<(), crate::Refusal> {
    w.inbound
        .admit(ListenerRole::Mx, ip.parse().unwrap())
        .await
        .map(drop)
}

#[tokio::test]
async fn a_stranger_meets_the_per_range_rate_an_identified_range_does_not() {
    let mut c = config();
    c.admission.per_range_connections_per_minute = 1;
    let w = world_with(c, TableChecks::default(), MemoryIntake::default());
    admit(&w, "192.0.2.1").await.expect("the first");
    let second = admit(&w, "192.0.2.1").await.expect_err("the range's rate");
    assert_eq!(second.cause, crate::RefusalCause::Range);
    let known = StateCommand::KnownAdd {
        range: "198.51.100.0/24".parse().unwrap(),
        name: "partner".into(),
    };
    w.inbound.admission.state.apply(&known).await.unwrap();
    for _ in 0..5 {
        admit(&w, "198.51.100.7")
            .await
            .expect("a known sender is served by its class");
    }
}

#[tokio::test]
async fn strangers_exhausting_the_pool_escalate_to_the_wider_prefix() {
    let mut c = config();
    let pool = c.classes.get_mut("default").unwrap();
    pool.connections_per_minute = Some(1);
    c.admission.escalate_after = 3;
    let w = world_with(c, TableChecks::default(), MemoryIntake::default());
    admit(&w, "2001:db8:1:1::1")
        .await
        .expect("the pool's one connection");
    for n in 2..=4 {
        let r = admit(&w, &format!("2001:db8:1:{n}::1"))
            .await
            .expect_err("pool spent");
        assert_eq!(r.cause, crate::RefusalCause::Class);
    }
    let blocked = w.inbound.admission.state.blocklist().await;
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    assert_eq!(blocked[0].0.to_string(), "2001:db8:1::/56");
    assert!(
        blocked[0].1.reason.starts_with("escalated: 3 ranges"),
        "{}",
        blocked[0].1.reason
    );
    let next = admit(&w, "2001:db8:1:99::1")
        .await
        .expect_err("inside the /56");
    assert_eq!(next.cause, crate::RefusalCause::Blocklist);
}

/// A world where two strangers' ranges inside one /56 finding the
/// default pool spent escalate to the /56.
fn escalating(c: Option<portcullis_config::Config>) -> World {
    let mut c = c.unwrap_or_else(config);
    c.classes.get_mut("default").unwrap().connections_per_minute = Some(1);
    c.admission.escalate_after = 2;
    world_with(c, TableChecks::default(), MemoryIntake::default())
}

/// Strangers from several /64s of 2001:db8:1::/56 meet a spent pool;
/// whether the /56 ended up blocked, and what the decisions were.
async fn flood_2001_db8_1(w: &World) -> (bool, Vec<(String, &'static str)>) {
    admit(w, "2001:db8:1:1::1").await.unwrap();
    for n in 2..=5 {
        let _ = admit(w, &format!("2001:db8:1:{n}::1")).await;
    }
    let blocked = !w.inbound.admission.state.blocklist().await.is_empty();
    let decisions = w
        .inbound
        .metrics
        .escalations()
        .into_iter()
        .map(|d| (d.prefix, d.result))
        .collect();
    (blocked, decisions)
}

fn exempt(why: &'static str) -> (bool, Vec<(String, &'static str)>) {
    (false, vec![("2001:db8:1::/56".to_owned(), why)])
}

#[tokio::test]
async fn escalation_is_counted_and_shown_when_it_blocks() {
    let w = escalating(None);
    assert_eq!(
        flood_2001_db8_1(&w).await,
        (true, vec![("2001:db8:1::/56".to_owned(), "blocked")])
    );
    let text = w.inbound.metrics.render(&[]);
    assert!(
        text.contains("portcullis_escalations_total{prefix=\"56\",result=\"blocked\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn escalation_never_blocks_a_prefix_holding_a_known_sender() {
    let w = escalating(None);
    let known = StateCommand::KnownAdd {
        range: "2001:db8:1:ff::/64".parse().unwrap(),
        name: "partner".into(),
    };
    w.inbound.admission.state.apply(&known).await.unwrap();
    assert_eq!(flood_2001_db8_1(&w).await, exempt("exempt_known"));
}

#[tokio::test]
async fn escalation_never_blocks_a_prefix_holding_an_allocation() {
    let mut c = config();
    let path = c.data_dir.join("allocations.txt");
    std::fs::write(&path, "2001:db8:1:f0::/60 small-isp\n").unwrap();
    c.identity.allocations = Some(path);
    let w = escalating(Some(c));
    assert_eq!(flood_2001_db8_1(&w).await, exempt("exempt_allocation"));
}

#[tokio::test]
async fn escalation_never_blocks_a_prefix_holding_a_domain_range() {
    let w = escalating(None);
    w.inbound
        .admission
        .state
        .remember_range("2001:db8:1:ff::/64".parse().unwrap(), "example.org")
        .await;
    assert_eq!(flood_2001_db8_1(&w).await, exempt("exempt_domain"));
}

#[tokio::test]
async fn escalation_never_blocks_a_prefix_where_a_user_logged_in() {
    let w = escalating(None);
    w.account("alice@local.test");
    let mut msa = w.submission_from("[2001:db8:1:ff::9]:40000");
    let login = portcullis_smtp::Credentials {
        username: "alice@local.test".into(),
        password: "a long password".into(),
        mechanism: "PLAIN",
    };
    let outcome = msa.authenticate(login).await;
    assert!(outcome.is_ok(), "logged in");
    assert_eq!(flood_2001_db8_1(&w).await, exempt("exempt_authenticated"));
}

#[tokio::test]
async fn a_failed_login_exempts_nothing() {
    let w = escalating(None);
    w.account("alice@local.test");
    let mut msa = w.submission_from("[2001:db8:1:ff::9]:40000");
    let login = portcullis_smtp::Credentials {
        username: "alice@local.test".into(),
        password: "a guess".into(),
        mechanism: "PLAIN",
    };
    let _ = msa.authenticate(login).await;
    assert!(flood_2001_db8_1(&w).await.0, "blocked");
}

#[tokio::test]
async fn a_stranger_reconnecting_at_once_after_refusals_is_blocked_briefly() {
    let mut c = config();
    c.classes.get_mut("default").unwrap().connections_per_minute = Some(1);
    c.admission.repeat_refusals = 3;
    c.admission.repeat_block_secs = 30;
    let w = world_with(c, TableChecks::default(), MemoryIntake::default());
    admit(&w, "2001:db8:7:7::1")
        .await
        .expect("the pool's one connection");
    for _ in 0..3 {
        let r = admit(&w, "2001:db8:7:7::2").await.expect_err("pool spent");
        assert_eq!(r.cause, crate::RefusalCause::Class);
    }
    let blocked = w.inbound.admission.state.blocklist().await;
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    assert_eq!(blocked[0].0.to_string(), "2001:db8:7:7::/64");
    let left = blocked[0].1.until - portcullis_config::clock::now_secs();
    assert!((29..=30).contains(&left), "{left}");
    let ip = "2001:db8:7:7::9".parse().unwrap();
    let at_once = w
        .inbound
        .admission
        .refuse_listed(ip)
        .expect("refused from memory");
    assert_eq!(at_once.cause, crate::RefusalCause::Blocklist);
}

#[tokio::test]
async fn strangers_refused_once_each_are_not_repeat_offenders() {
    let mut c = config();
    c.classes.get_mut("default").unwrap().connections_per_minute = Some(1);
    c.admission.repeat_refusals = 3;
    let w = world_with(c, TableChecks::default(), MemoryIntake::default());
    admit(&w, "2001:db8:7:7::1")
        .await
        .expect("the pool's one connection");
    for n in 1..=5 {
        let _ = admit(&w, &format!("2001:db8:7:{n}0::1")).await;
    }
    assert!(w.inbound.admission.state.blocklist().await.is_empty());
}
