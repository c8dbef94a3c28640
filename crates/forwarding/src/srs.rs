//! The Sender Rewriting Scheme (Shevek's SRS, as in libsrs2 and
//! postsrsd): forwarding `user@example.com` from our host gives the
//! envelope sender
//!
//! ```text
//! SRS0=HHHHHH=TT=example.com=user@forwarder.example
//! ```
//!
//! where TT is the day (base32, modulo 1024) and HHHHHH a keyed hash
//! (HMAC-SHA256, base32) over TT, the domain and the local part. A
//! bounce to that address is checked (hash with any current or older
//! secret, age within the limit) and returned to `user@example.com`.
//! Forwarding an address another forwarder already rewrote gives SRS1,
//! which points back to that forwarder rather than nesting.
//!
//! Hashes compare without regard to case: some MTAs lower-case local
//! parts, and base32 survives that.

use ring::hmac;

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const HASH_CHARS: usize = 6;
const DAY: u64 = 86_400;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SrsError {
    #[error("not an SRS address")]
    NotSrs,
    #[error("the SRS address is malformed")]
    Malformed,
    #[error("the SRS address's hash does not match (forged)")]
    BadHash,
    #[error("the SRS address has expired")]
    Expired,
}

/// The secrets (newest first: the first signs, all verify), our domain,
/// and how long an address stays valid.
pub struct Srs {
    keys: Vec<hmac::Key>,
    domain: String,
    max_age_days: u64,
}

fn base32(bytes: &[u8], chars: usize) -> String {
    let mut out = String::with_capacity(chars);
    let mut acc: u64 = 0;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | u64::from(*b);
        bits += 8;
        while bits >= 5 && out.len() < chars {
            bits -= 5;
            out.push(BASE32[((acc >> bits) & 31) as usize] as char);
        }
    }
    out
}

fn timestamp(now: u64) -> String {
    let day = (now / DAY) % 1024;
    let mut s = String::new();
    s.push(BASE32[(day >> 5) as usize] as char);
    s.push(BASE32[(day & 31) as usize] as char);
    s
}

fn decode_timestamp(tt: &str) -> Option<u64> {
    let mut v = 0u64;
    if tt.len() != 2 {
        return None;
    }
    for c in tt.bytes() {
        let i = BASE32.iter().position(|b| *b == c.to_ascii_uppercase())?;
        v = (v << 5) | i as u64;
    }
    Some(v)
}

impl Srs {
    /// `secrets`: newest first; at least one.
    pub fn new(secrets: &[Vec<u8>], domain: &str, max_age_days: u64) -> Srs {
        Srs {
            keys: secrets
                .iter()
                .map(|s| hmac::Key::new(hmac::HMAC_SHA256, s))
                .collect(),
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            max_age_days,
        }
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    fn hash_with(key: &hmac::Key, parts: &[&str]) -> String {
        let mut ctx = hmac::Context::with_key(key);
        for p in parts {
            ctx.update(p.to_ascii_lowercase().as_bytes());
            ctx.update(b"\0");
        }
        base32(ctx.sign().as_ref(), HASH_CHARS)
    }

    fn sign(&self, parts: &[&str]) -> String {
        self.keys
            .first()
            .map(|k| Self::hash_with(k, parts))
            .unwrap_or_default()
    }

    fn verify(&self, hash: &str, parts: &[&str]) -> bool {
        self.keys
            .iter()
            .any(|k| Self::hash_with(k, parts).eq_ignore_ascii_case(hash))
    }

    /// The envelope sender for forwarding a message from `sender`. The
    /// null sender stays null; our own SRS addresses are not wrapped again.
    pub fn forward(&self, sender: &str, now: u64) -> String {
        let Some((local, domain)) = sender.rsplit_once('@') else {
            return sender.to_owned();
        };
        if domain.eq_ignore_ascii_case(&self.domain) && is_srs(local) {
            return sender.to_owned();
        }
        if let Some(rest) =
            strip_prefix_ci(local, "SRS0").and_then(|r| r.strip_prefix(['=', '-', '+']))
        {
            // Already rewritten by `domain`: SRS1 points back to it.
            let hash = self.sign(&[domain, rest]);
            return format!("SRS1={hash}={domain}=={rest}@{}", self.domain);
        }
        if let Some(rest) =
            strip_prefix_ci(local, "SRS1").and_then(|r| r.strip_prefix(['=', '-', '+']))
        {
            // SRS1 from elsewhere: keep its first hop, re-sign for us.
            if let Some((_, tail)) = rest.split_once('=')
                && let Some((hop, srs0)) = tail.split_once("==")
            {
                let hash = self.sign(&[hop, srs0]);
                return format!("SRS1={hash}={hop}=={srs0}@{}", self.domain);
            }
        }
        let tt = timestamp(now);
        let hash = self.sign(&[&tt, domain, local]);
        format!("SRS0={hash}={tt}={domain}={local}@{}", self.domain)
    }

    /// Where a message to one of our SRS addresses goes back to.
    pub fn reverse(&self, address: &str, now: u64) -> Result<String, SrsError> {
        let (local, domain) = address.rsplit_once('@').ok_or(SrsError::NotSrs)?;
        if !domain.eq_ignore_ascii_case(&self.domain) || !is_srs(local) {
            return Err(SrsError::NotSrs);
        }
        // is_srs checked the ASCII "SRSn" and separator: byte 5 is a
        // character boundary.
        let rest = &local[5..];
        if strip_prefix_ci(local, "SRS1").is_some() {
            let (hash, tail) = rest.split_once('=').ok_or(SrsError::Malformed)?;
            let (hop, srs0) = tail.split_once("==").ok_or(SrsError::Malformed)?;
            if !self.verify(hash, &[hop, srs0]) {
                return Err(SrsError::BadHash);
            }
            return Ok(format!("SRS0={srs0}@{hop}"));
        }
        let mut fields = rest.splitn(4, '=');
        let (Some(hash), Some(tt), Some(orig_domain), Some(orig_local)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(SrsError::Malformed);
        };
        if !self.verify(hash, &[tt, orig_domain, orig_local]) {
            return Err(SrsError::BadHash);
        }
        let stamped = decode_timestamp(tt).ok_or(SrsError::Malformed)?;
        let today = (now / DAY) % 1024;
        let age = (today + 1024 - stamped) % 1024;
        if age > self.max_age_days {
            return Err(SrsError::Expired);
        }
        Ok(format!("{orig_local}@{orig_domain}"))
    }
}

/// `s` without `prefix` (ASCII, any case). Slices only at character
/// boundaries: local parts from the network may be UTF-8 (found by
/// fuzz/srs_reverse).
fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Whether a local part looks like an SRS address (`SRS0=` or `SRS1=`).
pub fn is_srs(local: &str) -> bool {
    let rest = strip_prefix_ci(local, "SRS0").or_else(|| strip_prefix_ci(local, "SRS1"));
    rest.is_some_and(|r| r.len() > 1 && r.starts_with(['=', '-', '+']))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_000_000;

    fn srs() -> Srs {
        Srs::new(&[b"current".to_vec(), b"previous".to_vec()], "fwd.test", 21)
    }

    #[test]
    fn forwarding_rewrites_into_our_domain_and_reverses() {
        let s = srs();
        let rewritten = s.forward("alice@origin.test", NOW);
        assert!(
            rewritten.starts_with("SRS0=") && rewritten.ends_with("=origin.test=alice@fwd.test"),
            "{rewritten}"
        );
        assert_eq!(
            s.reverse(&rewritten, NOW + 3 * DAY).unwrap(),
            "alice@origin.test"
        );
        assert_eq!(
            s.reverse(&rewritten.to_ascii_lowercase(), NOW).unwrap(),
            "alice@origin.test"
        );
    }

    #[test]
    fn null_sender_and_our_own_srs_are_left_alone() {
        let s = srs();
        assert_eq!(s.forward("", NOW), "");
        let once = s.forward("a@o.test", NOW);
        assert_eq!(s.forward(&once, NOW), once);
    }

    #[test]
    fn forged_and_expired_addresses_are_refused() {
        let s = srs();
        let good = s.forward("alice@origin.test", NOW);
        let forged = good.replacen("alice", "mallory", 1);
        assert_eq!(s.reverse(&forged, NOW), Err(SrsError::BadHash));
        assert_eq!(s.reverse(&good, NOW + 22 * DAY), Err(SrsError::Expired));
        assert_eq!(s.reverse("SRS0=zz@fwd.test", NOW), Err(SrsError::Malformed));
        assert_eq!(s.reverse("bob@fwd.test", NOW), Err(SrsError::NotSrs));
        let other = Srs::new(&[b"someone else".to_vec()], "fwd.test", 21);
        assert_eq!(other.reverse(&good, NOW), Err(SrsError::BadHash));
    }

    #[test]
    fn addresses_signed_with_an_older_secret_stay_valid_after_rotation() {
        let before = Srs::new(&[b"previous".to_vec()], "fwd.test", 21);
        let issued = before.forward("alice@origin.test", NOW);
        assert_eq!(srs().reverse(&issued, NOW).unwrap(), "alice@origin.test");
    }

    #[test]
    fn an_srs0_from_another_forwarder_becomes_srs1_and_goes_back_to_it() {
        let s = srs();
        let theirs = "SRS0=ABCD=QR=origin.test=alice@other-fwd.test";
        let ours = s.forward(theirs, NOW);
        assert_eq!(
            ours,
            format!(
                "SRS1={}=other-fwd.test==ABCD=QR=origin.test=alice@fwd.test",
                ours[5..11].to_owned()
            )
        );
        assert_eq!(s.reverse(&ours, NOW).unwrap(), theirs);
    }

    #[test]
    fn utf8_local_parts_are_refused_not_panicked_on() {
        // Found by fuzz/srs_reverse: "SRS" then a two-byte character.
        let s = srs();
        let input = "SRS\u{3cf}\u{b8}ABC=F=QRSR@fwd.test";
        assert_eq!(s.reverse(input, NOW), Err(SrsError::NotSrs));
        let _ = s.forward(input, NOW);
        assert!(!is_srs("SRS\u{e9}x"));
        assert!(!is_srs("\u{e9}\u{e9}\u{e9}"));
    }

    #[test]
    fn timestamps_wrap_around_1024_days() {
        let s = srs();
        let day_1023 = 1023 * DAY;
        let issued = s.forward("a@o.test", day_1023);
        assert_eq!(
            s.reverse(&issued, 1024 * DAY + 2 * DAY).unwrap(),
            "a@o.test"
        );
    }
}
