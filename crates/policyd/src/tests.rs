//! The policy service as Postfix drives it: requests in, answers out,
//! over the same engine as our listeners, with DNS from a table.

use super::*;
use portcullis_admission::StateCommand;
use portcullis_authn::AuthResult;
use portcullis_pipeline::fakes::{MemoryIntake, TableChecks};
use portcullis_pipeline::{ClassOfService, Forwarding, Submission};

fn config() -> Config {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("pc-policyd-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut c = Config::embedded_default(dir, "mx.test".into());
    c.local_domains = vec!["local.test".into()];
    c.classes.get_mut("default").unwrap().messages_per_minute = Some(1);
    c
}

fn service(c: Config, checks: TableChecks) -> PolicyService {
    let metrics = Arc::new(portcullis_metrics::Metrics::default());
    let state = portcullis_state::Store::in_memory(c.reputation.clone());
    let queue = Arc::new(MemoryIntake::default());
    let containment =
        portcullis_pipeline::Containment::new(state.clone(), queue.clone(), metrics.clone());
    let inbound = Inbound {
        containment: Arc::new(containment),
        checks: Arc::new(checks),
        queue,
        admission: ClassOfService::new(&c, state, metrics.clone()).unwrap(),
        submission: Submission::new(&c, metrics.clone()).unwrap(),
        forwarding: Forwarding::new(&c).unwrap(),
        milters: portcullis_pipeline::Milters::new(&[], metrics.clone()),
        metrics,
        dmarc_observations: None,
    };
    PolicyService::new(Arc::new(inbound), Arc::new(c))
}

fn spf_pass(domain: &str) -> TableChecks {
    TableChecks {
        spf: [(domain.to_owned(), AuthResult::Pass)].into(),
        ..Default::default()
    }
}

/// A request as Postfix sends it, for one message (`instance`).
fn request(state: &str, instance: &str, extra: &[(&str, &str)]) -> Request {
    let mut pairs = vec![
        ("request", "smtpd_access_policy"),
        ("protocol_state", state),
        ("protocol_name", "ESMTP"),
        ("client_address", "192.0.2.10"),
        ("helo_name", "client.test"),
        ("instance", instance),
    ];
    pairs.extend_from_slice(extra);
    Request::from_pairs(pairs)
}

async fn mail(s: &PolicyService, instance: &str, sender: &str) -> Answer {
    s.answer(&request("MAIL", instance, &[("sender", sender)]))
        .await
}

#[tokio::test]
async fn unknown_senders_share_the_default_pools_message_budget() {
    let s = service(config(), TableChecks::default());
    assert_eq!(mail(&s, "1", "a@stranger.test").await.action, "DUNNO");
    let second = mail(&s, "2", "b@other-stranger.test").await;
    assert!(
        second
            .action
            .starts_with("DEFER_IF_PERMIT 4.7.1 class default"),
        "{second:?}"
    );
}

#[tokio::test]
async fn an_spf_authenticated_sender_draws_on_its_own_class() {
    let s = service(config(), spf_pass("good.test"));
    for i in 0..5 {
        let a = mail(&s, &i.to_string(), "news@good.test").await;
        assert_eq!(a.action, "DUNNO", "{a:?}");
    }
}

#[tokio::test]
async fn a_blocked_range_is_rejected_at_connect() {
    let s = service(config(), TableChecks::default());
    let block = StateCommand::Block {
        range: "192.0.2.0/24".parse().unwrap(),
        secs: 600,
        reason: "spam run".into(),
    };
    s.inbound.admission.state.apply(&block).await.unwrap();
    let a = s.answer(&request("CONNECT", "1", &[])).await;
    assert!(
        a.action.starts_with("REJECT 4.7.0 192.0.2.0/24 is blocked"),
        "{a:?}"
    );
}

#[tokio::test]
async fn an_authenticated_submitters_recipient_quota_holds() {
    let mut c = config();
    c.submission.recipients_per_hour = 2;
    let s = service(c, TableChecks::default());
    let rcpt = |to: &'static str| {
        request(
            "RCPT",
            "1",
            &[("sasl_username", "alice@local.test"), ("recipient", to)],
        )
    };
    assert_eq!(s.answer(&rcpt("x@far.test")).await.action, "DUNNO");
    assert_eq!(s.answer(&rcpt("y@far.test")).await.action, "DUNNO");
    let third = s.answer(&rcpt("z@far.test")).await;
    assert!(
        third
            .action
            .starts_with("DEFER_IF_PERMIT 4.7.1 Recipient quota of 2 per hour"),
        "{third:?}"
    );
}

fn greylisting() -> Config {
    let mut c = config();
    c.classes.get_mut("default").unwrap().messages_per_minute = None;
    c.greylist.enabled = true;
    c.greylist.delay_secs = 0;
    c
}

#[tokio::test]
async fn a_strangers_first_try_is_greylisted_and_its_retry_passes() {
    let s = service(greylisting(), TableChecks::default());
    let rcpt = |i: &'static str| {
        request(
            "RCPT",
            i,
            &[("sender", "a@stranger.test"), ("recipient", "u@local.test")],
        )
    };
    let first = s.answer(&rcpt("1")).await;
    assert!(
        first.action.starts_with("DEFER_IF_PERMIT 4.7.1 Greylisted"),
        "{first:?}"
    );
    assert_eq!(s.answer(&rcpt("2")).await.action, "DUNNO");
}

#[tokio::test]
async fn an_spf_authenticated_sender_is_never_greylisted() {
    let s = service(greylisting(), spf_pass("good.test"));
    assert_eq!(mail(&s, "1", "news@good.test").await.action, "DUNNO");
    let rcpt = request(
        "RCPT",
        "1",
        &[("sender", "news@good.test"), ("recipient", "u@local.test")],
    );
    assert_eq!(s.answer(&rcpt).await.action, "DUNNO");
}

#[tokio::test]
async fn a_decision_that_takes_too_long_is_answered_dunno_in_time() {
    let mut c = config();
    c.policy.timeout_ms = 50;
    let slow = TableChecks {
        spf_delay: Duration::from_secs(5),
        ..Default::default()
    };
    let s = service(c, slow);
    let t0 = std::time::Instant::now();
    let a = mail(&s, "1", "a@slow.test").await;
    assert_eq!(a.action, "DUNNO");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "answered within the timeout"
    );
}

#[tokio::test]
async fn garbage_is_answered_dunno_and_the_connection_goes_on() {
    let s = Arc::new(service(config(), TableChecks::default()));
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let task = tokio::spawn({
        let s = s.clone();
        async move { s.serve(server).await }
    });
    client.write_all(b"GET / HTTP/1.0\n\n").await.unwrap();
    client
        .write_all(
            b"request=smtpd_access_policy\nprotocol_state=DATA\nclient_address=192.0.2.10\n\n",
        )
        .await
        .unwrap();
    let mut got = vec![0u8; 64];
    let mut text = String::new();
    while text.matches("\n\n").count() < 2 {
        let n = client.read(&mut got).await.unwrap();
        text.push_str(std::str::from_utf8(&got[..n]).unwrap());
    }
    assert_eq!(text, "action=DUNNO\n\naction=DUNNO\n\n");
    drop(client);
    task.await.unwrap();
}

#[tokio::test]
async fn an_endless_request_is_cut_off() {
    let s = service(config(), TableChecks::default());
    let (mut client, server) = tokio::io::duplex(256 * 1024);
    let junk = vec![b'x'; MAX_REQUEST + 10];
    client.write_all(&junk).await.unwrap();
    s.serve(server).await;
    let mut text = String::new();
    client.read_to_string(&mut text).await.unwrap();
    assert_eq!(text, "action=DUNNO\n\n", "answered, then closed");
}

#[tokio::test]
async fn without_a_mail_request_the_first_rcpt_draws_the_message() {
    let s = service(config(), TableChecks::default());
    let rcpt = |i: &'static str, from: &'static str| {
        request(
            "RCPT",
            i,
            &[("sender", from), ("recipient", "u@local.test")],
        )
    };
    assert_eq!(s.answer(&rcpt("1", "a@one.test")).await.action, "DUNNO");
    let second = s.answer(&rcpt("2", "b@two.test")).await;
    assert!(
        second
            .action
            .starts_with("DEFER_IF_PERMIT 4.7.1 class default"),
        "{second:?}"
    );
}

#[tokio::test]
async fn a_postfix_sasl_login_keeps_its_range_out_of_escalation() {
    let s = service(config(), TableChecks::default());
    let prefix: portcullis_config::Cidr = "192.0.2.0/24".parse().unwrap();
    let state = &s.inbound.admission.state;
    assert_eq!(state.exemption_within(prefix).await, None);
    let login = [("sender", "alice@local.test"), ("sasl_username", "alice")];
    s.answer(&request("MAIL", "1", &login)).await;
    assert_eq!(
        state.exemption_within(prefix).await,
        Some(portcullis_admission::Exemption::Authenticated)
    );
}
