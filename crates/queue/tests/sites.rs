//! What sites ask of the queue, driven like the schedule's tests: a
//! message held back by its site, the reason a message waits, a remote
//! "no such mailbox" suppressed, a rate answer bringing a message back
//! when its site resumes.

mod common;
use common::*;

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// What a site answers for a recipient it holds back: nothing was tried.
fn held_by_site(for_ms: u64) -> RcptOutcome {
    RcptOutcome::Temporary(Answer {
        retry_at: Some(epoch_ms() + for_ms),
        ..Answer::new(
            Status(4, 4, 5),
            "site google paused until 12:04 after 421 4.7.28",
        )
    })
}

#[tokio::test(start_paused = true)]
async fn a_message_held_back_by_its_site_returns_when_the_site_asks_and_counts_no_attempt() {
    let w = world(
        "held",
        Scripted::new(|_, n| {
            if n < 2 {
                held_by_site(5_000)
            } else {
                delivered()
            }
        }),
        schedule(),
    );
    send(&w, &["a@far.test"]).await;
    until(|| w.courier.calls().len() >= 3).await;
    let at: Vec<Instant> = w.courier.calls().iter().map(|c| c.at).collect();
    // Not the schedule's 1 s then 2 s: when the site asked, each time.
    for gap in at.windows(2).map(|p| (p[1] - p[0]).as_millis()) {
        assert!((4_000..=6_000).contains(&gap), "gap {gap} ms");
    }
    until(|| w.queue.spool().live_count() == 0).await;
    let deferred: u64 = w
        .metrics
        .minutes(now() + 60)
        .iter()
        .map(|m| m.deferred)
        .sum();
    assert_eq!(deferred, 0, "no deferred delivery counted");
}

#[tokio::test(start_paused = true)]
async fn the_live_queue_says_why_a_message_waits() {
    let w = world(
        "why",
        Scripted::new(|_, _| held_by_site(600_000)),
        schedule(),
    );
    let id = send(&w, &["a@far.test"]).await;
    w.courier.carried(1).await;
    let mut reason = None;
    for _ in 0..100 {
        let list = w.queue.list().await;
        reason = list
            .iter()
            .find(|m| m.message.envelope.id == id)
            .and_then(|m| m.reason.clone());
        if reason.is_some() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(
        reason.as_deref(),
        Some("site google paused until 12:04 after 421 4.7.28")
    );
}

struct Recorded(Mutex<Vec<portcullis_shaping::Suppression>>);

impl portcullis_shaping::SuppressionStore for Recorded {
    fn suppress(
        &self,
        entry: portcullis_shaping::Suppression,
    ) -> portcullis_shaping::suppress::BoxFuture<'_, ()> {
        self.0.lock().unwrap().push(entry);
        Box::pin(async {})
    }
}

#[tokio::test(start_paused = true)]
async fn a_remote_unknown_mailbox_is_suppressed_and_bounced_with_its_class() {
    let store = Arc::new(Recorded(Mutex::default()));
    let unknown = |a: &str, _| {
        if a == "sender@origin.test" {
            return delivered();
        }
        RcptOutcome::Permanent(Answer {
            code: Some(550),
            class: portcullis_delivery::ReplyClass::MailboxUnknown,
            action: portcullis_delivery::Action::Suppress,
            ..Answer::new(Status(5, 1, 1), "550 5.1.1 <gone@far.test>: no such user")
        })
    };
    let suppressing = portcullis_queue::Suppressing {
        days: 30,
        store: store.clone(),
    };
    let w = world_suppressing(
        "suppress",
        Scripted::new(unknown),
        schedule(),
        Some(suppressing),
    );
    let id = send(&w, &["Gone@far.test"]).await;
    w.courier.carried(2).await;
    let entries = store.0.lock().unwrap().clone();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].address, "gone@far.test");
    assert_eq!(entries[0].queue_id, id);
    assert_eq!(entries[0].until - entries[0].since, 30 * 86_400);
    let dsn = &w.courier.calls_from("")[0].data;
    assert!(dsn.contains("X-Reply-Class: mailbox_unknown\r\n"), "{dsn}");
}

#[tokio::test(start_paused = true)]
async fn a_rate_answer_brings_the_message_back_when_its_site_resumes_not_on_the_schedule() {
    // The schedule would wait 60 s; the site's pause ends after 5 s.
    let long = Schedule {
        retry_base: Duration::from_secs(60),
        ..schedule()
    };
    let rate_answer = || {
        RcptOutcome::Temporary(Answer {
            code: Some(421),
            class: portcullis_delivery::ReplyClass::RateLimited,
            action: portcullis_delivery::Action::Pause,
            retry_at: Some(epoch_ms() + 5_000),
            ..Answer::new(Status(4, 7, 28), "421 4.7.28 unusual rate")
        })
    };
    let w = world(
        "rate",
        Scripted::new(move |_, n| if n < 1 { rate_answer() } else { delivered() }),
        long,
    );
    send(&w, &["a@far.test"]).await;
    w.courier.carried(2).await;
    let at: Vec<Instant> = w.courier.calls().iter().map(|c| c.at).collect();
    let gap = (at[1] - at[0]).as_millis();
    assert!((4_000..=6_000).contains(&gap), "gap {gap} ms");
}
