//! The scripted courier and the queue around it, shared by the
//! schedule's tests: paused time, a real spool in a temporary directory.

#![allow(dead_code, unused_imports)]

pub use portcullis_delivery::{
    Addressee, Answer, BoxFuture, Courier, Destination, Leg, Parcel, RcptOutcome, Status,
};
pub use portcullis_metrics::Metrics;
pub use portcullis_queue::{
    Envelope, Queue, QueueSettings, QueueState, QueuedRecipient, Schedule, Spool, SpoolOptions,
};
pub use std::path::PathBuf;
pub use std::sync::{Arc, Mutex};
pub use std::time::Duration;
pub use tokio::time::Instant;

/// One call of the courier: when, for which message, to whom.
#[derive(Clone, Debug)]
pub struct Call {
    pub at: Instant,
    pub sender: String,
    pub to: Vec<String>,
    pub data: String,
}

pub type Script = dyn Fn(&str, usize) -> RcptOutcome + Send + Sync;

/// A courier that answers from a script: (recipient, how many times it
/// was carried before) → outcome. One leg per recipient domain.
pub struct Scripted {
    pub script: Box<Script>,
    pub calls: Mutex<Vec<Call>>,
    /// How many calls so far, for waiting without a timer of our own.
    pub count: tokio::sync::watch::Sender<usize>,
    /// When set, every carry waits for it (an attempt under way).
    pub gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl Scripted {
    pub fn new(
        script: impl Fn(&str, usize) -> RcptOutcome + Send + Sync + 'static,
    ) -> Arc<Scripted> {
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
    pub async fn carried(&self, n: usize) {
        let mut rx = self.count.subscribe();
        let _ = rx.wait_for(|c| *c >= n).await;
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Calls for messages from `sender` ("" for our DSNs).
    pub fn calls_from(&self, sender: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.sender == sender)
            .collect()
    }

    pub fn times_carried(&self, address: &str) -> usize {
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

pub fn delivered() -> RcptOutcome {
    RcptOutcome::Delivered(Answer::new(Status(2, 0, 0), "250 2.0.0 ok"))
}

pub fn later() -> RcptOutcome {
    RcptOutcome::Temporary(Answer::new(Status(4, 2, 1), "451 4.2.1 mailbox busy"))
}

pub fn never() -> RcptOutcome {
    RcptOutcome::Permanent(Answer::new(Status(5, 1, 1), "550 5.1.1 no such user"))
}

pub fn schedule() -> Schedule {
    Schedule {
        retry_base: Duration::from_secs(1),
        retry_max: Duration::from_secs(60),
        max_lifetime: Duration::from_secs(3600),
        delay_notice: Duration::from_secs(3600),
    }
}

pub struct World {
    pub queue: Queue,
    pub courier: Arc<Scripted>,
    pub dir: PathBuf,
    pub metrics: Arc<Metrics>,
}

pub fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pc-schedule-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

pub fn world(name: &str, courier: Arc<Scripted>, schedule: Schedule) -> World {
    world_suppressing(name, courier, schedule, None)
}

pub fn world_suppressing(
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

pub fn envelope(q: &Queue, to: &[&str], received_at: u64) -> Envelope {
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

pub fn now() -> u64 {
    portcullis_config::clock::now_secs()
}

pub async fn send(w: &World, to: &[&str]) -> String {
    let env = envelope(&w.queue, to, now());
    let id = env.id.clone();
    w.queue
        .enqueue(env, Arc::new(b"Subject: t\r\n\r\nbody\r\n".to_vec()))
        .await
        .unwrap();
    id
}

/// Let virtual time run until `cond` holds (at most an hour of it).
pub async fn until(cond: impl Fn() -> bool) {
    for _ in 0..36_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("condition not reached within an hour of virtual time");
}
