//! The report mailbox's store, the one part of this crate that writes
//! files: the router hands over each message for `[dmarc]
//! report_mailbox` once it is durable in the spool; it is read by the
//! plain logic beside this file (off the async threads) and kept under
//! `DATA/reports/`:
//!
//! * a report: `<id>.eml` (the message as received, for the operator or
//!   another tool such as parsedmarc) and `<id>.json` (its summary, the
//!   reporter and when it came), written in that order so a summary
//!   always has its message;
//! * anything else: `malformed/<id>.eml` and `malformed/<id>.reason`
//!   (`key: value` lines: reason, code, sender, received_at).
//!
//! Files are 0600, fsync'd and renamed into place, the directory synced:
//! once the router reports delivery the spool forgets the message, so
//! this copy must survive a crash. `<id>` is the queue id, so a message
//! delivered again after a crash overwrites its own files.

use crate::{Limits, Summary};
use portcullis_config::clock::now_secs;
use portcullis_delivery::{BoxFuture, Parcel, ReportIntake};
use portcullis_metrics::{Counter, Metrics};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::{info, warn};

/// Newest reports (and set-aside messages) `GET /api/reports` reads.
const MAX_LISTED: usize = 200;
/// A summary file larger than this is not ours (`MAX_ROWS` rows make
/// well under a megabyte).
const MAX_SUMMARY_BYTES: u64 = 8 * 1024 * 1024;

#[derive(Clone)]
pub struct ReportStore {
    dir: PathBuf,
    limits: Limits,
    metrics: Arc<Metrics>,
    complaints: Option<Arc<dyn ComplaintSink>>,
}

/// Who hears of each feedback report once it is kept (containment
/// counts it against the account whose message it was). Must return at
/// once.
pub trait ComplaintSink: Send + Sync {
    fn complaint(&self, report_id: &str, arf: &crate::ArfSummary);
}

pub fn reports_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("reports")
}

impl ReportStore {
    pub fn open(
        data_dir: &Path,
        d: &portcullis_config::DmarcSettings,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<ReportStore> {
        let dir = reports_dir(data_dir);
        private_dir(&dir.join("malformed"))?;
        private_dir(&dir)?;
        Ok(ReportStore {
            dir,
            limits: Limits {
                max_bytes: d.report_max_bytes,
                max_ratio: d.report_max_ratio,
            },
            metrics,
            complaints: None,
        })
    }

    /// Feedback reports are handed to `sink` once kept.
    pub fn with_complaints(mut self, sink: Arc<dyn ComplaintSink>) -> ReportStore {
        self.complaints = Some(sink);
        self
    }

    /// Read and keep one message; blocking (file writes, unpacking).
    /// The report read, if it was one.
    fn keep(&self, id: &str, sender: &str, data: &[u8]) -> std::io::Result<Option<Summary>> {
        let id = file_id(id);
        let now = now_secs();
        // The reader is bounded and returns errors, but it reads a
        // stranger's bytes: should it ever panic, the message is still
        // set aside and the server carries on.
        let limits = self.limits;
        let read = match std::panic::catch_unwind(|| crate::read_message(data, limits)) {
            Ok(r) => r.map_err(|e| (e.to_string(), e.code(), e.kind())),
            Err(_) => Err((
                "the report reader failed on this message".into(),
                "reader_failed",
                "unknown",
            )),
        };
        match read {
            Ok(summary) => {
                let record = json!({
                    "id": id, "received_at": now, "sender": sender, "size": data.len(),
                    "report": summary,
                });
                let text = serde_json::to_vec_pretty(&record).map_err(std::io::Error::other)?;
                write_durably(&self.dir, &format!("{id}.eml"), data)?;
                write_durably(&self.dir, &format!("{id}.json"), &text)?;
                sync_dir(&self.dir)?;
                self.count(summary.kind(), "stored");
                info!(event = "report_stored", id = %id, kind = summary.kind(), sender = %sender, reporter = %reporter(&summary));
                return Ok(Some(summary));
            }
            Err((reason, code, kind)) => {
                let dir = self.dir.join("malformed");
                let sender_line = sender.replace(['\r', '\n'], " ");
                let text = format!(
                    "reason: {reason}\ncode: {code}\nsender: {sender_line}\nreceived_at: {now}\n"
                );
                write_durably(&dir, &format!("{id}.eml"), data)?;
                write_durably(&dir, &format!("{id}.reason"), text.as_bytes())?;
                sync_dir(&dir)?;
                self.count(kind, "malformed");
                warn!(event = "report_malformed", id = %id, sender = %sender, code, reason = %reason);
            }
        }
        Ok(None)
    }

    fn count(&self, kind: &str, result: &str) {
        self.metrics.inc(
            Counter::ReportsReceived,
            &[("kind", kind), ("result", result)],
        );
    }
}

impl ReportIntake for ReportStore {
    fn take<'a>(&'a self, parcel: &'a Parcel) -> BoxFuture<'a, Result<(), String>> {
        let store = self.clone();
        let (id, sender, data) = (
            parcel.id.clone(),
            parcel.sender.clone(),
            parcel.data.clone(),
        );
        Box::pin(async move {
            let kept = {
                let (store, id) = (store.clone(), id.clone());
                tokio::task::spawn_blocking(move || store.keep(&id, &sender, &data)).await
            };
            match kept {
                Ok(Ok(Some(Summary::Arf(arf)))) => {
                    if let Some(sink) = &store.complaints {
                        sink.complaint(&file_id(&id), &arf);
                    }
                    Ok(())
                }
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("cannot store the report: {e}")),
                Err(e) => Err(format!("the report intake stopped: {e}")),
            }
        })
    }
}

fn reporter(s: &Summary) -> &str {
    match s {
        Summary::Dmarc(d) => &d.org_name,
        Summary::Tls(t) => &t.org_name,
        Summary::Arf(a) => &a.reporter,
    }
}

/// A queue id as a file name: nothing but `[A-Za-z0-9._-]`, never a
/// leading dot.
fn file_id(id: &str) -> String {
    let s: String = id
        .chars()
        .take(64)
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '_' | '-' => c,
            _ => '_',
        })
        .collect();
    if s.is_empty() { "unnamed".into() } else { s }
}

fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Write, fsync, rename into place (0600): a reader sees the whole file
/// or none.
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    portcullis_state::write_atomically(&dir.join(name), bytes)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// What `GET /api/reports` answers: the newest reports, DMARC and TLS
/// apart, and the messages set aside with their reasons.
pub fn list(data_dir: &Path) -> std::io::Result<Value> {
    let dir = reports_dir(data_dir);
    let (mut dmarc, mut tls, mut arf) = (Vec::new(), Vec::new(), Vec::new());
    for path in newest(&dir, "json")? {
        let Some(record) = read_record(&path) else {
            continue;
        };
        match record
            .get("report")
            .and_then(|r| r.get("kind"))
            .and_then(Value::as_str)
        {
            Some("dmarc") => dmarc.push(flatten(record)),
            Some("tls") => tls.push(flatten(record)),
            Some("arf") => arf.push(flatten(record)),
            _ => {}
        }
    }
    let mut malformed = Vec::new();
    for path in newest(&dir.join("malformed"), "reason")? {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix(": "))
                .unwrap_or("")
                .to_owned()
        };
        let id = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        malformed.push(json!({
            "id": id,
            "reason": field("reason"),
            "code": field("code"),
            "sender": field("sender"),
            "received_at": field("received_at").parse::<u64>().unwrap_or(0),
        }));
    }
    Ok(json!({ "dmarc": dmarc, "tls": tls, "arf": arf, "malformed": malformed }))
}

/// The files of `dir` with extension `ext`, newest first, at most
/// `MAX_LISTED`; none when the directory does not exist yet.
fn newest(dir: &Path, ext: &str) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    Ok(files.into_iter().take(MAX_LISTED).map(|(_, p)| p).collect())
}

fn read_record(path: &Path) -> Option<Value> {
    let len = std::fs::metadata(path).ok()?.len();
    if len > MAX_SUMMARY_BYTES {
        return None;
    }
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// `{id, received_at, sender, size, report: {kind, ...}}` as one object.
fn flatten(mut record: Value) -> Value {
    let report = record.get_mut("report").map(Value::take);
    if let (Some(Value::Object(r)), Some(o)) = (report, record.as_object_mut()) {
        o.remove("report");
        for (k, v) in r {
            if k != "kind" {
                o.insert(k, v);
            }
        }
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &[u8] = include_bytes!("../../reportbox/testdata/dmarc-aggregate.xml");

    fn store(name: &str) -> (ReportStore, PathBuf) {
        let root = std::env::temp_dir().join(format!("pc-reports-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let d = portcullis_config::DmarcSettings::default();
        let s = ReportStore::open(&root, &d, Arc::new(Metrics::default())).unwrap();
        (s, root)
    }

    fn mail(body: &[u8]) -> Vec<u8> {
        let mut m = b"From: r@x.test\r\nContent-Type: text/xml\r\n\r\n".to_vec();
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn a_report_and_a_malformed_message_are_listed_apart() {
        use std::os::unix::fs::PermissionsExt;
        let (s, root) = store("list");
        s.keep("Q/1", "noreply@x.test", &mail(XML)).unwrap();
        s.keep(
            "Q2",
            "noreply@x.test",
            b"Subject: hi\r\n\r\nnot a report\r\n",
        )
        .unwrap();
        let mode = std::fs::metadata(root.join("reports/Q_1.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let v = list(&root).unwrap();
        assert_eq!(v["dmarc"][0]["id"], "Q_1");
        assert_eq!(v["dmarc"][0]["messages"], 15);
        assert_eq!(v["dmarc"][0]["policy"]["domain"], "example.com");
        assert_eq!(v["tls"].as_array().unwrap().len(), 0);
        assert_eq!(v["malformed"][0]["code"], "no_report");
        assert_eq!(v["malformed"][0]["sender"], "noreply@x.test");
        assert!(root.join("reports/malformed/Q2.eml").exists());
        let _ = std::fs::remove_dir_all(&root);
    }
}
