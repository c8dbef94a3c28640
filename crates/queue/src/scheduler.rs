//! The scheduler: one task that owns every message the queue holds and
//! decides when each is tried. New and due messages wait in `ready`;
//! deferred ones in `waiting`, ordered by when they are due, apart from
//! new mail; held ones until the operator releases them. At most
//! `max_active` attempts run at once, each its own task (`attempt.rs`);
//! their ends come back here, and commands (submit, flush, hold, delete,
//! list, settle) arrive on one channel. Nothing is polled. Because it
//! owns every message, it is also where the operator's view of the live
//! queue comes from (`List`), not the spool on disk.

use crate::attempt::{self, Attempts, Ended};
use crate::{Queue, QueueSettings, StoredMessage};
use portcullis_delivery::Courier;
use portcullis_metrics::Metrics;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::info;

/// A message in the queue and its history.
pub(crate) struct Job {
    pub message: StoredMessage,
    pub attempts: u32,
    /// A "delayed" DSN went out already (RFC 3464: once is enough).
    pub delay_notified: bool,
    /// Why it waits: the last attempt's first deferral, or its site's
    /// pause ("site google paused until 12:04 after 421 4.7.28").
    pub reason: Option<String>,
}

impl Job {
    pub(crate) fn new(message: StoredMessage) -> Job {
        Job {
            message,
            attempts: 0,
            delay_notified: false,
            reason: None,
        }
    }

    fn id(&self) -> &str {
        &self.message.envelope.id
    }
}

pub(crate) enum Command {
    Submit(Box<Job>),
    /// A new message that waits on hold (quarantine) until released.
    SubmitHeld(Box<Job>),
    Flush,
    Hold {
        id: String,
        held: bool,
        reply: oneshot::Sender<bool>,
    },
    Delete {
        id: String,
        reply: oneshot::Sender<bool>,
    },
    /// Every message held now, where it stands.
    List(oneshot::Sender<Vec<QueuedMessage>>),
    Settle(oneshot::Sender<()>),
}

/// Where a message stands in the live queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueState {
    /// Its turn comes as soon as an attempt slot is free.
    Ready,
    /// Deferred until its next attempt.
    Waiting,
    /// Kept out of delivery by the operator.
    Held,
    /// An attempt is under way.
    Sending,
}

/// One message of the live queue, as the operator sees it.
#[derive(Clone, Debug)]
pub struct QueuedMessage {
    pub message: StoredMessage,
    /// Attempts made before this moment.
    pub attempts: u32,
    pub state: QueueState,
    /// Until the next attempt (`Waiting` only).
    pub next_attempt_in: Option<std::time::Duration>,
    /// Why it waits, after an attempt that did not finish it.
    pub reason: Option<String>,
}

/// What the operator asked about a message while it was being tried.
#[derive(Default)]
struct Marks {
    hold: bool,
    deleted: bool,
}

pub(crate) struct Scheduler {
    rx: mpsc::UnboundedReceiver<Command>,
    attempts: Arc<Attempts>,
    max_active: usize,
    ready: VecDeque<Job>,
    /// Deferred messages by due time (and arrival, to keep equal times apart).
    waiting: BTreeMap<(Instant, u64), Job>,
    held: HashMap<String, Job>,
    running: JoinSet<(String, Ended)>,
    /// What each attempt under way is sending, for `List`.
    sending: HashMap<String, (StoredMessage, u32)>,
    marks: HashMap<String, Marks>,
    next_seq: u64,
    /// Settling: no new attempt starts; these wait for the running ones.
    settling: Vec<oneshot::Sender<()>>,
    closed: bool,
}

impl Scheduler {
    pub(crate) fn new(
        queue: Queue,
        courier: Arc<dyn Courier>,
        settings: QueueSettings,
        metrics: Arc<Metrics>,
        rx: mpsc::UnboundedReceiver<Command>,
        pending: Vec<StoredMessage>,
    ) -> Scheduler {
        let dir = queue.spool().dir().to_owned();
        let mut s = Scheduler {
            rx,
            max_active: settings.max_active.max(1),
            attempts: Arc::new(Attempts {
                queue,
                courier,
                schedule: settings.schedule,
                metrics,
                clock: attempt::QueueClock::new(),
                suppression: settings.suppression,
            }),
            ready: VecDeque::new(),
            waiting: BTreeMap::new(),
            held: HashMap::new(),
            running: JoinSet::new(),
            sending: HashMap::new(),
            marks: HashMap::new(),
            next_seq: 0,
            settling: Vec::new(),
            closed: false,
        };
        for m in pending {
            let job = Job::new(m);
            if crate::is_held(&dir, job.id()) {
                s.held.insert(job.id().to_owned(), job);
            } else {
                s.ready.push_back(job);
            }
        }
        s
    }

    pub(crate) async fn run(mut self) {
        loop {
            self.start_ready();
            let due = self.waiting.keys().next().map(|(t, _)| *t);
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    Some(c) => self.command(c),
                    None => return,
                },
                Some(ended) = self.running.join_next(), if !self.running.is_empty() => {
                    if let Ok((id, ended)) = ended {
                        self.ended(id, ended);
                    }
                    self.settled();
                }
                () = sleep_until(due), if due.is_some() => self.wake_due(Instant::now()),
            }
        }
    }

    fn start_ready(&mut self) {
        while !self.closed && self.running.len() < self.max_active {
            let Some(job) = self.ready.pop_front() else {
                return;
            };
            let id = job.id().to_owned();
            self.marks.insert(id.clone(), Marks::default());
            let view = (job.message.clone(), job.attempts);
            self.sending.insert(id.clone(), view);
            let attempts = self.attempts.clone();
            self.running
                .spawn(async move { (id, attempt::run(&attempts, job).await) });
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Submit(job) => self.ready.push_back(*job),
            Command::SubmitHeld(job) => {
                info!(event = "held", id = %job.id());
                self.held.insert(job.id().to_owned(), *job);
            }
            Command::Flush => {
                info!(event = "queue_flush");
                let due = std::mem::take(&mut self.waiting);
                self.ready.extend(due.into_values());
            }
            Command::Hold { id, held, reply } => {
                let _ = reply.send(self.hold(&id, held));
            }
            Command::Delete { id, reply } => {
                let _ = reply.send(self.delete(&id));
            }
            Command::List(reply) => {
                let _ = reply.send(self.list(Instant::now()));
            }
            Command::Settle(reply) => {
                self.closed = true;
                self.settling.push(reply);
                self.settled();
            }
        }
    }

    /// Take a message out of wherever it waits.
    fn take(&mut self, id: &str) -> Option<Job> {
        if let Some(i) = self.ready.iter().position(|j| j.id() == id) {
            return self.ready.remove(i);
        }
        let key = self
            .waiting
            .iter()
            .find(|(_, j)| j.id() == id)
            .map(|(k, _)| *k);
        if let Some(k) = key {
            return self.waiting.remove(&k);
        }
        self.held.remove(id)
    }

    fn hold(&mut self, id: &str, held: bool) -> bool {
        if let Some(m) = self.marks.get_mut(id) {
            m.hold = held;
            return true;
        }
        let Some(job) = self.take(id) else {
            return false;
        };
        if held {
            info!(event = "held", id = %id);
            self.held.insert(id.to_owned(), job);
        } else {
            self.ready.push_back(job);
        }
        true
    }

    fn delete(&mut self, id: &str) -> bool {
        if let Some(m) = self.marks.get_mut(id) {
            m.deleted = true;
            return true;
        }
        let Some(job) = self.take(id) else {
            return false;
        };
        // A held message deleted is the operator's decision on mail that
        // never left: say whose it was.
        let env = &job.message.envelope;
        let account = env.auth.as_deref().unwrap_or_default();
        info!(event = "deleted", id = %id, sender = %env.sender, account, recipients = env.recipients.len());
        true
    }

    /// Every message, in the order it would be tried: under way, ready,
    /// waiting by due time, held.
    fn list(&self, now: Instant) -> Vec<QueuedMessage> {
        let view = |job: &Job, state, due: Option<Instant>| QueuedMessage {
            message: job.message.clone(),
            attempts: job.attempts,
            state,
            next_attempt_in: due.map(|t| t.saturating_duration_since(now)),
            reason: job.reason.clone(),
        };
        let mut out: Vec<QueuedMessage> = self
            .sending
            .values()
            .map(|(m, attempts)| QueuedMessage {
                message: m.clone(),
                attempts: *attempts,
                state: QueueState::Sending,
                next_attempt_in: None,
                reason: None,
            })
            .collect();
        out.extend(self.ready.iter().map(|j| view(j, QueueState::Ready, None)));
        out.extend(
            self.waiting
                .iter()
                .map(|((due, _), j)| view(j, QueueState::Waiting, Some(*due))),
        );
        out.extend(self.held.values().map(|j| view(j, QueueState::Held, None)));
        out
    }

    fn ended(&mut self, id: String, ended: Ended) {
        self.sending.remove(&id);
        let marks = self.marks.remove(&id).unwrap_or_default();
        let Ended::Retry { job, after } = ended else {
            return;
        };
        if marks.deleted {
            info!(event = "deleted", id = %id);
        } else if marks.hold {
            info!(event = "held", id = %id);
            self.held.insert(id, *job);
        } else {
            self.next_seq += 1;
            self.waiting
                .insert((Instant::now() + after, self.next_seq), *job);
        }
    }

    fn wake_due(&mut self, now: Instant) {
        while let Some(entry) = self.waiting.first_entry() {
            if entry.key().0 > now {
                break;
            }
            self.ready.push_back(entry.remove());
        }
    }

    fn settled(&mut self) {
        if self.closed && self.running.is_empty() {
            for s in self.settling.drain(..) {
                let _ = s.send(());
            }
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
