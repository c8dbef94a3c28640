//! One delivery attempt of one message: the courier carries each leg, the
//! recipients a next hop accepted are recorded at once (so no recipient is
//! delivered twice, even after a crash), failures are bounced, a late
//! message's sender is told once, and the message is either done or
//! handed back to the scheduler with the delay before its next attempt.

use crate::dsn::ReportKind;
use crate::scheduler::Job;
use crate::{Bounce, DeliveryStatus, Envelope, Queue, QueuedRecipient, Schedule};
use portcullis_config::clock::now_secs;
use portcullis_delivery::{
    Addressee, Answer, Courier, Destination, Parcel, RcptOutcome, ReplyClass, Status,
};
use portcullis_metrics::{Counter, Metrics};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// What every attempt shares.
pub(crate) struct Attempts {
    pub queue: Queue,
    pub courier: Arc<dyn Courier>,
    pub schedule: Schedule,
    pub metrics: Arc<Metrics>,
    pub clock: QueueClock,
    pub suppression: Option<crate::Suppressing>,
}

/// The wall clock as the schedule sees it: read once at start, then
/// advanced by tokio's clock, so paused-time tests move a message's age
/// as they move its retries (in production both advance together).
pub(crate) struct QueueClock {
    wall: u64,
    start: tokio::time::Instant,
}

impl QueueClock {
    pub(crate) fn new() -> QueueClock {
        QueueClock {
            wall: now_secs(),
            start: tokio::time::Instant::now(),
        }
    }

    pub(crate) fn now_secs(&self) -> u64 {
        self.wall + self.start.elapsed().as_secs()
    }
}

pub(crate) enum Ended {
    Done,
    Retry { job: Box<Job>, after: Duration },
}

/// What became of each recipient in one attempt.
#[derive(Default)]
struct Results {
    delivered: Vec<String>,
    retry: Vec<(QueuedRecipient, Status, String)>,
    failed: Vec<Bounce>,
    /// Some waiting recipient was tried (not only held back by its
    /// site's limits): the attempt counts.
    tried: bool,
    /// The latest time a site asked for (milliseconds since the epoch).
    not_before: Option<u64>,
    /// Some waiting recipient was deferred for itself, not for its
    /// site's rate: the schedule's delay applies.
    own_deferral: bool,
}

pub(crate) async fn run(a: &Attempts, mut job: Job) -> Ended {
    let results = carry(a, &job).await;
    let age = Duration::from_secs(
        a.clock
            .now_secs()
            .saturating_sub(job.message.envelope.received_at),
    );
    let results = give_up_if_expired(&a.schedule, age, results);
    if !results.failed.is_empty() {
        a.queue
            .bounce(&job.message, &results.failed, ReportKind::Failure)
            .await;
    }
    if !results.retry.is_empty() && a.schedule.delay_notice_due(age, job.delay_notified) {
        // RFC 3461/3464: tell the sender it is late, once.
        let late: Vec<Bounce> = results
            .retry
            .iter()
            .map(|(r, s, why)| Bounce {
                recipient: r.clone(),
                status: *s,
                diagnostic: why.clone(),
                class: ReplyClass::Other,
            })
            .collect();
        a.queue.bounce(&job.message, &late, ReportKind::Delay).await;
        job.delay_notified = true;
    }
    if results.retry.is_empty() {
        done(a, &job, &results).await;
        return Ended::Done;
    }
    defer(a, job, results).await
}

/// Each leg in turn; a next hop's acceptance is recorded as soon as it
/// is given.
async fn carry(a: &Attempts, job: &Job) -> Results {
    let env = &job.message.envelope;
    let to: Vec<Addressee> = env
        .recipients
        .iter()
        .map(|r| Addressee {
            address: r.address.clone(),
            folder: r.folder.clone(),
        })
        .collect();
    let parcel = Parcel {
        id: env.id.clone(),
        sender: env.sender.clone(),
        data: job.message.data.clone(),
        smtputf8: env.smtputf8,
        eight_bit: env.eight_bit,
        require_tls: env.require_tls,
    };
    let mut results = Results::default();
    for leg in a.courier.legs(&to) {
        let outcomes = a.courier.carry(&parcel, &to, &leg).await;
        let mut accepted = Vec::new();
        let remote = matches!(leg.destination, Destination::Remote(_));
        for (&i, o) in leg.members.iter().zip(outcomes) {
            let r = env.recipients[i].clone();
            // The one place each recipient's outcome is recorded, with its
            // class (`o.answer().class`).
            record_outcome(a, env, &r, &o, remote).await;
            match o {
                RcptOutcome::Delivered(_) => accepted.push(r.address),
                RcptOutcome::Temporary(ans) => {
                    results.tried |= !ans.held_back();
                    // A rate answer speaks of the site: the message comes
                    // back when the site's pause ends, not on the schedule.
                    let for_the_site = ans.retry_at.is_some()
                        && (ans.held_back() || ans.class == ReplyClass::RateLimited);
                    results.own_deferral |= !for_the_site;
                    results.not_before = results.not_before.max(ans.retry_at);
                    results.retry.push((r, ans.status, ans.text))
                }
                RcptOutcome::Permanent(ans) => results.failed.push(bounce(&r, &ans)),
            }
        }
        // Another server said 250: never again for these, even after a
        // crash. Our own mailboxes need no such record: the message is
        // completed (or its finished recipients recorded) right after.
        if leg.destination != Destination::Mailboxes
            && let Err(e) = a
                .queue
                .spool()
                .complete_recipients(&env.id, accepted.clone())
                .await
        {
            warn!(event = "record_recipients_failed", id = %env.id, error = %e);
        }
        results.delivered.extend(accepted);
    }
    results
}

fn bounce(r: &QueuedRecipient, ans: &Answer) -> Bounce {
    Bounce {
        recipient: r.clone(),
        status: ans.status,
        diagnostic: ans.text.clone(),
        class: ans.class,
    }
}

/// What one recipient's outcome changes beyond its message: a remote "no
/// such mailbox" puts the address on the suppression list, and the
/// outcome is counted by class.
async fn record_outcome(
    a: &Attempts,
    env: &Envelope,
    r: &QueuedRecipient,
    o: &RcptOutcome,
    remote: bool,
) {
    let id = env.id.as_str();
    if remote && let Some(listener) = a.queue.outcomes() {
        listener.recipient_outcome(env, &r.address, o);
    }
    let ans = o.answer();
    if !matches!(o, RcptOutcome::Delivered(_)) {
        a.metrics.inc(
            Counter::DeliveryReplies,
            &[("class", ans.class.name()), ("result", o.word())],
        );
    }
    let (RcptOutcome::Permanent(ans), true, Some(s)) = (o, remote, &a.suppression) else {
        return;
    };
    let remote_reply = ans.code.map(|_| ans.text.as_str());
    let now = a.clock.now_secs();
    if let Some(entry) = portcullis_shaping::suppression_for(
        &r.address,
        ans.class,
        ans.action,
        remote_reply,
        now,
        s.days,
        id,
    ) {
        info!(event = "suppressed", id = %id, to = %entry.address, until = entry.until, reply = %entry.reply);
        s.store.suppress(entry).await;
    }
}

/// RFC 5321 §4.5.4.1: give up on what still waits after the lifetime,
/// and say so (4.4.7, delivery time expired).
fn give_up_if_expired(s: &Schedule, age: Duration, mut r: Results) -> Results {
    if !r.retry.is_empty() && s.expired(age) {
        for (rcpt, _, why) in std::mem::take(&mut r.retry) {
            let text = format!("delivery time expired: {why}");
            r.failed.push(Bounce {
                recipient: rcpt,
                status: Status(4, 4, 7),
                diagnostic: text,
                class: ReplyClass::Network,
            });
        }
    }
    r
}

async fn done(a: &Attempts, job: &Job, r: &Results) {
    let id = &job.message.envelope.id;
    info!(event = "delivered", id = %id, delivered = r.delivered.len(), bounced = r.failed.len());
    let c = Counter::DeliveryAttempts;
    a.metrics
        .add(c, &[("result", "delivered")], r.delivered.len() as u64);
    a.metrics
        .add(c, &[("result", "bounced")], r.failed.len() as u64);
    let spool = a.queue.spool();
    crate::clear_status(spool.dir(), id);
    if let Err(e) = spool.complete(id).await {
        warn!(event = "complete_failed", id = %id, error = %e);
    }
}

/// Some recipients wait: remember durably which are finished (so a
/// restart neither delivers nor bounces them again) and when the next
/// attempt is.
async fn defer(a: &Attempts, mut job: Job, r: Results) -> Ended {
    let id = job.message.envelope.id.clone();
    let finished: Vec<String> = r
        .delivered
        .iter()
        .cloned()
        .chain(r.failed.iter().map(|b| b.recipient.address.clone()))
        .collect();
    let spool = a.queue.spool();
    if let Err(e) = spool.complete_recipients(&id, finished).await {
        warn!(event = "record_recipients_failed", id = %id, error = %e);
    }
    // Held back by its site's limits, or deferred by a rate answer: the
    // message comes back when the site asked (held back only: no attempt
    // counted); deferred for itself: the schedule's delay, or the end of
    // the site's pause if that is later.
    if r.tried {
        job.attempts += 1;
    }
    let after = if r.own_deferral {
        a.schedule.retry_delay(job.attempts)
    } else {
        Duration::ZERO
    };
    let after = match r.not_before {
        Some(ms) => after.max(Duration::from_millis(ms.saturating_sub(now_ms()))),
        None => after,
    };
    let status = DeliveryStatus {
        attempts: job.attempts,
        next_attempt: a.clock.now_secs() + after.as_secs(),
        waiting: r
            .retry
            .iter()
            .map(|(rcpt, _, why)| (rcpt.address.clone(), why.clone()))
            .collect(),
    };
    if let Err(e) = crate::write_status(spool.dir(), &id, &status) {
        warn!(event = "status_write_failed", id = %id, error = %e);
    }
    let why = r.retry[0].2.clone();
    job.reason = Some(why.clone());
    if !r.tried {
        info!(event = "held_by_site", id = %id, delay_ms = after.as_millis() as u64, reason = %why);
        return Ended::Retry {
            job: Box::new(job_with(job, r.retry)),
            after,
        };
    }
    warn!(event = "deferred", id = %id, attempts = job.attempts, delay_s = after.as_secs(), reason = %why);
    a.metrics
        .inc(Counter::DeliveryAttempts, &[("result", "deferred")]);
    // The dashboard's "deferred": a delivery that must wait and retry.
    a.metrics
        .outcome(portcullis_metrics::Outcome::Deferred, a.clock.now_secs());
    Ended::Retry {
        job: Box::new(job_with(job, r.retry)),
        after,
    }
}

/// The job with only the recipients that still wait.
fn job_with(mut job: Job, retry: Vec<(QueuedRecipient, Status, String)>) -> Job {
    job.message.envelope.recipients = retry.into_iter().map(|(rcpt, _, _)| rcpt).collect();
    job
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
