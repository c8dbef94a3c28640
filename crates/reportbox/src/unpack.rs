//! From a message to the report it carries, unpacked: the attachment is
//! found, then gunzipped or unzipped under both limits. RFC 7489 §7.2.1.1
//! has DMARC reports sent as an XML file, gzip (`.xml.gz`) or zip; RFC
//! 8460 §5.3 has TLS-RPT reports as `application/tlsrpt+gzip` or
//! `application/tlsrpt+json`. What the bytes are is told by their magic
//! number, not their label.

use crate::{Limits, Malformed, Summary};
use mail_parser::{MessageParser, MimeHeaders, PartType};
use std::io::{Cursor, Read};

/// Parts of one message tried as reports: a report message has one
/// attachment, perhaps beside a text part explaining it.
const MAX_CANDIDATES: usize = 8;
/// Entries of a zip archive looked at for the report file.
const MAX_ZIP_ENTRIES: usize = 16;
/// However compressible, an attachment may always unpack to this much:
/// a bomb hurts by its size, and a small report with many alike records
/// can be squeezed well past any ratio that stops bombs.
const RATIO_FLOOR: usize = 64 * 1024;

const GZIP_MAGIC: &[u8] = b"\x1f\x8b";
const ZIP_MAGIC: &[u8] = b"PK\x03\x04";

/// The first candidate part that unpacks to a report, or why none did
/// (the first candidate's reason: a report message has one attachment).
pub(crate) fn first_report(message: &[u8], limits: Limits) -> Result<Summary, Malformed> {
    let parsed = MessageParser::new()
        .parse(message)
        .ok_or(Malformed::NotMail)?;
    let mut first_error = None;
    let candidates = parsed
        .parts
        .iter()
        .filter(|p| is_candidate(p))
        .take(MAX_CANDIDATES);
    for part in candidates {
        match unpack(part.contents(), limits).and_then(|p| crate::parse_payload(&p)) {
            Ok(summary) => return Ok(summary),
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    Err(first_error.unwrap_or(Malformed::NoReport))
}

/// A part that may hold a report: one of the report media types, or an
/// attachment named like one.
fn is_candidate(part: &mail_parser::MessagePart<'_>) -> bool {
    if matches!(part.body, PartType::Multipart(_) | PartType::Message(_)) {
        return false;
    }
    let media = part.content_type().map(|ct| {
        let sub = ct.subtype().unwrap_or("");
        format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase()
    });
    let by_type = media.as_deref().is_some_and(|m| {
        matches!(
            m,
            "application/gzip"
                | "application/x-gzip"
                | "application/zip"
                | "application/x-zip"
                | "application/x-zip-compressed"
                | "application/xml"
                | "text/xml"
                | "application/json"
                | "application/tlsrpt+gzip"
                | "application/tlsrpt+json"
                | "application/octet-stream"
        )
    });
    let by_name = part.attachment_name().is_some_and(|n| {
        let n = n.to_ascii_lowercase();
        [".xml", ".gz", ".zip", ".json"]
            .iter()
            .any(|e| n.ends_with(e))
    });
    by_type || by_name
}

/// The attachment's bytes unpacked, under both limits.
pub(crate) fn unpack(bytes: &[u8], limits: Limits) -> Result<Vec<u8>, Malformed> {
    if bytes.starts_with(GZIP_MAGIC) {
        let out = read_capped(
            flate2::read::GzDecoder::new(bytes),
            bytes.len(),
            limits,
            "gzip",
        )?;
        // RFC 1952 lets members follow each other; a report is one file.
        Ok(out)
    } else if bytes.starts_with(ZIP_MAGIC) {
        unzip(bytes, limits)
    } else if bytes.len() > limits.max_bytes {
        Err(Malformed::TooLarge {
            limit: limits.max_bytes,
        })
    } else {
        Ok(bytes.to_vec())
    }
}

/// The first file in the archive (an `.xml` or `.json` one if any comes
/// first): RFC 7489 §7.2.1.1 has one report per archive.
fn unzip(bytes: &[u8], limits: Limits) -> Result<Vec<u8>, Malformed> {
    let bad = |e: zip::result::ZipError| Malformed::Unpack {
        format: "zip",
        why: crate::summary::clip(&e.to_string()),
    };
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(bad)?;
    let n = archive.len().min(MAX_ZIP_ENTRIES);
    let mut chosen = None;
    for i in 0..n {
        let Ok(f) = archive.by_index_raw(i) else {
            continue;
        };
        if !f.is_file() {
            continue;
        }
        let name = f.name().to_ascii_lowercase();
        if name.ends_with(".xml") || name.ends_with(".json") {
            chosen = Some(i);
            break;
        }
        chosen = chosen.or(Some(i));
    }
    let i = chosen.ok_or(Malformed::EmptyArchive)?;
    let file = archive.by_index(i).map_err(bad)?;
    // The declared size is the sender's word; it can only refuse early.
    let cap = cap(bytes.len(), limits);
    if usize::try_from(file.size()).map_or(true, |s| s > cap.0) {
        return Err(over(cap, bytes.len(), limits, usize::MAX));
    }
    read_capped(file, bytes.len(), limits, "zip")
}

/// The most `packed` bytes may unpack to, and whether the ratio (rather
/// than the size limit) sets it.
fn cap(packed: usize, limits: Limits) -> (usize, bool) {
    let by_ratio = packed
        .saturating_mul(limits.max_ratio as usize)
        .max(RATIO_FLOOR);
    if by_ratio < limits.max_bytes {
        (by_ratio, true)
    } else {
        (limits.max_bytes, false)
    }
}

fn over(cap: (usize, bool), packed: usize, limits: Limits, unpacked: usize) -> Malformed {
    if cap.1 {
        Malformed::RatioExceeded {
            limit: limits.max_ratio,
            packed,
            unpacked: unpacked.min(cap.0.saturating_add(1)),
        }
    } else {
        Malformed::TooLarge {
            limit: limits.max_bytes,
        }
    }
}

/// Read at most one byte past the cap: enough to know it was passed,
/// never more than the cap in memory.
fn read_capped(
    reader: impl Read,
    packed: usize,
    limits: Limits,
    format: &'static str,
) -> Result<Vec<u8>, Malformed> {
    let cap = cap(packed, limits);
    let mut out = Vec::with_capacity(packed.saturating_mul(4).min(cap.0));
    let limit = u64::try_from(cap.0).unwrap_or(u64::MAX).saturating_add(1);
    match reader.take(limit).read_to_end(&mut out) {
        Ok(_) if out.len() > cap.0 => Err(over(cap, packed, limits, out.len())),
        Ok(_) => Ok(out),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(Malformed::Truncated {
            format,
            why: crate::summary::clip(&e.to_string()),
        }),
        Err(e) => Err(Malformed::Unpack {
            format,
            why: crate::summary::clip(&e.to_string()),
        }),
    }
}
