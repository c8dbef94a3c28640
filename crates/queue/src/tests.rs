//! Spool behaviours, each driven through the public API on a temp dir.

use super::*;
use crate::{record, recover};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pc-spool-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn envelope(id: &str) -> Envelope {
    Envelope {
        id: id.to_owned(),
        sender: "a@remote.test".into(),
        recipients: vec![QueuedRecipient {
            address: "u@local.test".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn committed_messages_come_back_after_reopen() {
    let dir = temp_dir("reopen");
    rt().block_on(async {
        let (spool, pending) = Spool::open(&dir, SpoolOptions::default()).unwrap();
        assert!(pending.is_empty());
        let id = spool.new_id();
        spool
            .commit(envelope(&id), Arc::new(b"hello\r\n".to_vec()))
            .await
            .unwrap();
        assert_eq!(spool.live_count(), 1);
    });
    let (_, pending) = Spool::open(&dir, SpoolOptions::default()).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(*pending[0].data, b"hello\r\n");
}

#[test]
fn completed_messages_do_not_come_back() {
    let dir = temp_dir("done");
    rt().block_on(async {
        let (spool, _) = Spool::open(&dir, SpoolOptions::default()).unwrap();
        let (a, b) = (spool.new_id(), spool.new_id());
        spool
            .commit(envelope(&a), Arc::new(b"a".to_vec()))
            .await
            .unwrap();
        spool
            .commit(envelope(&b), Arc::new(b"b".to_vec()))
            .await
            .unwrap();
        spool.complete(&a).await.unwrap();
        assert_eq!(spool.live_count(), 1);
    });
    let (_, pending) = Spool::open(&dir, SpoolOptions::default()).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(*pending[0].data, b"b");
}

#[test]
fn the_oldest_live_message_is_known_without_reading_the_spool() {
    let dir = temp_dir("oldest");
    let ids = rt().block_on(async {
        let (spool, _) = Spool::open(&dir, SpoolOptions::default()).unwrap();
        assert_eq!(spool.oldest_accepted_us(), None);
        let (a, b) = (spool.new_id(), spool.new_id());
        for id in [&a, &b] {
            let data = Arc::new(b"x".to_vec());
            spool.commit(envelope(id), data).await.unwrap();
        }
        let us = |id: &str| u64::from_str_radix(id, 16).unwrap();
        assert_eq!(spool.oldest_accepted_us(), Some(us(&a)));
        spool.complete(&a).await.unwrap();
        assert_eq!(spool.oldest_accepted_us(), Some(us(&b)));
        (us(&a), us(&b))
    });
    let (spool, _) = Spool::open(&dir, SpoolOptions::default()).unwrap();
    assert_eq!(
        spool.oldest_accepted_us(),
        Some(ids.1),
        "after a restart too"
    );
}

#[test]
fn finished_recipients_are_not_tried_again_after_reopen() {
    let dir = temp_dir("rcpts");
    rt().block_on(async {
        let (spool, _) = Spool::open(&dir, SpoolOptions::default()).unwrap();
        let id = spool.new_id();
        let mut env = envelope(&id);
        env.recipients.push(QueuedRecipient {
            address: "v@remote.test".into(),
            ..Default::default()
        });
        spool.commit(env, Arc::new(b"x".to_vec())).await.unwrap();
        spool
            .complete_recipients(&id, vec!["u@local.test".into()])
            .await
            .unwrap();
    });
    let (_, pending) = Spool::open(&dir, SpoolOptions::default()).unwrap();
    let rcpts: Vec<&str> = pending[0]
        .envelope
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(rcpts, vec!["v@remote.test"]);
}

#[test]
fn a_torn_tail_is_ignored() {
    let dir = temp_dir("torn");
    rt().block_on(async {
        let (spool, _) = Spool::open(&dir, SpoolOptions::default()).unwrap();
        let id = spool.new_id();
        spool
            .commit(envelope(&id), Arc::new(b"whole".to_vec()))
            .await
            .unwrap();
    });
    let seg = recover::segments(&dir).unwrap().into_iter().max().unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(recover::segment_path(&dir, seg))
        .unwrap();
    let partial = record::encode(&envelope("FFFFFFFFFFFFF"), b"cut short");
    f.write_all(&partial[..partial.len() - 3]).unwrap();
    let (_, pending) = Spool::open(&dir, SpoolOptions::default()).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(*pending[0].data, b"whole");
}

#[test]
fn concurrent_commits_share_syncs_and_all_survive() {
    let dir = temp_dir("group");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (spool, _) = Spool::open(&dir, SpoolOptions::default()).unwrap();
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let s = spool.clone();
                tokio::spawn(async move {
                    let id = s.new_id();
                    s.commit(envelope(&id), Arc::new(format!("m{i}").into_bytes()))
                        .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    });
    let (_, pending) = Spool::open(&dir, SpoolOptions::default()).unwrap();
    assert_eq!(pending.len(), 200);
}

#[test]
fn finished_segments_are_deleted() {
    let dir = temp_dir("rotate");
    let options = SpoolOptions { segment_bytes: 1 };
    rt().block_on(async {
        let (spool, _) = Spool::open(&dir, options.clone()).unwrap();
        let mut ids = Vec::new();
        for _ in 0..3 {
            let id = spool.new_id();
            spool
                .commit(envelope(&id), Arc::new(b"x".to_vec()))
                .await
                .unwrap();
            ids.push(id);
        }
        assert_eq!(recover::segments(&dir).unwrap().len(), 3);
        for id in &ids[..2] {
            spool.complete(id).await.unwrap();
        }
        // The first two segments are finished; the active one stays.
        assert_eq!(recover::segments(&dir).unwrap().len(), 1);
    });
}

#[test]
fn ids_increase_and_stay_above_recovered_ones() {
    let dir = temp_dir("ids");
    let far_future = "FFFFFFFFFFFF0";
    rt().block_on(async {
        let (spool, _) = Spool::open(&dir, SpoolOptions::default()).unwrap();
        spool
            .commit(envelope(far_future), Arc::new(Vec::new()))
            .await
            .unwrap();
    });
    let (spool, _) = Spool::open(&dir, SpoolOptions::default()).unwrap();
    let a = spool.new_id();
    let b = spool.new_id();
    assert!(a.as_str() > far_future && b > a, "{a} {b}");
}

#[test]
fn offline_delete_marks_done() {
    let dir = temp_dir("offline");
    let id = rt().block_on(async {
        let (spool, _) = Spool::open(&dir, SpoolOptions::default()).unwrap();
        let id = spool.new_id();
        spool
            .commit(envelope(&id), Arc::new(b"x".to_vec()))
            .await
            .unwrap();
        id
    });
    assert_eq!(inspect(&dir).unwrap().len(), 1);
    assert!(delete_offline(&dir, &id).unwrap());
    assert!(!delete_offline(&dir, &id).unwrap());
    assert!(inspect(&dir).unwrap().is_empty());
}
