//! MAIL FROM and RCPT TO.

use super::*;
use portcullis_smtp::{Status, Verdict};

fn refused(v: Verdict) -> portcullis_smtp::Reply {
    match v {
        Verdict::Reject(r) => r,
        Verdict::Accept => panic!("accepted"),
    }
}

#[tokio::test]
async fn our_own_domains_are_submitted_on_587_not_on_25() {
    let w = world(TableChecks::default());
    let v = w
        .mx()
        .await
        .mail(None, "h", Some(&mailbox("alice@local.test")))
        .await;
    let r = refused(v);
    assert_eq!((r.code, r.status), (553, Some(Status(5, 7, 1))));
}

#[tokio::test]
async fn the_message_budget_of_the_default_pool_defers_the_next_message() {
    let mut c = config();
    c.classes.get_mut("default").unwrap().messages_per_minute = Some(1);
    let w = world_with(c, TableChecks::default(), MemoryIntake::default());
    let mut conn = w.mx().await;
    assert_eq!(
        conn.mail(None, "h", Some(&mailbox("a@stranger.test")))
            .await,
        Verdict::Accept
    );
    let r = refused(
        conn.mail(None, "h", Some(&mailbox("b@stranger.test")))
            .await,
    );
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
        assert_eq!(
            conn.mail(None, "h", Some(&mailbox("a@good.test"))).await,
            Verdict::Accept
        );
    }
}

#[tokio::test]
async fn a_remote_recipient_on_port_25_is_never_relayed() {
    let w = world(TableChecks::default());
    let mut conn = w.mx().await;
    let _ = conn.mail(None, "h", Some(&mailbox("a@remote.test"))).await;
    let r = refused(conn.rcpt(None, &mailbox("x@elsewhere.test"), 0).await);
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
    let _ = conn.mail(None, "h", Some(&mailbox("a@remote.test"))).await;
    for (i, who) in ["nobody", "noone"].iter().enumerate() {
        let r = refused(
            conn.rcpt(None, &mailbox(&format!("{who}@local.test")), 0)
                .await,
        );
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
    let _ = conn.mail(None, "h", Some(&mailbox("a@remote.test"))).await;
    for role in [
        "postmaster@local.test",
        "abuse@local.test",
        "postmaster@mx.test",
    ] {
        assert_eq!(
            conn.rcpt(None, &mailbox(role), 0).await,
            Verdict::Accept,
            "{role}"
        );
    }
}

#[tokio::test]
async fn an_account_may_only_send_as_addresses_it_owns() {
    let w = world(TableChecks::default());
    w.account("alice@local.test");
    let mut conn = w.submission();
    let own = conn
        .mail(
            Some("alice@local.test"),
            "h",
            Some(&mailbox("alice@local.test")),
        )
        .await;
    assert_eq!(own, Verdict::Accept);
    let other = conn
        .mail(
            Some("alice@local.test"),
            "h",
            Some(&mailbox("bob@local.test")),
        )
        .await;
    let r = refused(other);
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
    let _ = conn.mail(me, "h", Some(&mailbox("alice@local.test"))).await;
    assert_eq!(
        conn.rcpt(me, &mailbox("x@far.test"), 0).await,
        Verdict::Accept
    );
    assert_eq!(
        conn.rcpt(me, &mailbox("y@far.test"), 1).await,
        Verdict::Accept
    );
    let r = refused(conn.rcpt(me, &mailbox("z@far.test"), 2).await);
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
    let _ = conn
        .mail(None, "h", Some(&mailbox("a@stranger.test")))
        .await;
    let r = refused(conn.rcpt(None, &mailbox("u@local.test"), 0).await);
    assert_eq!((r.code, r.status), (451, Some(Status(4, 7, 1))));
    assert!(
        r.lines[0].starts_with("Greylisted: the first message from 192.0.2.0/24"),
        "{r}"
    );
    // Another sender of the same domain, from another address of the /24:
    // the same triplet, now past its (zero) delay.
    let mut again = w.mx_from("192.0.2.99:1").await;
    let _ = again
        .mail(None, "h", Some(&mailbox("b@stranger.test")))
        .await;
    assert_eq!(
        again.rcpt(None, &mailbox("u@local.test"), 0).await,
        Verdict::Accept
    );
}

#[tokio::test]
async fn the_report_mailbox_is_accepted_on_port_25_though_no_user_has_it() {
    let mut c = config();
    c.recipient_policy.clear();
    c.dmarc.report_mailbox = Some("dmarc-reports@local.test".into());
    let w = world_with(c, TableChecks::default(), MemoryIntake::default());
    let mut conn = w.mx().await;
    let _ = conn.mail(None, "h", Some(&mailbox("a@remote.test"))).await;
    let to = mailbox("dmarc-reports@local.test");
    assert_eq!(conn.rcpt(None, &to, 0).await, Verdict::Accept);
    let r = refused(conn.rcpt(None, &mailbox("other@local.test"), 1).await);
    assert_eq!(r.status, Some(Status(5, 1, 1)));
}
