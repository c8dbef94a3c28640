//! The delivery schedule, driven through the queue's public API with a
//! scripted courier and paused time: retries, bounces, delay notices,
//! expiry, and the operator's flush, hold, delete and settle. Time is
//! virtual (`tokio::time::pause`), so an hour of retries takes
//! milliseconds; the spool is real, in a temporary directory.

mod common;
use common::*;

#[tokio::test(start_paused = true)]
async fn a_deferred_message_is_retried_at_doubling_intervals() {
    let w = world(
        "retry",
        Scripted::new(|_, n| if n < 3 { later() } else { delivered() }),
        schedule(),
    );
    send(&w, &["a@far.test"]).await;
    w.courier.carried(4).await;
    let at: Vec<Instant> = w.courier.calls().iter().map(|c| c.at).collect();
    let gaps: Vec<u128> = at.windows(2).map(|p| (p[1] - p[0]).as_millis()).collect();
    assert_eq!(gaps, vec![1000, 2000, 4000]);
    until(|| w.queue.spool().live_count() == 0).await;
}

#[tokio::test(start_paused = true)]
async fn the_dashboard_counts_each_deferred_delivery() {
    // The queue's clock: the wall clock at start plus virtual time.
    let (wall, start) = (now(), Instant::now());
    let w = world(
        "dashboard",
        Scripted::new(|_, n| if n < 2 { later() } else { delivered() }),
        schedule(),
    );
    send(&w, &["a@far.test"]).await;
    w.courier.carried(3).await;
    until(|| w.queue.spool().live_count() == 0).await;
    let minutes = w.metrics.minutes(wall + start.elapsed().as_secs());
    let deferred: u64 = minutes.iter().map(|m| m.deferred).sum();
    assert_eq!(deferred, 2);
}

#[tokio::test(start_paused = true)]
async fn a_permanent_failure_is_bounced_to_the_sender_once() {
    let w = world(
        "bounce",
        Scripted::new(|a, _| {
            if a == "sender@origin.test" {
                delivered()
            } else {
                never()
            }
        }),
        schedule(),
    );
    send(&w, &["gone@far.test"]).await;
    until(|| w.courier.calls_from("").len() == 1).await;
    let dsn = &w.courier.calls_from("")[0];
    assert_eq!(dsn.to, vec!["sender@origin.test".to_owned()]);
    assert!(dsn.data.contains("Action: failed"), "{}", dsn.data);
    assert!(dsn.data.contains("Status: 5.1.1"), "{}", dsn.data);
    until(|| w.queue.spool().live_count() == 0).await;
    assert_eq!(w.courier.times_carried("gone@far.test"), 1, "never retried");
}

#[tokio::test(start_paused = true)]
async fn a_bounce_is_never_bounced() {
    let w = world("double", Scripted::new(|_, _| never()), schedule());
    send(&w, &["gone@far.test"]).await;
    until(|| w.queue.spool().live_count() == 0).await;
    assert_eq!(
        w.courier.calls_from("").len(),
        1,
        "one DSN, itself undeliverable"
    );
    assert_eq!(w.courier.calls().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_message_past_its_lifetime_is_bounced_as_expired() {
    let w = world(
        "expire",
        Scripted::new(|a, _| {
            if a == "sender@origin.test" {
                delivered()
            } else {
                later()
            }
        }),
        schedule(),
    );
    let env = envelope(&w.queue, &["slow@far.test"], now() - 3600);
    w.queue
        .enqueue(env, Arc::new(b"x\r\n".to_vec()))
        .await
        .unwrap();
    until(|| w.courier.calls_from("").len() == 1).await;
    let dsn = &w.courier.calls_from("")[0].data;
    assert!(
        dsn.contains("Status: 4.4.7") && dsn.contains("delivery time expired"),
        "{dsn}"
    );
    until(|| w.queue.spool().live_count() == 0).await;
}

#[tokio::test(start_paused = true)]
async fn the_sender_hears_once_that_mail_is_late() {
    let s = Schedule {
        delay_notice: Duration::from_secs(3),
        ..schedule()
    };
    // Undeliverable for a while (attempts at 0, 1, 3, 7, 15 s), then delivered.
    let w = world(
        "late",
        Scripted::new(|a, n| {
            if a == "sender@origin.test" || n >= 5 {
                delivered()
            } else {
                later()
            }
        }),
        s,
    );
    let env = envelope(&w.queue, &["slow@far.test"], now());
    w.queue
        .enqueue(env, Arc::new(b"x\r\n".to_vec()))
        .await
        .unwrap();
    until(|| w.courier.times_carried("slow@far.test") == 6).await;
    let notices = w.courier.calls_from("");
    assert_eq!(notices.len(), 1, "exactly one delay notice");
    assert!(
        notices[0].data.contains("Action: delayed"),
        "{}",
        notices[0].data
    );
}

#[tokio::test(start_paused = true)]
async fn flush_retries_deferred_mail_at_once() {
    let w = world(
        "flush",
        Scripted::new(|_, n| if n < 1 { later() } else { delivered() }),
        Schedule {
            retry_base: Duration::from_secs(600),
            ..schedule()
        },
    );
    send(&w, &["a@far.test"]).await;
    until(|| w.courier.calls().len() == 1).await;
    let first = w.courier.calls()[0].at;
    tokio::time::sleep(Duration::from_secs(5)).await;
    w.queue.flush();
    until(|| w.courier.calls().len() == 2).await;
    let waited = w.courier.calls()[1].at - first;
    assert!(
        waited < Duration::from_secs(600),
        "retried at flush, after {waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_deleted_message_is_never_tried_again() {
    let w = world("delete", Scripted::new(|_, _| later()), schedule());
    let id = send(&w, &["a@far.test"]).await;
    until(|| w.courier.calls().len() == 1).await;
    assert!(w.queue.delete(&id).await.unwrap());
    assert!(!w.queue.delete(&id).await.unwrap(), "gone already");
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(w.courier.calls().len(), 1);
    assert_eq!(w.queue.spool().live_count(), 0, "completed in the spool");
}

#[tokio::test(start_paused = true)]
async fn a_held_message_waits_for_its_release() {
    let w = world(
        "hold",
        Scripted::new(|_, n| if n < 1 { later() } else { delivered() }),
        schedule(),
    );
    let id = send(&w, &["a@far.test"]).await;
    until(|| w.courier.calls().len() == 1).await;
    assert!(w.queue.set_held(&id, true).await.unwrap());
    assert!(
        w.dir.join("hold").join(&id).exists(),
        "the hold outlives a restart"
    );
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(w.courier.calls().len(), 1, "held: not retried");
    assert!(w.queue.set_held(&id, false).await.unwrap());
    until(|| w.courier.calls().len() == 2).await;
    until(|| w.queue.spool().live_count() == 0).await;
}

#[tokio::test(start_paused = true)]
async fn a_message_queued_on_hold_is_never_tried_until_released() {
    let w = world(
        "held-at-enqueue",
        Scripted::new(|_, _| delivered()),
        schedule(),
    );
    let env = envelope(&w.queue, &["a@far.test"], now());
    let id = env.id.clone();
    let data = Arc::new(b"Subject: t\r\n\r\nbody\r\n".to_vec());
    w.queue
        .enqueue_held(env, data, "virus: EICAR")
        .await
        .unwrap();
    assert_eq!(
        portcullis_queue::hold_reason(&w.dir, &id).as_deref(),
        Some("virus: EICAR")
    );
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(w.courier.calls().is_empty(), "held from the start");
    assert!(w.queue.set_held(&id, false).await.unwrap());
    until(|| w.courier.calls().len() == 1).await;
    assert_eq!(portcullis_queue::hold_reason(&w.dir, &id), None);
}

#[tokio::test(start_paused = true)]
async fn settle_waits_for_the_attempt_under_way() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let courier = Arc::new(Scripted {
        script: Box::new(|_, _| delivered()),
        calls: Mutex::default(),
        count: tokio::sync::watch::Sender::new(0),
        gate: Some(gate.clone()),
    });
    let w = world("settle", courier, schedule());
    send(&w, &["a@far.test"]).await;
    assert!(
        !w.queue.settle(Duration::from_secs(5)).await,
        "the attempt is still under way"
    );
    gate.add_permits(1);
    // The attempt completes the message in the spool (real I/O, which
    // paused time would otherwise jump over), then settles.
    until(|| w.queue.spool().live_count() == 0).await;
    assert!(w.queue.settle(Duration::from_secs(5)).await);
    send(&w, &["b@far.test"]).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        w.courier.times_carried("b@far.test"),
        0,
        "settled: nothing new starts"
    );
}

#[tokio::test(start_paused = true)]
async fn a_recipient_another_server_accepted_is_not_tried_again_after_a_restart() {
    let w = world(
        "partial",
        Scripted::new(|a, _| {
            if a.ends_with("@ok.test") {
                delivered()
            } else {
                later()
            }
        }),
        Schedule {
            retry_base: Duration::from_secs(600),
            ..schedule()
        },
    );
    send(&w, &["x@ok.test", "y@slow.test"]).await;
    until(|| w.courier.calls().len() == 2).await;
    // What a crash now would leave: the spool, reopened.
    until(|| {
        let pending = portcullis_queue::inspect(&w.dir).unwrap();
        pending.len() == 1 && pending[0].envelope.recipients.len() == 1
    })
    .await;
    let pending = portcullis_queue::inspect(&w.dir).unwrap();
    assert_eq!(pending[0].envelope.recipients[0].address, "y@slow.test");
}

#[tokio::test(start_paused = true)]
async fn the_live_queue_lists_each_message_where_it_stands() {
    let w = world("list", Scripted::new(|_, _| later()), schedule());
    let deferred = send(&w, &["a@far.test"]).await;
    w.courier.carried(1).await;
    until(|| w.courier.calls().len() == 1).await;
    let kept = send(&w, &["b@far.test"]).await;
    w.courier.carried(2).await;
    assert!(w.queue.set_held(&kept, true).await.unwrap());
    // The hold takes effect once the attempt under way has ended.
    let mut list = w.queue.list().await;
    for _ in 0..100 {
        if list.iter().all(|m| m.state != QueueState::Sending) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        list = w.queue.list().await;
    }
    let of = |id: &str| list.iter().find(|m| m.message.envelope.id == id).unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(of(&deferred).state, QueueState::Waiting);
    assert!(of(&deferred).attempts >= 1);
    assert!(of(&deferred).next_attempt_in.is_some());
    assert_eq!(of(&kept).state, QueueState::Held);
}
