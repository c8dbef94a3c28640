//! The queue's handle: what the way in, the bounce writer and the control
//! path hold. Every new message enters through [`Queue::enqueue`]: written
//! and fsync'd to the spool, then handed to the scheduler.

use crate::scheduler::{Command, Job, Scheduler};
use crate::{Envelope, Schedule, Spool, SpoolError, StoredMessage};
use portcullis_delivery::Courier;
use portcullis_metrics::Metrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How the queue runs.
#[derive(Clone, Debug)]
pub struct QueueSettings {
    /// Our name: the DSNs' reporting MTA.
    pub hostname: String,
    pub schedule: Schedule,
    /// Messages being delivered at once; the rest wait their turn.
    pub max_active: usize,
    /// Where remote "no such mailbox" answers put the address, if
    /// anywhere.
    pub suppression: Option<Suppressing>,
}

/// The suppression list and how long an address stays on it.
#[derive(Clone)]
pub struct Suppressing {
    pub days: u32,
    pub store: Arc<dyn portcullis_shaping::SuppressionStore>,
}

impl std::fmt::Debug for Suppressing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Suppressing {{ days: {} }}", self.days)
    }
}

/// Handle to the queue. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    spool: Spool,
    hostname: String,
    tx: mpsc::UnboundedSender<Command>,
    /// Told of every remote recipient's outcome (issue 29, containment;
    /// set once, after start, by the room that listens).
    outcomes: std::sync::OnceLock<Arc<dyn crate::RecipientOutcomes>>,
}

impl Queue {
    /// Start the scheduler over `spool`, with the messages the spool
    /// recovered (`pending`) waiting for their first attempt.
    pub fn start(
        spool: Spool,
        pending: Vec<StoredMessage>,
        courier: Arc<dyn Courier>,
        settings: QueueSettings,
        metrics: Arc<Metrics>,
    ) -> (Queue, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queue = Queue {
            inner: Arc::new(Inner {
                spool,
                hostname: settings.hostname.clone(),
                tx,
                outcomes: std::sync::OnceLock::new(),
            }),
        };
        let scheduler = Scheduler::new(queue.clone(), courier, settings, metrics, rx, pending);
        (queue, tokio::spawn(scheduler.run()))
    }

    pub fn spool(&self) -> &Spool {
        &self.inner.spool
    }

    pub(crate) fn hostname(&self) -> &str {
        &self.inner.hostname
    }

    /// Who hears of each remote recipient's outcome (once; a second
    /// call is ignored).
    pub fn listen_to_outcomes(&self, listener: Arc<dyn crate::RecipientOutcomes>) {
        let _ = self.inner.outcomes.set(listener);
    }

    pub(crate) fn outcomes(&self) -> Option<&Arc<dyn crate::RecipientOutcomes>> {
        self.inner.outcomes.get()
    }

    pub fn new_id(&self) -> String {
        self.inner.spool.new_id()
    }

    /// The only way into the queue: the message is durable when this
    /// returns Ok (the 250 may be sent), and delivery has it.
    pub async fn enqueue(&self, envelope: Envelope, data: Arc<Vec<u8>>) -> Result<(), SpoolError> {
        self.inner
            .spool
            .commit(envelope.clone(), data.clone())
            .await?;
        self.send(Command::Submit(Box::new(Job::new(StoredMessage {
            envelope,
            data,
        }))));
        Ok(())
    }

    /// Hold (or release) every queued message submitted by `account`
    /// (the envelope's authenticated user, compared without case): the
    /// ids it changed.
    pub async fn hold_account(&self, account: &str, held: bool) -> Result<Vec<String>, SpoolError> {
        let mut changed = Vec::new();
        for m in self.list().await {
            let auth = m.message.envelope.auth.as_deref().unwrap_or_default();
            if !auth.eq_ignore_ascii_case(account) || (m.state == crate::QueueState::Held) == held {
                continue;
            }
            if self.set_held(&m.message.envelope.id, held).await? {
                changed.push(m.message.envelope.id.clone());
            }
        }
        Ok(changed)
    }

    /// Every message in the live queue and where it stands (empty once
    /// the scheduler has stopped).
    pub async fn list(&self) -> Vec<crate::QueuedMessage> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::List(reply));
        rx.await.unwrap_or_default()
    }

    /// Into the queue on hold (a milter's quarantine): durable when this
    /// returns Ok, and kept out of delivery until an operator releases
    /// it. The mark, holding the reason, is written before the message,
    /// so no crash can let it go out unheld.
    pub async fn enqueue_held(
        &self,
        envelope: Envelope,
        data: Arc<Vec<u8>>,
        reason: &str,
    ) -> Result<(), SpoolError> {
        let dir = self.inner.spool.dir();
        crate::spool::mark_held_because(dir, &envelope.id, reason)?;
        let committed = self
            .inner
            .spool
            .commit(envelope.clone(), data.clone())
            .await;
        if let Err(e) = committed {
            let _ = crate::spool::mark_held(dir, &envelope.id, false);
            return Err(e);
        }
        let job = Job::new(StoredMessage { envelope, data });
        self.send(Command::SubmitHeld(Box::new(job)));
        Ok(())
    }

    /// Retry every deferred message now.
    pub fn flush(&self) {
        self.send(Command::Flush);
    }

    /// Keep a message out of delivery (`held`) or let it go. The mark is
    /// a file beside the spool, so it outlives a restart. Ok(false): no
    /// such message.
    pub async fn set_held(&self, id: &str, held: bool) -> Result<bool, SpoolError> {
        // The mark first, so that a crash after the scheduler's answer
        // still finds it.
        let dir = self.inner.spool.dir();
        crate::spool::mark_held(dir, id, held)?;
        let (reply, rx) = oneshot::channel();
        self.send(Command::Hold {
            id: id.to_owned(),
            held,
            reply,
        });
        if !rx.await.unwrap_or(false) {
            crate::spool::mark_held(dir, id, false)?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Remove a message: never tried again (an attempt under way may
    /// still finish its transaction). Ok(false): no such message.
    pub async fn delete(&self, id: &str) -> Result<bool, SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Delete {
            id: id.to_owned(),
            reply,
        });
        if !rx.await.unwrap_or(false) {
            return Ok(false);
        }
        let dir = self.inner.spool.dir();
        crate::spool::mark_held(dir, id, false)?;
        crate::clear_status(dir, id);
        self.inner.spool.complete(id).await?;
        Ok(true)
    }

    /// Start no new delivery and wait (at most `limit`) for those under
    /// way: what is left is delivered after the restart.
    pub async fn settle(&self, limit: Duration) -> bool {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Settle(reply));
        tokio::time::timeout(limit, rx).await.is_ok()
    }

    fn send(&self, c: Command) {
        // The scheduler lives as long as the runtime: a failed send means
        // the server is stopping, and the spool keeps the message.
        let _ = self.inner.tx.send(c);
    }
}
