//! The end of data and the message as queued.

use super::*;
use portcullis_config::{InboundPolicy, RecipientPolicy};
use portcullis_smtp::Status;

#[tokio::test]
async fn a_received_message_is_queued_with_received_and_authentication_results() {
    let w = world(TableChecks::default());
    let mut conn = w.mx().await;
    let r = send(&mut conn, Some("a@sender.test"), &["u@local.test"], BODY).await;
    assert_eq!((r.code, r.status), (250, Some(Status(2, 0, 0))));
    let q = w.queued();
    assert_eq!(q.len(), 1);
    let (env, data) = &q[0];
    assert_eq!(env.sender, "a@sender.test");
    assert_eq!(env.recipients[0].address, "u@local.test");
    assert!(
        r.lines[0].ends_with(&env.id),
        "the reply names the queue id: {r}"
    );
    assert!(data.starts_with("Received: from client.test"), "{data}");
    assert!(
        data.contains("Authentication-Results: mx.test; spf="),
        "{data}"
    );
}

#[tokio::test]
async fn forged_authentication_results_for_our_name_are_removed() {
    let w = world(TableChecks::default());
    let mut conn = w.mx().await;
    let forged = "Authentication-Results: mx.test; dkim=pass\nFrom: <a@sender.test>\n\nhi\n";
    send(&mut conn, Some("a@sender.test"), &["u@local.test"], forged).await;
    let data = &w.queued()[0].1;
    assert_eq!(data.matches("Authentication-Results:").count(), 1, "{data}");
    assert!(!data.contains("dkim=pass"), "{data}");
}

#[tokio::test]
async fn a_new_transaction_forgets_the_sender_labels_of_the_last_one() {
    let mut c = config();
    c.dns_lists = vec![labelling_domain_list()];
    let checks = TableChecks {
        listed: ["listed.test.dbl.test".to_owned()].into(),
        ..Default::default()
    };
    let w = world_with(c, checks, MemoryIntake::default());
    let mut conn = w.mx().await;
    // MAIL from a listed domain, abandoned (RSET); then a clean message.
    let _ = conn
        .mail(
            None,
            "h",
            Some(&mailbox("a@listed.test")),
            &Default::default(),
            None,
        )
        .await;
    send(&mut conn, Some("b@clean.test"), &["u@local.test"], BODY).await;
    let data = &w.queued()[0].1;
    assert!(!data.contains("X-DNSBL"), "{data}");
    send(&mut conn, Some("a@listed.test"), &["u@local.test"], BODY).await;
    let data = &w.queued()[1].1;
    assert!(
        data.contains("X-DNSBL: dbl.test listed listed.test"),
        "{data}"
    );
}

fn dmarc_fail(policy: DmarcPolicy) -> TableChecks {
    let mut r = results(AuthResult::Fail, AuthResult::Fail, AuthResult::Fail);
    r.dmarc_policy = policy;
    TableChecks {
        message: Some(r),
        ..Default::default()
    }
}

fn dmarc_config() -> Config {
    let mut c = config();
    c.inbound_policy
        .insert("local.test".into(), InboundPolicy::Dmarc);
    c
}

#[tokio::test]
async fn the_senders_dmarc_reject_is_applied_when_the_domain_asks() {
    let w = world_with(
        dmarc_config(),
        dmarc_fail(DmarcPolicy::Reject),
        MemoryIntake::default(),
    );
    let mut conn = w.mx().await;
    let r = send(&mut conn, Some("a@sender.test"), &["u@local.test"], BODY).await;
    assert_eq!((r.code, r.status), (550, Some(Status(5, 7, 1))));
    assert!(w.queued().is_empty());
}

#[tokio::test]
async fn a_dmarc_quarantine_files_the_message_as_junk() {
    let w = world_with(
        dmarc_config(),
        dmarc_fail(DmarcPolicy::Quarantine),
        MemoryIntake::default(),
    );
    let mut conn = w.mx().await;
    send(&mut conn, Some("a@sender.test"), &["u@local.test"], BODY).await;
    let (env, _) = &w.queued()[0];
    assert_eq!(env.recipients[0].folder.as_deref(), Some("Junk"));
}

#[tokio::test]
async fn label_mode_accepts_what_dmarc_would_reject() {
    let w = world(dmarc_fail(DmarcPolicy::Reject));
    let mut conn = w.mx().await;
    let r = send(&mut conn, Some("a@sender.test"), &["u@local.test"], BODY).await;
    assert_eq!(r.code, 250);
}

/// DMARC failed for a domain that asks for aggregate reports.
fn reporting_domain(policy: DmarcPolicy) -> TableChecks {
    let mut checks = dmarc_fail(policy);
    if let Some(r) = checks.message.as_mut() {
        r.dmarc_observation = Some(portcullis_dmarcrpt::Observation {
            published: portcullis_dmarcrpt::Published {
                domain: "sender.test".into(),
                rua: vec!["mailto:dmarc@sender.test".into()],
                ..Default::default()
            },
            row: portcullis_dmarcrpt::Row {
                disposition: "none".into(),
                ..Default::default()
            },
        });
    }
    checks
}

#[tokio::test]
async fn accepted_mail_is_observed_for_the_dmarc_report_as_delivered() {
    let w = world(reporting_domain(DmarcPolicy::Reject));
    let mut conn = w.mx().await;
    send(&mut conn, Some("a@sender.test"), &["u@local.test"], BODY).await;
    let observed = w.intake.observed.lock().unwrap();
    assert_eq!(observed.len(), 1);
    assert_eq!(observed[0].row.disposition, "none");
}

#[tokio::test]
async fn mail_filed_as_junk_is_reported_as_quarantined() {
    let w = world_with(
        dmarc_config(),
        reporting_domain(DmarcPolicy::Quarantine),
        MemoryIntake::default(),
    );
    let mut conn = w.mx().await;
    send(&mut conn, Some("a@sender.test"), &["u@local.test"], BODY).await;
    assert_eq!(
        w.intake.observed.lock().unwrap()[0].row.disposition,
        "quarantine"
    );
}

#[tokio::test]
async fn refused_mail_is_never_observed_for_dmarc_reports() {
    let w = world_with(
        dmarc_config(),
        reporting_domain(DmarcPolicy::Reject),
        MemoryIntake::default(),
    );
    let mut conn = w.mx().await;
    let r = send(&mut conn, Some("a@sender.test"), &["u@local.test"], BODY).await;
    assert_eq!(r.code, 550);
    assert!(w.intake.observed.lock().unwrap().is_empty());
}

fn accept_all() -> Config {
    let mut c = config();
    c.recipient_policy
        .insert("local.test".into(), RecipientPolicy::AcceptAll);
    c
}

#[tokio::test]
async fn unknown_users_under_accept_all_are_bounced_when_spf_does_not_say_forged() {
    let checks = TableChecks {
        spf: [("sender.test".to_owned(), AuthResult::Pass)].into(),
        ..Default::default()
    };
    let w = world_with(accept_all(), checks, MemoryIntake::default());
    let mut conn = w.mx().await;
    let r = send(
        &mut conn,
        Some("a@sender.test"),
        &["nobody@local.test"],
        BODY,
    )
    .await;
    assert_eq!(r.code, 250, "the client learns nothing");
    assert!(w.queued().is_empty());
    let bounced = w.intake.bounced.lock().unwrap().clone();
    assert_eq!(bounced.len(), 1);
    assert_eq!(bounced[0].status, Status(5, 1, 1));
    assert_eq!(
        bounced[0].diagnostic,
        "550 5.1.1 <nobody@local.test>: user unknown"
    );
}

#[tokio::test]
async fn unknown_users_are_dropped_without_backscatter_when_spf_fails() {
    let checks = TableChecks {
        spf: [("forged.test".to_owned(), AuthResult::Fail)].into(),
        ..Default::default()
    };
    let w = world_with(accept_all(), checks, MemoryIntake::default());
    let mut conn = w.mx().await;
    send(
        &mut conn,
        Some("a@forged.test"),
        &["nobody@local.test"],
        BODY,
    )
    .await;
    assert!(w.intake.bounced.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_full_spool_answers_452_and_accepts_nothing() {
    let intake = MemoryIntake {
        full: true,
        ..Default::default()
    };
    let w = world_with(config(), TableChecks::default(), intake);
    let mut conn = w.mx().await;
    let r = send(&mut conn, Some("a@sender.test"), &["u@local.test"], BODY).await;
    assert_eq!((r.code, r.status), (452, Some(Status(4, 3, 1))));
}

#[tokio::test]
async fn thirty_one_received_fields_are_a_loop() {
    let w = world(TableChecks::default());
    let mut conn = w.mx().await;
    let hops = "Received: from x by y\n".repeat(30);
    let r = send(
        &mut conn,
        Some("a@sender.test"),
        &["u@local.test"],
        &(hops + BODY),
    )
    .await;
    assert_eq!((r.code, r.status), (554, Some(Status(5, 4, 6))));
}

/// alice@local.test submits a message with this From: field.
async fn submitted(w: &World, from_field: &str) -> portcullis_smtp::Reply {
    w.account("alice@local.test");
    let body = format!("From: <{from_field}>\n\nhi\n");
    let mut txn = transaction(Some("alice@local.test"), &["x@far.test"], &body);
    txn.auth = Some("alice@local.test".into());
    reply(w.submission().data(txn).await)
}

#[tokio::test]
async fn a_submitted_message_gets_date_and_message_id_and_is_logged() {
    let w = world(TableChecks::default());
    let r = submitted(&w, "alice@local.test").await;
    assert_eq!(r.code, 250, "{r}");
    let (env, data) = &w.queued()[0];
    let message_id = format!("Message-ID: <{}@mx.test>", env.id);
    assert!(
        data.contains("\r\nDate: ") && data.contains(&message_id),
        "{data}"
    );
    let log = w.inbound.submission.log.search("alice@local.test").unwrap();
    assert_eq!(log[0]["queue_id"], env.id.as_str());
}

#[tokio::test]
async fn a_submitted_from_address_the_account_does_not_own_is_refused() {
    let w = world(TableChecks::default());
    let r = submitted(&w, "ceo@local.test").await;
    assert_eq!((r.code, r.status), (553, Some(Status(5, 7, 1))));
}

/// A client from a range that earlier delivered mail authenticated for
/// vouch.test, now sending an unauthenticated message.
async fn from_a_vouching_range(c: Config) -> (World, portcullis_smtp::Reply) {
    let w = world_with(c, TableChecks::default(), MemoryIntake::default());
    let range = "192.0.2.10/32".parse().unwrap();
    w.inbound
        .admission
        .state
        .remember_range(range, "vouch.test")
        .await;
    let mut conn = w.mx().await;
    let r = send(&mut conn, Some("a@other.test"), &["u@local.test"], BODY).await;
    (w, r)
}

#[tokio::test]
async fn a_vouching_range_in_label_mode_is_labelled_not_refused() {
    let (w, r) = from_a_vouching_range(config()).await;
    assert_eq!(r.code, 250, "{r}");
    let data = &w.queued()[0].1;
    assert!(
        data.contains(
            "X-Portcullis-Class: default; 192.0.2.10/32 sends for vouch.test only with SPF or DKIM"
        ),
        "{data}"
    );
}

#[tokio::test]
async fn a_vouching_range_is_refused_where_the_domain_policy_refuses() {
    let (w, r) = from_a_vouching_range(dmarc_config()).await;
    assert_eq!((r.code, r.status), (550, Some(Status(5, 7, 1))));
    assert!(
        r.lines[0].contains("sends for vouch.test only with SPF or DKIM"),
        "{r}"
    );
    assert!(w.queued().is_empty());
}
