//! The local mailboxes as a courier: every concurrent delivery into a
//! Maildir goes through one thread that gathers requests into a batch
//! and writes it under one sync (the spool's group commit, on the way
//! out). While requests keep coming (each within `GAP` of the last) the
//! batch grows, up to `IN_FLIGHT` messages or `LINGER`; a lone message
//! waits only `GAP`.
//!
//! Accepting mail comes first: the spool's syncs gate the 250 replies, so
//! after each batch the writer leaves the disk alone for as long as the
//! batch held it (a 50% duty cycle under load; the next batch grows
//! meanwhile), and at most `IN_FLIGHT` messages are with it at once.
//! BENCHMARKS.md has the figures, accepted and delivered.

use crate::maildir::{DeliveryError, LocalDelivery, MaildirStore};
use crate::outcome::{Answer, RcptOutcome, Status};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Messages with the writer at once (waiting or being written).
const IN_FLIGHT: usize = 64;
/// A batch closes when no request came for this long ...
const GAP: Duration = Duration::from_millis(20);
/// ... or this long after its first request.
const LINGER: Duration = Duration::from_millis(500);

/// One message for some local mailboxes.
pub struct MailboxDrop {
    pub return_path: String,
    pub data: Arc<Vec<u8>>,
    /// (domain, local part, folder) per recipient.
    pub to: Vec<(String, String, Option<String>)>,
}

struct Request {
    drop: MailboxDrop,
    reply: oneshot::Sender<Vec<Result<(), DeliveryError>>>,
}

/// Handle to the mailbox writer thread. Cheap to clone.
#[derive(Clone)]
pub struct Mailboxes {
    tx: mpsc::Sender<Request>,
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl Mailboxes {
    /// Start the writer over `store`.
    pub fn start(store: MaildirStore) -> std::io::Result<Mailboxes> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("portcullis-mailboxes".into())
            .spawn(move || write_batches(&store, &rx))?;
        Ok(Mailboxes {
            tx,
            in_flight: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT)),
        })
    }

    /// Deliver one message to its local recipients: one outcome each, in
    /// order, once every copy is durable (or failed).
    pub async fn deliver(&self, drop: MailboxDrop) -> Vec<RcptOutcome> {
        let n = drop.to.len();
        let (reply, rx) = oneshot::channel();
        let stopped = || {
            let a = Answer::new(Status(4, 3, 0), "the mailbox writer has stopped");
            vec![RcptOutcome::Temporary(a); n]
        };
        let Ok(_turn) = self.in_flight.acquire().await else {
            return stopped();
        };
        if self.tx.send(Request { drop, reply }).is_err() {
            return stopped();
        }
        match rx.await {
            Ok(results) => results.into_iter().map(outcome).collect(),
            Err(_) => stopped(),
        }
    }
}

fn outcome(r: Result<(), DeliveryError>) -> RcptOutcome {
    match r {
        Ok(()) => RcptOutcome::Delivered(Answer::new(Status(2, 0, 0), "delivered to the mailbox")),
        // RFC 3463 X.3.0: other or undefined mail system status.
        Err(DeliveryError::Temporary(why)) => {
            RcptOutcome::Temporary(Answer::new(Status(4, 3, 0), why))
        }
        // X.1.1: the mailbox name cannot exist here.
        Err(DeliveryError::Permanent(why)) => {
            RcptOutcome::Permanent(Answer::new(Status(5, 1, 1), why))
        }
    }
}

fn write_batches(store: &MaildirStore, rx: &mpsc::Receiver<Request>) {
    while let Ok(first) = rx.recv() {
        let closes = Instant::now() + LINGER;
        let mut batch = vec![first];
        while batch.len() < IN_FLIGHT {
            let wait = GAP.min(closes.saturating_duration_since(Instant::now()));
            match rx.recv_timeout(wait) {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let items: Vec<LocalDelivery<'_>> = batch
            .iter()
            .flat_map(|r| {
                r.drop
                    .to
                    .iter()
                    .map(|(domain, local, folder)| LocalDelivery {
                        domain,
                        local,
                        folder: folder.as_deref(),
                        return_path: &r.drop.return_path,
                        data: &r.drop.data,
                    })
            })
            .collect();
        let started = Instant::now();
        let mut written = store.deliver(&items).into_iter();
        drop(items);
        let took = started.elapsed();
        for r in batch {
            let mine: Vec<_> = written
                .by_ref()
                .take(r.drop.to.len())
                .map(|w| w.map(|_| ()))
                .collect();
            let _ = r.reply.send(mine);
        }
        // Give the disk back for as long as we held it: the spool's
        // commits (and so the 250 replies) never wait behind more than
        // half of its time, and the next batch grows meanwhile.
        std::thread::sleep(took.min(LINGER));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_drops_each_get_their_own_outcomes() {
        let root = std::env::temp_dir().join(format!("pc-mailboxes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let m = Mailboxes::start(MaildirStore::new(root.clone(), "mx.test")).unwrap();
        let drop = |local: &str| MailboxDrop {
            return_path: "a@remote.test".into(),
            data: Arc::new(b"Subject: x\r\n\r\nhi\r\n".to_vec()),
            to: vec![
                ("local.test".into(), local.into(), None),
                ("local.test".into(), "../escape".into(), None),
            ],
        };
        let (a, b) = tokio::join!(m.deliver(drop("alice")), m.deliver(drop("bob")));
        for out in [a, b] {
            assert!(matches!(out[0], RcptOutcome::Delivered(_)), "{out:?}");
            assert!(
                matches!(&out[1], RcptOutcome::Permanent(a) if a.status == Status(5, 1, 1)),
                "{out:?}"
            );
        }
        assert_eq!(
            std::fs::read_dir(root.join("local.test/alice/new"))
                .unwrap()
                .count(),
            1
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
