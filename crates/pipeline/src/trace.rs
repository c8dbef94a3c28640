//! The submission log (spamops §3.1, "Submission Accountability"): one JSON
//! line per submitted message, in a file per UTC day, kept for the
//! configured number of days and searched by `portcullis trace`.

use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One submitted message, as the log records it.
pub struct SubmissionRecord<'a> {
    pub queue_id: &'a str,
    pub message_id: &'a str,
    pub account: &'a str,
    pub client: &'a str,
    pub helo: &'a str,
    pub mail_from: &'a str,
    pub recipients: Vec<String>,
    pub size: usize,
    pub tls: &'a str,
}

#[derive(Clone, Debug)]
pub struct SubmissionLog {
    dir: PathBuf,
    retention: Duration,
}

impl SubmissionLog {
    pub fn new(data_dir: &Path, retention_days: u32) -> SubmissionLog {
        SubmissionLog {
            dir: data_dir.join("log"),
            retention: Duration::from_secs(u64::from(retention_days) * 86400),
        }
    }

    pub fn append(&self, r: &SubmissionRecord<'_>, now: SystemTime) -> std::io::Result<()> {
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let line = json!({
            "time": iso8601(secs),
            "queue_id": r.queue_id,
            "message_id": r.message_id,
            "account": r.account,
            "client": r.client,
            "helo": r.helo,
            "mail_from": r.mail_from,
            "recipients": r.recipients,
            "recipient_count": r.recipients.len(),
            "size": r.size,
            "tls": r.tls,
        });
        std::fs::create_dir_all(&self.dir)?;
        let path = self
            .dir
            .join(format!("submission-{}.jsonl", &iso8601(secs)[..10]));
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        // One write per line, so concurrent appends never interleave.
        f.write_all(format!("{line}\n").as_bytes())
    }

    /// Delete day files older than the retention period.
    pub fn expire(&self, now: SystemTime) -> std::io::Result<usize> {
        let cutoff = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_sub(self.retention.as_secs());
        let cutoff_day = &iso8601(cutoff)[..10];
        let mut removed = 0;
        for path in self.files()? {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let day = name
                .trim_start_matches("submission-")
                .trim_end_matches(".jsonl");
            if day < cutoff_day {
                std::fs::remove_file(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn files(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("submission-") && n.ends_with(".jsonl"))
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        v.sort();
        Ok(v)
    }

    /// Records whose queue id, Message-ID (with or without `<>`) or account
    /// is `query`.
    pub fn search(&self, query: &str) -> std::io::Result<Vec<Value>> {
        let q = query
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_ascii_lowercase();
        let mut hits = Vec::new();
        for path in self.files()? {
            for line in std::fs::read_to_string(&path)?.lines() {
                let Ok(v) = serde_json::from_str::<Value>(line) else {
                    continue;
                };
                let field = |k: &str| {
                    v.get(k).and_then(Value::as_str).map(|s| {
                        s.trim_start_matches('<')
                            .trim_end_matches('>')
                            .to_ascii_lowercase()
                    })
                };
                if ["queue_id", "message_id", "account"]
                    .iter()
                    .any(|k| field(k).as_deref() == Some(q.as_str()))
                {
                    hits.push(v);
                }
            }
        }
        Ok(hits)
    }
}

pub use portcullis_config::clock::iso8601;

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(id: &'a str, mid: &'a str) -> SubmissionRecord<'a> {
        SubmissionRecord {
            queue_id: id,
            message_id: mid,
            account: "alice@example.test",
            client: "192.0.2.1",
            helo: "laptop",
            mail_from: "alice@example.test",
            recipients: vec!["bob@example.test".into()],
            size: 10,
            tls: "TLSv1.3",
        }
    }

    #[test]
    fn search_by_id_message_id_or_account_and_expire_old_days() {
        let dir = std::env::temp_dir().join(format!("pc-trace-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = SubmissionLog::new(&dir, 7);
        let day = 86400;
        let now = UNIX_EPOCH + Duration::from_secs(1_795_520_211);
        log.append(&record("A1", "<m1@x>"), now - Duration::from_secs(10 * day))
            .unwrap();
        log.append(&record("B2", "<m2@x>"), now).unwrap();
        assert_eq!(log.search("B2").unwrap().len(), 1);
        assert_eq!(log.search("m2@x").unwrap().len(), 1);
        assert_eq!(log.search("<M1@X>").unwrap().len(), 1);
        assert_eq!(log.search("alice@example.test").unwrap().len(), 2);
        assert_eq!(log.expire(now).unwrap(), 1);
        assert_eq!(log.search("alice@example.test").unwrap().len(), 1);
    }
}
