//! The delivery schedule, driven through the queue's public API with a
//! scripted courier and paused time: retries, bounces, delay notices,
//! expiry, and the operator's flush, hold, delete and settle. Time is
//! virtual (`tokio::time::pause`), so an hour of retries takes
//! milliseconds; the spool is real, in a temporary directory.

use portcullis_delivery::{
    Addressee, Answer, BoxFuture, Courier, Destination, Leg, Parcel, RcptOutcome, Status,
};
use portcullis_metrics::Metrics;
use portcullis_queue::{
    Envelope, Queue, QueueSettings, QueueState, QueuedRecipient, Schedule, Spool, SpoolOptions,
};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// One call of the courier: when, for which message, to whom.
#[derive(Clone, Debug)]
struct Call {
    at: Instant,
    sender: String,
    to: Vec<String>,
    data: String,
}

type Script = dyn Fn(&str, usize) -> RcptOutcome + Send + Sync;

/// A courier that answers from a script: (recipient, how many times it
/// was carried before) → outcome. One leg per recipient domain.
struct Scripted {
    script: Box<Script>,
    calls: Mutex<Vec<Call>>,
    /// How many calls so far, for waiting without a timer of our own.
    count: tokio::sync::watch::Sender<usize>,
    /// When set, every carry waits for it (an attempt under way).
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl Scripted {
    fn new(script: impl Fn(&str, usize) -> RcptOutcome + Send + Sync + 'static) -> Arc<Scripted> {
        Arc::new(Scripted {
            script: Box::new(script),
            calls: Mutex::default(),
            count: tokio::sync::watch::Sender::new(0),
            gate: None,
        })
    }

    /// Wait until the courier has been called `n` times. No timer of the
    /// test's own runs meanwhile, so paused time moves only to the queue's
    /// own deadlines: the gaps between calls are exactly the schedule's.
    async fn carried(&self, n: usize) {
        let mut rx = self.count.subscribe();
        let _ = rx.wait_for(|c| *c >= n).await;
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Calls for messages from `sender` ("" for our DSNs).
    fn calls_from(&self, sender: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.sender == sender)
            .collect()
    }

    fn times_carried(&self, address: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.to.iter().any(|t| t == address))
            .count()
    }
}

impl Courier for Scripted {
    fn legs(&self, to: &[Addressee]) -> Vec<Leg> {
        let mut legs: Vec<Leg> = Vec::new();
        for (i, a) in to.iter().enumerate() {
            let domain = a.address.rsplit_once('@').map_or("", |(_, d)| d).to_owned();
            match legs.iter_mut().find(|l| l.name == domain) {
                Some(l) => l.members.push(i),
                None => legs.push(Leg {
                    name: domain.clone(),
                    destination: Destination::Remote(domain),
                    members: vec![i],
                }),
            }
        }
        legs
    }

    fn carry<'a>(
        &'a self,
        parcel: &'a Parcel,
        to: &'a [Addressee],
        leg: &'a Leg,
    ) -> BoxFuture<'a, Vec<RcptOutcome>> {
        Box::pin(async move {
            if let Some(g) = &self.gate {
                let _ = g.acquire().await;
            }
            let addresses: Vec<String> =
                leg.members.iter().map(|&i| to[i].address.clone()).collect();
            let outcomes = addresses
                .iter()
                .map(|a| (self.script)(a, self.times_carried(a)))
                .collect();
            let n = {
                let mut calls = self.calls.lock().unwrap();
                calls.push(Call {
                    at: Instant::now(),
                    sender: parcel.sender.clone(),
                    to: addresses,
                    data: String::from_utf8_lossy(&parcel.data).into_owned(),
                });
                calls.len()
            };
            self.count.send_replace(n);
            outcomes
        })
    }
}

fn delivered() -> RcptOutcome {
    RcptOutcome::Delivered(Answer::new(Status(2, 0, 0), "250 2.0.0 ok"))
}

fn later() -> RcptOutcome {
    RcptOutcome::Temporary(Answer::new(Status(4, 2, 1), "451 4.2.1 mailbox busy"))
}

fn never() -> RcptOutcome {
    RcptOutcome::Permanent(Answer::new(Status(5, 1, 1), "550 5.1.1 no such user"))
}

fn schedule() -> Schedule {
    Schedule {
        retry_base: Duration::from_secs(1),
        retry_max: Duration::from_secs(60),
        max_lifetime: Duration::from_secs(3600),
        delay_notice: Duration::from_secs(3600),
    }
}

struct World {
    queue: Queue,
    courier: Arc<Scripted>,
    dir: PathBuf,
    metrics: Arc<Metrics>,
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pc-schedule-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn world(name: &str, courier: Arc<Scripted>, schedule: Schedule) -> World {
    world_suppressing(name, courier, schedule, None)
}

fn world_suppressing(
    name: &str,
    courier: Arc<Scripted>,
    schedule: Schedule,
    suppression: Option<portcullis_queue::Suppressing>,
) -> World {
    let dir = dir(name);
    let (spool, pending) = Spool::open(&dir, SpoolOptions::default()).unwrap();
    let settings = QueueSettings {
        hostname: "mx.test".into(),
        schedule,
        max_active: 8,
        suppression,
    };
    let metrics = Arc::new(Metrics::default());
    let (queue, _task) = Queue::start(spool, pending, courier.clone(), settings, metrics.clone());
    World {
        queue,
        courier,
        dir,
        metrics,
    }
}

fn envelope(q: &Queue, to: &[&str], received_at: u64) -> Envelope {
    Envelope {
        id: q.new_id(),
        sender: "sender@origin.test".into(),
        recipients: to
            .iter()
            .map(|a| QueuedRecipient {
                address: (*a).into(),
                ..Default::default()
            })
            .collect(),
        received_at,
        ..Default::default()
    }
}

fn now() -> u64 {
    portcullis_config::clock::now_secs()
}

async fn send(w: &World, to: &[&str]) -> String {
    let env = envelope(&w.queue, to, now());
    let id = env.id.clone();
    w.queue
        .enqueue(env, Arc::new(b"Subject: t\r\n\r\nbody\r\n".to_vec()))
        .await
        .unwrap();
    id
}

/// Let virtual time run until `cond` holds (at most an hour of it).
async fn until(cond: impl Fn() -> bool) {
    for _ in 0..36_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("condition not reached within an hour of virtual time");
}

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
