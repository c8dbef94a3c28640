//! Local delivery worker: takes spooled messages, writes each local
//! recipient's copy into its Maildir, and completes the spool entry only
//! when every copy is durable. Delivery is at least once: a crash between
//! the Maildir write and the completion delivers again after restart.

use crate::checks::{self, Destination};
use portcullis_config::Config;
use portcullis_delivery::{DeliveryError, LocalDelivery, MaildirStore};
use portcullis_queue::{Spool, StoredMessage};
use portcullis_smtp::Mailbox;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

/// Messages delivered together share their syncs.
const BATCH: usize = 256;

#[derive(Clone)]
pub(crate) struct Handle {
    tx: mpsc::UnboundedSender<Job>,
}

impl Handle {
    /// Hand over a message that is already durable in the spool.
    pub(crate) fn submit(&self, message: StoredMessage) {
        let _ = self.tx.send(Job {
            message,
            attempts: 0,
        });
    }
}

struct Job {
    message: StoredMessage,
    attempts: u32,
}

enum Outcome {
    Delivered,
    /// Try these recipients again later.
    Retry(Vec<portcullis_queue::QueuedRecipient>, String),
    /// Nothing more can be done here; the message stays in the spool for
    /// the operator.
    Stuck(String),
}

pub(crate) fn start(config: &Config, spool: Spool, pending: Vec<StoredMessage>) -> Handle {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = Handle { tx };
    for m in pending {
        handle.submit(m);
    }
    let store = MaildirStore::new(config.data_dir.join("mail"), &config.hostname);
    tokio::spawn(worker(config.clone(), store, spool, rx, handle.clone()));
    handle
}

async fn worker(
    config: Config,
    store: MaildirStore,
    spool: Spool,
    mut rx: mpsc::UnboundedReceiver<Job>,
    retry: Handle,
) {
    let mut jobs = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut jobs, BATCH).await > 0 {
        let batch = std::mem::take(&mut jobs);
        let (cfg, st) = (config.clone(), store.clone());
        let Ok(results) =
            tokio::task::spawn_blocking(move || deliver_batch(&cfg, &st, batch)).await
        else {
            error!(event = "delivery_panic", "local delivery task failed");
            continue;
        };
        let mut completions = tokio::task::JoinSet::new();
        for (job, outcome) in results {
            let id = job.message.envelope.id.clone();
            match outcome {
                Outcome::Delivered => {
                    info!(event = "delivered", id = %id, recipients = job.message.envelope.recipients.len());
                    let spool = spool.clone();
                    completions.spawn(async move { (id.clone(), spool.complete(&id).await) });
                }
                Outcome::Retry(remaining, why) => schedule_retry(&retry, job, remaining, why),
                Outcome::Stuck(why) => {
                    error!(event = "undeliverable", id = %id, reason = %why, "message kept in the spool")
                }
            }
        }
        while let Some(done) = completions.join_next().await {
            if let Ok((id, Err(e))) = done {
                // The copy is in the Maildir; the spool entry stays and the
                // message is delivered again after a restart (at least once).
                warn!(event = "complete_failed", id = %id, error = %e);
            }
        }
    }
}

fn schedule_retry(
    retry: &Handle,
    mut job: Job,
    remaining: Vec<portcullis_queue::QueuedRecipient>,
    why: String,
) {
    job.attempts += 1;
    job.message.envelope.recipients = remaining;
    // 1s, 2s, 4s ... capped at 5 minutes: local failures are usually a full
    // disk, which an operator fixes.
    let delay = Duration::from_secs(1u64 << job.attempts.min(8)).min(Duration::from_secs(300));
    warn!(event = "deferred", id = %job.message.envelope.id, attempts = job.attempts, delay_s = delay.as_secs(), reason = %why);
    let retry = retry.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = retry.tx.send(job);
    });
}

fn deliver_batch(config: &Config, store: &MaildirStore, jobs: Vec<Job>) -> Vec<(Job, Outcome)> {
    // Resolve every recipient first, then write all copies in one batch.
    let mut items = Vec::new();
    let mut owners = Vec::new();
    let mut stuck: Vec<Option<String>> = vec![None; jobs.len()];
    for (j, job) in jobs.iter().enumerate() {
        let env = &job.message.envelope;
        for (r, rcpt) in env.recipients.iter().enumerate() {
            match local_mailbox(config, &rcpt.address) {
                Some(m) => {
                    items.push((m, j, rcpt.folder.as_deref()));
                    owners.push((j, r));
                }
                None => stuck[j] = Some(format!("no local route for {}", rcpt.address)),
            }
        }
    }
    let deliveries: Vec<LocalDelivery<'_>> = items
        .iter()
        .map(|(m, j, folder)| LocalDelivery {
            domain: &m.domain,
            local: &m.local,
            folder: *folder,
            return_path: &jobs[*j].message.envelope.sender,
            data: &jobs[*j].message.data,
        })
        .collect();
    let results = store.deliver(&deliveries);
    let mut failed: Vec<Vec<(usize, DeliveryError)>> =
        (0..jobs.len()).map(|_| Vec::new()).collect();
    for ((j, r), res) in owners.into_iter().zip(results) {
        if let Err(e) = res {
            failed[j].push((r, e));
        }
    }
    jobs.into_iter()
        .zip(failed)
        .zip(stuck)
        .map(|((job, fails), stuck)| {
            let outcome = outcome(&job, fails, stuck);
            (job, outcome)
        })
        .collect()
}

fn outcome(job: &Job, fails: Vec<(usize, DeliveryError)>, stuck: Option<String>) -> Outcome {
    if let Some(why) = stuck {
        return Outcome::Stuck(why);
    }
    if let Some((_, DeliveryError::Permanent(why))) = fails
        .iter()
        .find(|(_, e)| matches!(e, DeliveryError::Permanent(_)))
    {
        return Outcome::Stuck(why.clone());
    }
    if fails.is_empty() {
        return Outcome::Delivered;
    }
    let why = fails[0].1.to_string();
    let remaining = fails
        .into_iter()
        .filter_map(|(r, _)| job.message.envelope.recipients.get(r).cloned())
        .collect();
    Outcome::Retry(remaining, why)
}

fn local_mailbox(config: &Config, address: &str) -> Option<Mailbox> {
    let (local, domain) = address.rsplit_once('@')?;
    let m = Mailbox {
        local: local.to_owned(),
        domain: domain.to_owned(),
    };
    (checks::destination(config, &m) == Destination::Local).then_some(m)
}
