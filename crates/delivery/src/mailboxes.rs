//! The local mailboxes as a courier: every concurrent delivery into a
//! Maildir goes through one thread that takes all the requests waiting at
//! the moment and writes them as one batch, so messages delivered
//! together share their syncs (the spool's group commit, on the way out).

use crate::maildir::{DeliveryError, LocalDelivery, MaildirStore};
use crate::outcome::{Answer, RcptOutcome, Status};
use std::sync::Arc;
use std::sync::mpsc;
use tokio::sync::oneshot;

/// Most mailbox copies written under one sync.
const BATCH: usize = 256;

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
}

impl Mailboxes {
    /// Start the writer over `store`.
    pub fn start(store: MaildirStore) -> std::io::Result<Mailboxes> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("portcullis-mailboxes".into())
            .spawn(move || write_batches(&store, &rx))?;
        Ok(Mailboxes { tx })
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
        let mut batch = vec![first];
        let mut copies = batch[0].drop.to.len();
        while copies < BATCH {
            match rx.try_recv() {
                Ok(r) => {
                    copies += r.drop.to.len();
                    batch.push(r);
                }
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
        let mut written = store.deliver(&items).into_iter();
        drop(items);
        for r in batch {
            let mine: Vec<_> = written
                .by_ref()
                .take(r.drop.to.len())
                .map(|w| w.map(|_| ()))
                .collect();
            let _ = r.reply.send(mine);
        }
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
