//! Messages that could not be submitted wait in a directory, each as its
//! content (`ID.eml`) and its envelope (`ID.json`, written last: an entry
//! exists once it is there). Every run sends them before anything new.

use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Envelope {
    pub sender: String,
    pub recipients: Vec<String>,
}

pub struct Entry {
    pub envelope: Envelope,
    pub data: Vec<u8>,
    json: PathBuf,
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Keep a message; durable when this returns.
pub fn store(dir: &Path, envelope: &Envelope, data: &[u8]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let id = format!("{stamp}-{}", std::process::id());
    write_synced(&dir.join(format!("{id}.eml")), data)?;
    let tmp = dir.join(format!("{id}.tmp"));
    write_synced(
        &tmp,
        &serde_json::to_vec(envelope).map_err(std::io::Error::other)?,
    )?;
    let json = dir.join(format!("{id}.json"));
    std::fs::rename(&tmp, &json)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(json)
}

/// Every complete entry, oldest first.
pub fn list(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let mut names: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(d) => d.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    names.retain(|p| p.extension().is_some_and(|x| x == "json"));
    names.sort();
    let mut out = Vec::new();
    for json in names {
        let envelope =
            serde_json::from_slice(&std::fs::read(&json)?).map_err(std::io::Error::other)?;
        let data = std::fs::read(json.with_extension("eml"))?;
        out.push(Entry {
            envelope,
            data,
            json,
        });
    }
    Ok(out)
}

pub fn remove(e: &Entry) -> std::io::Result<()> {
    std::fs::remove_file(&e.json)?;
    std::fs::remove_file(e.json.with_extension("eml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_messages_come_back_in_order_until_removed() {
        let dir = std::env::temp_dir().join(format!("pc-outbox-{}", std::process::id()));
        let env = |r: &str| Envelope {
            sender: "a@x.test".into(),
            recipients: vec![r.into()],
        };
        store(&dir, &env("1@x.test"), b"one").unwrap();
        store(&dir, &env("2@x.test"), b"two").unwrap();
        let all = list(&dir).unwrap();
        assert_eq!(
            all.iter().map(|e| e.data.as_slice()).collect::<Vec<_>>(),
            [b"one", b"two"]
        );
        remove(&all[0]).unwrap();
        assert_eq!(list(&dir).unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }
}
