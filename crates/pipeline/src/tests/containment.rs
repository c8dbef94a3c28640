//! Containment on the way in (issue 29): what a submission session
//! records, the 451 4.7.1 a held account gets, and its messages queued
//! held, never refused or dropped.

use super::*;
use portcullis_smtp::Status;

/// local.test checks its recipients; alice@local.test may submit.
fn world_checking_recipients() -> World {
    let mut c = config();
    c.recipient_policy.clear();
    c.containment.unknown_recipients_per_hour = 3;
    c.containment.spam_traps = vec!["@trap.test".into()];
    c.containment.remediation_url = "https://help.test/held".into();
    let w = world_with(c, TableChecks::default(), MemoryIntake::default());
    w.account("alice@local.test");
    w
}

const ALICE: Option<&str> = Some("alice@local.test");

#[tokio::test]
async fn unknown_local_recipients_hold_the_account_and_its_message_is_queued_held() {
    let w = world_checking_recipients();
    let mut c = w.submission();
    let mut txn = open(&mut c, ALICE, ALICE).await.expect("MAIL");
    add(&mut c, &mut txn, "friend@far.test")
        .await
        .expect("RCPT");
    for n in 0..3 {
        let r = add(&mut c, &mut txn, &format!("nobody{n}@local.test")).await;
        assert_eq!(r.unwrap_err().status, Some(Status(5, 1, 1)));
    }
    let r = add(&mut c, &mut txn, "other@far.test").await.unwrap_err();
    assert_eq!((r.code, r.status), (451, Some(Status(4, 7, 1))), "{r}");
    txn.body = BODY
        .replace("a@sender.test", "alice@local.test")
        .replace('\n', "\r\n")
        .into_bytes();
    let r = reply(c.data(txn).await);
    assert_eq!(r.code, 250, "queued, never refused: {r}");
    let (env, _) = &w.queued()[0];
    assert!(w.intake.held.lock().unwrap().contains_key(&env.id), "held");
    // A new transaction, on this connection or another, waits too.
    let r = open(&mut w.submission(), ALICE, ALICE).await.unwrap_err();
    assert_eq!((r.code, r.status), (451, Some(Status(4, 7, 1))));
    let text = r.to_string();
    assert!(text.contains("do not exist"), "{text}");
    assert!(text.contains("https://help.test/held"), "{text}");
}

#[tokio::test]
async fn a_release_lets_the_held_mail_go_and_the_account_send_again() {
    let w = world_checking_recipients();
    let mut c = w.submission();
    let mut txn = open(&mut c, ALICE, ALICE).await.expect("MAIL");
    add(&mut c, &mut txn, "friend@far.test")
        .await
        .expect("RCPT");
    let now = portcullis_config::clock::now_secs();
    w.inbound
        .containment
        .hold("alice@local.test", now)
        .await
        .expect("held");
    txn.body = "From: <alice@local.test>\r\n\r\nhi\r\n".into();
    assert_eq!(reply(c.data(txn).await).code, 250);
    assert_eq!(w.intake.held.lock().unwrap().len(), 1);
    let released = w
        .inbound
        .containment
        .release("alice@local.test")
        .await
        .expect("released");
    assert_eq!(released.len(), 1);
    assert!(w.intake.held.lock().unwrap().is_empty());
    assert!(open(&mut w.submission(), ALICE, ALICE).await.is_ok());
}

#[tokio::test]
async fn a_spam_trap_recipient_holds_the_account_at_once() {
    let w = world_checking_recipients();
    let mut c = w.submission();
    let mut txn = open(&mut c, ALICE, ALICE).await.expect("MAIL");
    add(&mut c, &mut txn, "bait@trap.test")
        .await
        .expect("accepted, silently");
    let r = add(&mut c, &mut txn, "friend@far.test").await.unwrap_err();
    assert_eq!(r.code, 451);
    let contained = w
        .inbound
        .containment
        .contained(portcullis_config::clock::now_secs())
        .await;
    assert_eq!(contained[0].0, "alice@local.test");
    assert_eq!(
        contained[0].1.reason(),
        Some(portcullis_containment::Signal::SpamTraps)
    );
}

#[tokio::test]
async fn containment_switched_off_records_and_refuses_nothing() {
    let mut cfg = config();
    cfg.recipient_policy.clear();
    cfg.containment.enabled = false;
    cfg.containment.unknown_recipients_per_hour = 1;
    let w = world_with(cfg, TableChecks::default(), MemoryIntake::default());
    w.account("alice@local.test");
    let mut c = w.submission();
    let mut txn = open(&mut c, ALICE, ALICE).await.expect("MAIL");
    for n in 0..5 {
        let _ = add(&mut c, &mut txn, &format!("nobody{n}@local.test")).await;
    }
    add(&mut c, &mut txn, "friend@far.test")
        .await
        .expect("never deferred");
}

/// alice@local.test submits one message to `to`: its queue id.
async fn alice_sends(w: &World, to: &str) -> String {
    let mut c = w.submission();
    let mut txn = open(&mut c, ALICE, ALICE).await.expect("MAIL");
    add(&mut c, &mut txn, to).await.expect("RCPT");
    txn.body = "From: <alice@local.test>\r\n\r\nhello\r\n".into();
    c.data(txn).await.expect("queued")
}

#[tokio::test]
async fn a_feedback_report_about_a_submitted_message_counts_against_its_account() {
    use portcullis_reportbox::ComplaintSink as _;
    let mut cfg = config();
    cfg.containment.complaints_per_day = 1;
    let w = world_with(cfg, TableChecks::default(), MemoryIntake::default());
    w.account("alice@local.test");
    let id = alice_sends(&w, "victim@far.test").await;
    let counter = crate::containment::ComplaintCounter::default();
    counter.connect(
        w.inbound.containment.clone(),
        w.inbound.submission.log.clone(),
        portcullis_config::LiveConfig::new((*w.config).clone()),
    );
    let arf = portcullis_reportbox::ArfSummary {
        feedback_type: "abuse".into(),
        queue_ids: vec!["elsewhere-1".into(), id.clone()],
        ..Default::default()
    };
    counter.complaint("report-1", &arf);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let now = portcullis_config::clock::now_secs;
    while w.inbound.containment.contained(now()).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the complaint never counted"
        );
        tokio::task::yield_now().await;
    }
    let contained = w.inbound.containment.contained(now()).await;
    assert_eq!(contained[0].0, "alice@local.test");
    assert_eq!(
        contained[0].1.reason(),
        Some(portcullis_containment::Signal::Complaints)
    );
}

#[tokio::test]
async fn a_dsn_returned_over_port_25_counts_its_failed_recipients_against_the_account() {
    use portcullis_containment::Counter;
    let w = world(TableChecks::default());
    w.account("alice@local.test");
    let id = alice_sends(&w, "nobody@far.test").await;
    let dsn = include_str!("../../../reportbox/testdata/dsn-postfix.eml")
        .replace("0001796320799000042", &id)
        .replace("alice@example.test", "alice@local.test");
    let r = send(&mut w.mx().await, None, &["alice@local.test"], &dsn).await;
    assert_eq!(r.code, 250, "delivered like any message: {r}");
    let (env, _) = w.queued().pop().unwrap();
    assert_eq!(env.recipients[0].address, "alice@local.test");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let rules = &w.config.containment;
    loop {
        let now = portcullis_config::clock::now_secs();
        let view = w
            .inbound
            .containment
            .show(rules, "alice@local.test", now)
            .await;
        if view.tally.sum(Counter::UnknownRemote) == 1 {
            assert_eq!(view.tally.sum(Counter::Bounced), 1);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the DSN never counted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
