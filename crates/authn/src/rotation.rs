//! DKIM key rotation (`dkim rotate`, `activate`, `retire`): a new key
//! waits in `DOMAIN/pending/` until DNS serves its record, then signs,
//! and the keys that signed before wait in `DOMAIN/retired/` (still
//! published) until their grace period is over. File moves only: what a
//! key is and how it signs is `keys.rs`; checking DNS is the caller's.

use crate::keys::{
    DkimAlgorithm, KeyError, KeyFile, checked_label, generate_into, io, public_keys,
};
use std::path::{Path, PathBuf};

/// Keys made by `dkim rotate`, not signing until DNS serves their record.
pub(crate) const PENDING: &str = "pending";
/// Keys that signed before a rotation, still listed by `dns-records`.
pub(crate) const RETIRED: &str = "retired";

/// `dkim rotate`: a new key for `domain` under `pending/`; the domain's
/// current keys keep signing until [`activate`].
pub fn rotate_key(
    dkim_dir: &Path,
    domain: &str,
    selector: &str,
    algorithm: DkimAlgorithm,
) -> Result<String, KeyError> {
    let domain = checked_label(domain)?;
    if selector_taken(&dkim_dir.join(&domain), selector)? {
        return Err(KeyError::Rotation(format!(
            "selector {selector} of {domain} exists already"
        )));
    }
    generate_into(
        &dkim_dir.join(&domain).join(PENDING),
        &domain,
        selector,
        algorithm,
    )
}

/// Whether a key of the domain directory `dir` signs, waits or is
/// retired under `selector`: a selector is never used twice.
fn selector_taken(dir: &Path, selector: &str) -> Result<bool, KeyError> {
    for d in [dir.to_path_buf(), dir.join(PENDING), dir.join(RETIRED)] {
        if public_keys(&d)?.iter().any(|(s, _, _)| s == selector) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The `p=` a pending key's record must carry for [`activate`].
pub fn pending_public_key(
    dkim_dir: &Path,
    domain: &str,
    selector: &str,
) -> Result<String, KeyError> {
    let domain = checked_label(domain)?;
    public_keys(&dkim_dir.join(&domain).join(PENDING))?
        .into_iter()
        .find(|(s, _, _)| s == selector)
        .map(|(_, _, p)| p)
        .ok_or_else(|| {
            KeyError::Rotation(format!(
                "no pending key {selector} for {domain} (dkim rotate first)"
            ))
        })
}

/// Switch `domain`'s signing to its pending `selector` (the caller has
/// checked that DNS serves its record): the key moves in, the keys that
/// signed so far move to `retired/` (dated now). Returns their selectors.
pub fn activate(dkim_dir: &Path, domain: &str, selector: &str) -> Result<Vec<String>, KeyError> {
    let domain = checked_label(domain)?;
    let dir = dkim_dir.join(&domain);
    pending_public_key(dkim_dir, &domain, selector)?;
    let retired_dir = dir.join(RETIRED);
    std::fs::create_dir_all(&retired_dir).map_err(|e| io(&retired_dir, e))?;
    let mut retired = Vec::new();
    for path in key_files(&dir)? {
        let Some(f) = KeyFile::read(&path)? else {
            continue;
        };
        let to = retired_dir.join(path.file_name().unwrap_or_default());
        std::fs::rename(&path, &to).map_err(|e| io(&path, e))?;
        // The retirement date is the file's modification time.
        let touched = std::fs::File::options()
            .write(true)
            .open(&to)
            .and_then(|h| h.set_modified(std::time::SystemTime::now()));
        touched.map_err(|e| io(&to, e))?;
        retired.push(f.selector);
    }
    for path in key_files(&dir.join(PENDING))? {
        if KeyFile::read(&path)?.is_some_and(|f| f.selector == selector) {
            let to = dir.join(path.file_name().unwrap_or_default());
            std::fs::rename(&path, &to).map_err(|e| io(&path, e))?;
        }
    }
    Ok(retired)
}

/// The selectors of `domain`'s pending keys.
pub fn pending_selectors(dkim_dir: &Path, domain: &str) -> Result<Vec<String>, KeyError> {
    let domain = checked_label(domain)?;
    Ok(public_keys(&dkim_dir.join(&domain).join(PENDING))?
        .into_iter()
        .map(|(s, _, _)| s)
        .collect())
}

/// Whether one of the TXT records at a selector carries public key `p`
/// (spaces inside `p=` ignored, as RFC 6376 §3.6.1 allows).
pub fn record_carries_key(txts: &[String], p: &str) -> bool {
    txts.iter().any(|txt| {
        txt.split(';')
            .filter_map(|f| f.trim().strip_prefix("p="))
            .any(|v| v.split_whitespace().collect::<String>() == p)
    })
}

/// `dkim retire`: delete the retired keys of `domain` retired at least
/// `grace` ago; the selectors removed.
pub fn retire(
    dkim_dir: &Path,
    domain: &str,
    grace: std::time::Duration,
) -> Result<Vec<String>, KeyError> {
    let domain = checked_label(domain)?;
    let mut removed = Vec::new();
    for path in key_files(&dkim_dir.join(&domain).join(RETIRED))? {
        let Some(f) = KeyFile::read(&path)? else {
            continue;
        };
        let age = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default();
        if age >= grace {
            std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
            removed.push(f.selector);
        }
    }
    Ok(removed)
}

/// Automatic rotation (`[submission] dkim_rotate_days`): when `domain`
/// has no key waiting and its newest signing key is at least `every`
/// old at `now`, a new key is made under `pending/` with selector
/// `base` (the caller dates it), or `base` and a letter when that is
/// taken, in the same algorithm; the record to publish, or None when no
/// rotation is due. Signing switches only once DNS serves it, as after
/// `dkim rotate`.
pub fn rotate_if_due(
    dkim_dir: &Path,
    domain: &str,
    every: std::time::Duration,
    now: std::time::SystemTime,
    base: &str,
) -> Result<Option<String>, KeyError> {
    if !pending_selectors(dkim_dir, domain)?.is_empty() {
        return Ok(None);
    }
    let mut newest: Option<(std::time::SystemTime, DkimAlgorithm)> = None;
    for path in key_files(&dkim_dir.join(checked_label(domain)?))? {
        let Some(f) = KeyFile::read(&path)? else {
            continue;
        };
        let made = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .map_err(|e| io(&path, e))?;
        if newest.is_none_or(|(t, _)| made > t) {
            newest = Some((made, f.algorithm()));
        }
    }
    let Some((made, algorithm)) = newest else {
        return Ok(None);
    };
    if now.duration_since(made).unwrap_or_default() < every {
        return Ok(None);
    }
    let selector = (0..26u8)
        .map(|i| match i {
            0 => base.to_owned(),
            i => format!("{base}{}", (b'a' + i) as char),
        })
        .find(|s| !selector_taken(&dkim_dir.join(domain), s).unwrap_or(true))
        .ok_or_else(|| KeyError::Rotation(format!("no free selector for {domain} today")))?;
    rotate_key(dkim_dir, domain, &selector, algorithm).map(Some)
}

fn key_files(dir: &Path) -> Result<Vec<PathBuf>, KeyError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    Ok(entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{generate_key, published_records};

    fn signing_selectors(dir: &Path) -> Vec<String> {
        public_keys(&dir.join("example.test"))
            .unwrap()
            .into_iter()
            .map(|(s, _, _)| s)
            .collect()
    }

    #[test]
    fn a_rotated_key_signs_only_once_activated_and_the_old_one_is_retired() {
        let dir = std::env::temp_dir().join(format!("pc-dkim-rotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        generate_key(&dir, "example.test", "s1", DkimAlgorithm::Ed25519).unwrap();
        let record = rotate_key(&dir, "example.test", "s2", DkimAlgorithm::Ed25519).unwrap();
        assert!(
            record.starts_with("s2._domainkey.example.test."),
            "{record}"
        );
        assert_eq!(signing_selectors(&dir), ["s1"]);
        let listed = published_records(&dir, "example.test").unwrap();
        assert!(
            listed
                .iter()
                .any(|r| r.starts_with("s2._") && r.contains("; pending")),
            "{listed:?}"
        );
        assert!(
            rotate_key(&dir, "example.test", "s1", DkimAlgorithm::Ed25519).is_err(),
            "s1 is taken"
        );
        assert_eq!(activate(&dir, "example.test", "s2").unwrap(), ["s1"]);
        assert_eq!(signing_selectors(&dir), ["s2"]);
        let listed = published_records(&dir, "example.test").unwrap();
        assert!(
            listed
                .iter()
                .any(|r| r.starts_with("s1._") && r.contains("; retired")),
            "{listed:?}"
        );
        assert!(
            retire(&dir, "example.test", std::time::Duration::from_secs(3600))
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            retire(&dir, "example.test", std::time::Duration::ZERO).unwrap(),
            ["s1"]
        );
        assert_eq!(published_records(&dir, "example.test").unwrap().len(), 1);
    }

    #[test]
    fn automatic_rotation_waits_for_the_key_to_age_and_for_the_pending_one() {
        let dir = std::env::temp_dir().join(format!("pc-dkim-auto-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        generate_key(&dir, "example.test", "s1", DkimAlgorithm::Ed25519).unwrap();
        let week = std::time::Duration::from_secs(7 * 86_400);
        let now = std::time::SystemTime::now();
        let due = |at| rotate_if_due(&dir, "example.test", week, at, "p20261130").unwrap();
        assert_eq!(due(now), None);
        let record = due(now + week).unwrap();
        assert!(
            record.starts_with("p20261130._domainkey.example.test."),
            "{record}"
        );
        assert_eq!(
            signing_selectors(&dir),
            ["s1"],
            "s1 signs until DNS serves the record"
        );
        assert_eq!(due(now + week), None, "one pending key at a time");
    }
}
