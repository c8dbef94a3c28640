//! The durable spool: one way into the queue, and the promise behind every
//! `250` after DATA, which is that the message is on disk and fsync'd.
//!
//! Messages are appended to a segment file; completions to the segment's
//! `.done` file. A single committer thread takes every request waiting at
//! the moment, writes them all, and makes them durable with one `fdatasync`
//! per touched file: messages that finish DATA together share one sync
//! (group commit), which is how the spool outruns a file-per-message queue
//! on the same disk. A segment is deleted once every message in it is done.
//!
//! The spool knows nothing of SMTP or delivery: it stores envelopes and
//! bytes, and gives them back after a crash.

use crate::record::{self, Envelope};
use crate::{committer, recover};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: Arc<std::io::Error>,
    },
    #[error("the spool committer has stopped")]
    Stopped,
}

impl SpoolError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> SpoolError {
        SpoolError::Io {
            path: path.to_owned(),
            source: Arc::new(source),
        }
    }

    /// True when the error means the disk is full (ENOSPC/EDQUOT): the SMTP
    /// answer is then 452 4.3.1 rather than 451 4.3.0.
    pub fn is_storage_full(&self) -> bool {
        match self {
            SpoolError::Io { source, .. } => matches!(source.raw_os_error(), Some(28) | Some(122)),
            SpoolError::Stopped => false,
        }
    }
}

/// A message as the spool holds it.
#[derive(Clone, Debug)]
pub struct StoredMessage {
    pub envelope: Envelope,
    /// The full message with our trace headers, CRLF line endings.
    pub data: Arc<Vec<u8>>,
}

/// Tuning knobs of the spool.
#[derive(Clone, Debug)]
pub struct SpoolOptions {
    /// Start a new segment once the active one is this large.
    pub segment_bytes: u64,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions {
            segment_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Handle to an open spool. Cheap to clone.
#[derive(Clone)]
pub struct Spool {
    dir: PathBuf,
    committer: committer::Handle,
    last_id: Arc<AtomicU64>,
    /// Ids of the messages accepted and not completed. Ids are the clock
    /// in microseconds at acceptance, in hex of one width, so the first is
    /// the oldest message: `/metrics` reads its age here instead of
    /// scanning the spool on every scrape.
    live_ids: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
}

impl Spool {
    /// Open (or create) the spool in `dir` and return the messages that
    /// were accepted but not completed before the last stop.
    pub fn open(
        dir: &Path,
        options: SpoolOptions,
    ) -> Result<(Spool, Vec<StoredMessage>), SpoolError> {
        std::fs::create_dir_all(dir).map_err(|e| SpoolError::io(dir, e))?;
        let recovered = recover::scan(dir)?;
        let pending = recovered.pending;
        let committer = committer::start(dir, options, recovered.live)?;
        let live_ids = pending.iter().map(|m| m.envelope.id.clone()).collect();
        let spool = Spool {
            dir: dir.to_owned(),
            committer,
            last_id: Arc::new(AtomicU64::new(recovered.max_id)),
            live_ids: Arc::new(std::sync::Mutex::new(live_ids)),
        };
        Ok((spool, pending))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new queue id: 13 upper-case hex digits, strictly increasing, from
    /// the clock in microseconds so ids stay unique across restarts.
    pub fn new_id(&self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let mut prev = self.last_id.load(Ordering::Relaxed);
        loop {
            let next = now.max(prev + 1);
            match self.last_id.compare_exchange_weak(
                prev,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return format!("{next:013X}"),
                Err(p) => prev = p,
            }
        }
    }

    /// Store the message durably. Returns once it is on disk.
    pub async fn commit(&self, envelope: Envelope, data: Arc<Vec<u8>>) -> Result<(), SpoolError> {
        let bytes = record::encode(&envelope, &data);
        let id = envelope.id;
        self.committer
            .request(committer::Op::Append {
                id: id.clone(),
                bytes,
            })
            .await?;
        self.live_ids().insert(id);
        Ok(())
    }

    /// Record durably that the message needs no more work (delivered,
    /// bounced or deleted). Unknown ids are ignored.
    pub async fn complete(&self, id: &str) -> Result<(), SpoolError> {
        self.committer
            .request(committer::Op::Done { id: id.to_owned() })
            .await?;
        self.live_ids().remove(id);
        Ok(())
    }

    /// Record durably that these recipients of message `id` are finished
    /// (delivered or bounced): after a crash they are not tried again, so
    /// a recipient whose next hop said 250 is not delivered twice.
    pub async fn complete_recipients(
        &self,
        id: &str,
        recipients: Vec<String>,
    ) -> Result<(), SpoolError> {
        if recipients.is_empty() {
            return Ok(());
        }
        self.committer
            .request(committer::Op::DoneRecipients {
                id: id.to_owned(),
                recipients,
            })
            .await
    }

    /// Number of messages accepted and not yet completed.
    pub fn live_count(&self) -> usize {
        self.committer.live_count()
    }

    /// When the oldest message still in the spool was accepted, in
    /// microseconds since the epoch (its id), or None when it is empty.
    pub fn oldest_accepted_us(&self) -> Option<u64> {
        let ids = self.live_ids();
        ids.first().and_then(|id| u64::from_str_radix(id, 16).ok())
    }

    fn live_ids(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<String>> {
        self.live_ids.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Read-only look at a spool directory, for `portcullis queue list|show`
/// (works whether or not a server is running).
pub fn inspect(dir: &Path) -> Result<Vec<StoredMessage>, SpoolError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    Ok(recover::scan(dir)?.pending)
}

/// What the delivery worker last knew about a deferred message, for
/// `portcullis queue show`: attempts so far and each waiting recipient's
/// last reply. Informational only (written without fsync); recovery never
/// reads it.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct DeliveryStatus {
    pub attempts: u32,
    /// Seconds since the epoch of the next attempt.
    pub next_attempt: u64,
    /// (recipient, last reply or error).
    pub waiting: Vec<(String, String)>,
}

fn status_path(dir: &Path, id: &str) -> PathBuf {
    dir.join("status").join(format!("{id}.json"))
}

/// Record the status of a deferred message (replaced atomically).
pub fn write_status(dir: &Path, id: &str, status: &DeliveryStatus) -> Result<(), SpoolError> {
    let path = status_path(dir, id);
    let parent = dir.join("status");
    std::fs::create_dir_all(&parent).map_err(|e| SpoolError::io(&parent, e))?;
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec(status).unwrap_or_default();
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| SpoolError::io(&path, e))
}

/// The last recorded status of a message, if it was ever deferred.
pub fn read_status(dir: &Path, id: &str) -> Option<DeliveryStatus> {
    std::fs::read(status_path(dir, id))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// Forget a message's status (it is done).
pub fn clear_status(dir: &Path, id: &str) {
    let _ = std::fs::remove_file(status_path(dir, id));
}

/// Whether the operator put message `id` on hold.
pub fn is_held(dir: &Path, id: &str) -> bool {
    dir.join("hold").join(id).exists()
}

/// Put a message on hold, or release it, without a running server
/// (`portcullis queue hold|release`). Returns false when no such message
/// is queued.
pub fn set_held(dir: &Path, id: &str, held: bool) -> Result<bool, SpoolError> {
    if !inspect(dir)?.iter().any(|m| m.envelope.id == id) {
        return Ok(false);
    }
    mark_held(dir, id, held)?;
    Ok(true)
}

/// Write the hold mark `hold/ID` holding why, durably.
pub(crate) fn mark_held_because(dir: &Path, id: &str, reason: &str) -> Result<(), SpoolError> {
    let hold_dir = dir.join("hold");
    std::fs::create_dir_all(&hold_dir).map_err(|e| SpoolError::io(&hold_dir, e))?;
    let marker = hold_dir.join(id);
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&marker)?;
        f.write_all(reason.as_bytes())?;
        f.sync_all()
    };
    write().map_err(|e| SpoolError::io(&marker, e))?;
    recover::sync_dir(&hold_dir)?;
    Ok(())
}

/// Why message `id` is held, when the hold says (a milter's quarantine).
pub fn hold_reason(dir: &Path, id: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("hold").join(id)).ok()?;
    (!text.is_empty()).then_some(text)
}

/// Write or remove the hold mark `hold/ID`, durably.
pub(crate) fn mark_held(dir: &Path, id: &str, held: bool) -> Result<(), SpoolError> {
    let hold_dir = dir.join("hold");
    std::fs::create_dir_all(&hold_dir).map_err(|e| SpoolError::io(&hold_dir, e))?;
    let marker = hold_dir.join(id);
    if held {
        std::fs::File::create(&marker).map_err(|e| SpoolError::io(&marker, e))?;
    } else {
        let _ = std::fs::remove_file(&marker);
    }
    recover::sync_dir(&hold_dir)?;
    Ok(())
}

/// Mark a message done without a running server (`portcullis queue delete`).
/// Returns false when no such message is queued.
pub fn delete_offline(dir: &Path, id: &str) -> Result<bool, SpoolError> {
    recover::mark_done(dir, id)
}
