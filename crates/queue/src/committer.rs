//! The group-commit thread. Every request waiting when it wakes is written
//! and synced together, and all of them are answered after that one sync.

use crate::recover::{done_path, segment_path, sync_dir};
use crate::{SpoolError, SpoolOptions};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use tokio::sync::oneshot;

/// Most requests folded into one commit; bounds the latency of the first.
const MAX_BATCH: usize = 4096;

pub(crate) enum Op {
    Append {
        id: String,
        bytes: Vec<u8>,
    },
    Done {
        id: String,
    },
    /// Some recipients of a message are finished; the rest still wait.
    DoneRecipients {
        id: String,
        recipients: Vec<String>,
    },
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<(), SpoolError>>,
}

#[derive(Clone)]
pub(crate) struct Handle {
    tx: mpsc::Sender<Request>,
    live: Arc<AtomicUsize>,
}

impl Handle {
    pub(crate) async fn request(&self, op: Op) -> Result<(), SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { op, reply })
            .map_err(|_| SpoolError::Stopped)?;
        rx.await.map_err(|_| SpoolError::Stopped)?
    }

    pub(crate) fn live_count(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }
}

struct Committer {
    dir: PathBuf,
    options: SpoolOptions,
    active: u64,
    file: File,
    len: u64,
    /// Segment → ids not yet done.
    live: BTreeMap<u64, HashSet<String>>,
    segment_of: HashMap<String, u64>,
    done_files: HashMap<u64, File>,
    live_count: Arc<AtomicUsize>,
}

pub(crate) fn start(
    dir: &Path,
    options: SpoolOptions,
    live: BTreeMap<u64, HashSet<String>>,
) -> Result<Handle, SpoolError> {
    // Always append to a fresh segment: whatever a crash left at the tail
    // of the last one stays behind the valid records and is never read.
    let active = live.keys().next_back().map_or(1, |n| n + 1);
    let file = create_segment(dir, active)?;
    let segment_of = live
        .iter()
        .flat_map(|(n, ids)| ids.iter().map(move |id| (id.clone(), *n)))
        .collect::<HashMap<_, _>>();
    let live_count = Arc::new(AtomicUsize::new(segment_of.len()));
    let mut c = Committer {
        dir: dir.to_owned(),
        options,
        active,
        file,
        len: 0,
        live,
        segment_of,
        done_files: HashMap::new(),
        live_count: live_count.clone(),
    };
    c.remove_finished_segments();
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("spool-commit".into())
        .spawn(move || c.run(rx))
        .map_err(|e| SpoolError::io(dir, e))?;
    Ok(Handle {
        tx,
        live: live_count,
    })
}

fn create_segment(dir: &Path, n: u64) -> Result<File, SpoolError> {
    let path = segment_path(dir, n);
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| SpoolError::io(&path, e))?;
    sync_dir(dir)?;
    Ok(f)
}

impl Committer {
    fn run(mut self, rx: mpsc::Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
    }

    fn commit(&mut self, batch: Vec<Request>) {
        let (appends, dones): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|r| matches!(r.op, Op::Append { .. }));
        let appended = self.append(&appends);
        for r in appends {
            let _ = r.reply.send(appended.clone());
        }
        let done = self.mark_done(&dones);
        self.remove_finished_segments();
        for r in dones {
            let _ = r.reply.send(done.clone());
        }
    }

    fn append(&mut self, reqs: &[Request]) -> Result<(), SpoolError> {
        let mut buf = Vec::new();
        for r in reqs {
            if let Op::Append { bytes, .. } = &r.op {
                buf.extend_from_slice(bytes);
            }
        }
        if buf.is_empty() {
            return Ok(());
        }
        if self.len > 0 && self.len + buf.len() as u64 > self.options.segment_bytes {
            self.rotate()?;
        }
        let written = self
            .file
            .write_all(&buf)
            .and_then(|_| self.file.sync_data());
        if let Err(e) = written {
            // Nothing of a failed batch may be read back later as accepted
            // (the clients are told 4xx): cut it off, and after a failed
            // sync trust this file no further.
            if self.file.set_len(self.len).is_err() || e.kind() != std::io::ErrorKind::StorageFull {
                let _ = self.rotate();
            }
            return Err(SpoolError::io(&segment_path(&self.dir, self.active), e));
        }
        self.len += buf.len() as u64;
        for r in reqs {
            if let Op::Append { id, .. } = &r.op {
                self.live.entry(self.active).or_default().insert(id.clone());
                self.segment_of.insert(id.clone(), self.active);
            }
        }
        self.live_count
            .store(self.segment_of.len(), Ordering::Relaxed);
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), SpoolError> {
        let next = self.active + 1;
        self.file = create_segment(&self.dir, next)?;
        self.active = next;
        self.len = 0;
        self.live.entry(next).or_default();
        Ok(())
    }

    fn mark_done(&mut self, reqs: &[Request]) -> Result<(), SpoolError> {
        let mut lines: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut ids = Vec::new();
        for r in reqs {
            match &r.op {
                Op::Done { id } => {
                    if let Some(&n) = self.segment_of.get(id) {
                        lines
                            .entry(n)
                            .or_default()
                            .extend_from_slice(format!("{id}\n").as_bytes());
                        ids.push((id.clone(), n));
                    }
                }
                Op::DoneRecipients { id, recipients } => {
                    if let Some(&n) = self.segment_of.get(id) {
                        let text = lines.entry(n).or_default();
                        for rcpt in recipients {
                            text.extend_from_slice(format!("{id}\t{rcpt}\n").as_bytes());
                        }
                    }
                }
                Op::Append { .. } => {}
            }
        }
        for (n, text) in lines {
            let path = done_path(&self.dir, n);
            let file = self.done_file(n)?;
            file.write_all(&text)
                .and_then(|_| file.sync_data())
                .map_err(|e| SpoolError::io(&path, e))?;
        }
        for (id, n) in ids {
            self.segment_of.remove(&id);
            if let Some(set) = self.live.get_mut(&n) {
                set.remove(&id);
            }
        }
        self.live_count
            .store(self.segment_of.len(), Ordering::Relaxed);
        Ok(())
    }

    fn done_file(&mut self, n: u64) -> Result<&mut File, SpoolError> {
        if !self.done_files.contains_key(&n) {
            let path = done_path(&self.dir, n);
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| SpoolError::io(&path, e))?;
            sync_dir(&self.dir)?;
            self.done_files.insert(n, f);
        }
        self.done_files
            .get_mut(&n)
            .ok_or_else(|| SpoolError::io(&self.dir, std::io::Error::other("done file vanished")))
    }

    /// Delete segments (other than the active one) with no live message.
    fn remove_finished_segments(&mut self) {
        let finished: Vec<u64> = self
            .live
            .iter()
            .filter(|(n, ids)| **n != self.active && ids.is_empty())
            .map(|(n, _)| *n)
            .collect();
        if finished.is_empty() {
            return;
        }
        for n in finished {
            self.live.remove(&n);
            self.done_files.remove(&n);
            let _ = std::fs::remove_file(segment_path(&self.dir, n));
            let _ = std::fs::remove_file(done_path(&self.dir, n));
        }
        let _ = sync_dir(&self.dir);
    }
}
