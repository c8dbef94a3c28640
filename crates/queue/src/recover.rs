//! Reading a spool directory back: which messages were accepted and not
//! completed. Used at start-up (recovery after a crash) and by the CLI.

use crate::record;
use crate::{SpoolError, StoredMessage};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:08}.seg"))
}

pub(crate) fn done_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:08}.done"))
}

pub(crate) struct Recovered {
    pub pending: Vec<StoredMessage>,
    /// Segment number → ids still live in it (every existing segment is a
    /// key, so empty ones can be removed).
    pub live: BTreeMap<u64, HashSet<String>>,
    /// Largest queue id seen, as a number, so new ids stay above it.
    pub max_id: u64,
}

pub(crate) fn segments(dir: &Path) -> Result<Vec<u64>, SpoolError> {
    let rd = std::fs::read_dir(dir).map_err(|e| SpoolError::io(dir, e))?;
    let mut out: Vec<u64> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".seg")?.parse().ok()
        })
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// Finished messages (`ID`) and finished recipients (`ID<TAB>ADDRESS`)
/// of a segment.
#[derive(Default)]
struct Done {
    messages: HashSet<String>,
    recipients: HashMap<String, HashSet<String>>,
}

fn done_ids(dir: &Path, n: u64) -> Result<Done, SpoolError> {
    let path = done_path(dir, n);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Done::default()),
        Err(e) => return Err(SpoolError::io(&path, e)),
    };
    let mut done = Done::default();
    // Only whole lines count: a torn last line was never acknowledged.
    let lines = bytes
        .split_inclusive(|&b| b == b'\n')
        .filter_map(|l| l.strip_suffix(b"\n"))
        .filter_map(|l| std::str::from_utf8(l).ok());
    for line in lines {
        match line.split_once('\t') {
            Some((id, rcpt)) => {
                done.recipients
                    .entry(id.to_owned())
                    .or_default()
                    .insert(rcpt.to_owned());
            }
            None => {
                done.messages.insert(line.to_owned());
            }
        }
    }
    Ok(done)
}

pub(crate) fn scan(dir: &Path) -> Result<Recovered, SpoolError> {
    let mut r = Recovered {
        pending: Vec::new(),
        live: BTreeMap::new(),
        max_id: 0,
    };
    for n in segments(dir)? {
        let done = done_ids(dir, n)?;
        let path = segment_path(dir, n);
        let bytes = std::fs::read(&path).map_err(|e| SpoolError::io(&path, e))?;
        let live = r.live.entry(n).or_default();
        let mut at = 0;
        while let Some((mut envelope, data, len)) = record::decode(&bytes[at..]) {
            at += len;
            if let Ok(id) = u64::from_str_radix(&envelope.id, 16) {
                r.max_id = r.max_id.max(id);
            }
            if let Some(finished) = done.recipients.get(&envelope.id) {
                envelope
                    .recipients
                    .retain(|rc| !finished.contains(&rc.address));
            }
            if done.messages.contains(&envelope.id) || !live.insert(envelope.id.clone()) {
                continue;
            }
            r.pending.push(StoredMessage {
                envelope,
                data: Arc::new(data.to_vec()),
            });
        }
    }
    Ok(r)
}

pub(crate) fn mark_done(dir: &Path, id: &str) -> Result<bool, SpoolError> {
    let r = scan(dir)?;
    let Some((&n, _)) = r.live.iter().find(|(_, ids)| ids.contains(id)) else {
        return Ok(false);
    };
    let path = done_path(dir, n);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| SpoolError::io(&path, e))?;
    f.write_all(format!("{id}\n").as_bytes())
        .and_then(|_| f.sync_data())
        .map_err(|e| SpoolError::io(&path, e))?;
    sync_dir(dir)?;
    Ok(true)
}

/// Make a directory's entries (created, renamed, removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SpoolError::io(dir, e))
}
