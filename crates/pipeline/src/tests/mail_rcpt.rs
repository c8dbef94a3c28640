//! MAIL FROM and RCPT TO.

use super::*;
use portcullis_smtp::Status;

fn refused<T>(r: StageResult<T>) -> portcullis_smtp::Reply {
    match r {
        Err(r) => r,
        Ok(_) => panic!("accepted"),
    }
}

/// A port-25 transaction from `from`, its MAIL FROM accepted.
async fn opened(conn: &mut Connection, from: &str) -> crate::Transaction {
    open(conn, None, Some(from)).await.expect("MAIL FROM")
}

#[tokio::test]
async fn our_own_domains_are_submitted_on_587_not_on_25() {
    let w = world(TableChecks::default());
    let r = refused(open(&mut w.mx().await, None, Some("alice@local.test")).await);
    assert_eq!((r.code, r.status), (553, Some(Status(5, 7, 1))));
}

#[tokio::test]
async fn the_message_budget_of_the_default_pool_defers_the_next_message() {
    let mut c = config();
    c.classes.get_mut("default").unwrap().messages_per_minute = Some(1);
    let w = world_with(c, TableChecks::default(), MemoryIntake::default());
    let mut conn = w.mx().await;
    assert!(open(&mut conn, None, Some("a@stranger.test")).await.is_ok());
    let r = refused(open(&mut conn, None, Some("b@stranger.test")).await);
    assert_eq!(r.code, 451, "{r}");
    assert!(r.lines[0].contains("class default"), "{r}");
}

#[tokio::test]
async fn an_spf_pass_draws_on_the_domains_own_class_not_the_pool() {
    let mut c = config();
    c.classes.get_mut("default").unwrap().messages_per_minute = Some(1);
    let checks = TableChecks {
        spf: [("good.test".to_owned(), AuthResult::Pass)].into(),
        ..Default::default()
    };
    let w = world_with(c, checks, MemoryIntake::default());
    let mut conn = w.mx().await;
    for _ in 0..5 {
        assert!(open(&mut conn, None, Some("a@good.test")).await.is_ok());
    }
}

#[tokio::test]
async fn the_accepted_sender_carries_its_spf_result_and_list_lines_to_the_end_of_data() {
    let mut c = config();
    c.dns_lists = vec![labelling_domain_list()];
    let checks = TableChecks {
        spf: [("listed.test".to_owned(), AuthResult::Pass)].into(),
        listed: ["listed.test.dbl.test".to_owned()].into(),
        ..Default::default()
    };
    let w = world_with(c, checks, MemoryIntake::default());
    let found = w
        .mx()
        .await
        .mail(
            None,
            "h",
            Some(&mailbox("a@listed.test")),
            &Default::default(),
            None,
        )
        .await
        .expect("accepted");
    assert_eq!(
        found.spf.as_ref().map(|s| s.result()),
        Some(AuthResult::Pass)
    );
    assert_eq!(
        found.sender_labels.header_lines,
        ["X-DNSBL: dbl.test listed listed.test\r\n"]
    );
}

#[tokio::test]
async fn a_remote_recipient_on_port_25_is_never_relayed() {
    let w = world(TableChecks::default());
    let mut conn = w.mx().await;
    let mut txn = opened(&mut conn, "a@remote.test").await;
    let r = refused(add(&mut conn, &mut txn, "x@elsewhere.test").await);
    assert_eq!((r.code, r.status), (554, Some(Status(5, 7, 1))));
}

#[tokio::test]
async fn user_unknown_slows_every_later_reply_and_the_next_greeting() {
    let mut c = config();
    c.limits.tarpit_step_ms = 100;
    c.recipient_policy.clear();
    let w = world_with(c, TableChecks::default(), MemoryIntake::default());
    let mut conn = w.mx().await;
    assert!(conn.reply_delay().is_zero());
    let mut txn = opened(&mut conn, "a@remote.test").await;
    for (i, who) in ["nobody", "noone"].iter().enumerate() {
        let r = refused(add(&mut conn, &mut txn, &format!("{who}@local.test")).await);
        assert_eq!(r.status, Some(Status(5, 1, 1)));
        assert_eq!(conn.reply_delay().as_millis(), 100 * (i as u128 + 1));
    }
    let next = w.mx().await;
    assert_eq!(
        next.greeting_delay().as_millis(),
        200,
        "the range is remembered"
    );
}

#[tokio::test]
async fn postmaster_and_abuse_exist_in_every_local_domain() {
    let w = world(TableChecks::default());
    let mut conn = w.mx().await;
    let mut txn = opened(&mut conn, "a@remote.test").await;
    for role in [
        "postmaster@local.test",
        "abuse@local.test",
        "postmaster@mx.test",
    ] {
        assert!(add(&mut conn, &mut txn, role).await.is_ok(), "{role}");
    }
}

#[tokio::test]
async fn an_account_may_only_send_as_addresses_it_owns() {
    let w = world(TableChecks::default());
    w.account("alice@local.test");
    let mut conn = w.submission();
    let me = Some("alice@local.test");
    assert!(open(&mut conn, me, Some("alice@local.test")).await.is_ok());
    let r = refused(open(&mut conn, me, Some("bob@local.test")).await);
    assert_eq!((r.code, r.status), (553, Some(Status(5, 7, 1))));
}

#[tokio::test]
async fn submitted_recipients_are_counted_against_the_hourly_quota() {
    let mut c = config();
    c.submission.recipients_per_hour = 2;
    let w = world_with(c, TableChecks::default(), MemoryIntake::default());
    w.account("alice@local.test");
    let mut conn = w.submission();
    let me = Some("alice@local.test");
    let mut txn = open(&mut conn, me, me).await.expect("MAIL FROM");
    assert!(add(&mut conn, &mut txn, "x@far.test").await.is_ok());
    assert!(add(&mut conn, &mut txn, "y@far.test").await.is_ok());
    let r = refused(add(&mut conn, &mut txn, "z@far.test").await);
    assert_eq!((r.code, r.status), (451, Some(Status(4, 7, 1))));
    assert!(r.lines[0].contains("Recipient quota of 2 per hour"), "{r}");
}

#[tokio::test]
async fn a_strangers_first_recipient_is_greylisted_by_range_sender_domain_and_recipient() {
    let mut c = config();
    c.greylist.enabled = true;
    c.greylist.delay_secs = 0;
    let w = world_with(c, TableChecks::default(), MemoryIntake::default());
    let mut conn = w.mx().await;
    let mut txn = opened(&mut conn, "a@stranger.test").await;
    let r = refused(add(&mut conn, &mut txn, "u@local.test").await);
    assert_eq!((r.code, r.status), (451, Some(Status(4, 7, 1))));
    assert!(
        r.lines[0].starts_with("Greylisted: the first message from 192.0.2.0/24"),
        "{r}"
    );
    // Another sender of the same domain, from another address of the /24:
    // the same triplet, now past its (zero) delay.
    let mut again = w.mx_from("192.0.2.99:1").await;
    let mut txn = opened(&mut again, "b@stranger.test").await;
    assert!(add(&mut again, &mut txn, "u@local.test").await.is_ok());
}

#[tokio::test]
async fn the_report_mailbox_is_accepted_on_port_25_though_no_user_has_it() {
    let mut c = config();
    c.recipient_policy.clear();
    c.dmarc.report_mailbox = Some("dmarc-reports@local.test".into());
    let w = world_with(c, TableChecks::default(), MemoryIntake::default());
    let mut conn = w.mx().await;
    let mut txn = opened(&mut conn, "a@remote.test").await;
    assert!(
        add(&mut conn, &mut txn, "dmarc-reports@local.test")
            .await
            .is_ok()
    );
    let r = refused(add(&mut conn, &mut txn, "other@local.test").await);
    assert_eq!(r.status, Some(Status(5, 1, 1)));
}

#[tokio::test]
async fn a_suppressed_remote_address_is_refused_at_rcpt_saying_when_and_why() {
    let w = world(TableChecks::default());
    w.account("alice@local.test");
    let now = portcullis_config::clock::now_secs();
    w.inbound
        .admission
        .state
        .suppress(portcullis_shaping::Suppression {
            address: "gone@far.test".into(),
            since: now,
            until: now + 86_400,
            reply: "550 5.1.1 <gone@far.test>: Recipient address rejected".into(),
            class: portcullis_shaping::ReplyClass::MailboxUnknown,
            queue_id: "Q1".into(),
        })
        .await;
    let mut msa = w.submission();
    let mut txn = open(&mut msa, Some("alice@local.test"), Some("alice@local.test"))
        .await
        .expect("MAIL FROM");
    let r = refused(add(&mut msa, &mut txn, "Gone@far.test").await);
    assert_eq!((r.code, r.status), (550, Some(Status(5, 1, 1))));
    assert!(r.lines[0].contains("is suppressed: it bounced on "), "{r}");
    assert!(r.lines[0].contains("550 5.1.1 <gone@far.test>"), "{r}");
    assert!(add(&mut msa, &mut txn, "other@far.test").await.is_ok());
}
