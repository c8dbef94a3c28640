//! ARF feedback reports (RFC 5965): what a provider's feedback loop
//! sends when one of its users marks a message as spam. A
//! `multipart/report; report-type=feedback-report` with a
//! machine-readable `message/feedback-report` part (`Feedback-Type`,
//! `User-Agent`, `Version` required, §3.1) and the message, or its
//! headers, returned (`message/rfc822` or `text/rfc822-headers`). What
//! matters to us is whose message it was: the returned Message-ID and
//! the queue ids our own Received field names. Bounded like every
//! report: fields clipped, at most a few ids kept.

use crate::Malformed;
use crate::summary::clip;
use mail_parser::{MessageParser, MimeHeaders, PartType};
use serde::{Deserialize, Serialize};

/// Queue ids kept from the returned Received fields.
const MAX_IDS: usize = 10;
/// Recipients kept.
const MAX_RCPTS: usize = 10;

/// One complaint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ArfSummary {
    /// `abuse`, `fraud`, `virus`, `other`, `not-spam` (RFC 5965 §7.3).
    pub feedback_type: String,
    pub user_agent: String,
    pub version: String,
    pub reporting_mta: Option<String>,
    pub source_ip: Option<String>,
    pub original_mail_from: Option<String>,
    pub original_rcpt_to: Vec<String>,
    pub arrival_date: Option<String>,
    /// The returned message's Message-ID, without `<>`.
    pub message_id: Option<String>,
    /// The `id` of every returned Received field (ours among them).
    pub queue_ids: Vec<String>,
    /// Who sent the report (its From:).
    pub reporter: String,
}

/// Whether `message` is a feedback report (the top-level type says so).
pub(crate) fn is_feedback_report(message: &[u8]) -> bool {
    is_report(message, "feedback-report")
}

/// Whether `message` is a `multipart/report` of `report_type` (RFC 6522).
pub(crate) fn is_report(message: &[u8], report_type: &str) -> bool {
    let Some(parsed) = MessageParser::new().parse_headers(message) else {
        return false;
    };
    parsed.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("multipart")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("report"))
            && ct
                .attribute("report-type")
                .is_some_and(|t| t.eq_ignore_ascii_case(report_type))
    })
}

pub(crate) fn media(part: &mail_parser::MessagePart<'_>) -> String {
    part.content_type()
        .map(|ct| format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")))
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// `Name: value` fields of a header block, unfolded (the first of each
/// name wins where one is wanted).
pub(crate) fn fields(block: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(block);
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    out
}

pub(crate) fn first(f: &[(String, String)], name: &str) -> Option<String> {
    f.iter().find(|(n, _)| n == name).map(|(_, v)| clip(v))
}

pub(crate) fn angle_free(v: &str) -> String {
    v.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned()
}

/// The `id` clause of a Received field (RFC 5321 §4.4).
fn received_id(value: &str) -> Option<String> {
    let mut words = value.split_whitespace();
    while let Some(w) = words.next() {
        if w.eq_ignore_ascii_case("id") {
            let id = words.next()?.trim_end_matches(';');
            return Some(clip(&angle_free(id)));
        }
    }
    None
}

/// Read a feedback report; why not, when it is not a usable one.
pub(crate) fn read(message: &[u8]) -> Result<ArfSummary, Malformed> {
    let parsed = MessageParser::new()
        .parse(message)
        .ok_or(Malformed::NotMail)?;
    let bad = |why: &str| Malformed::Arf(why.to_owned());
    let report = parsed
        .parts
        .iter()
        .find(|p| media(p) == "message/feedback-report")
        .ok_or_else(|| bad("no message/feedback-report part"))?;
    // A message/* part is 7bit or 8bit (RFC 2046 §5.2.1); some reporters
    // send it as text anyway, so take the decoded text when there is one.
    let report_fields = fields(&part_bytes(report, message));
    let feedback_type = first(&report_fields, "feedback-type")
        .ok_or_else(|| bad("the feedback report has no Feedback-Type field"))?;
    let mut s = ArfSummary {
        feedback_type: feedback_type.to_ascii_lowercase(),
        user_agent: first(&report_fields, "user-agent").unwrap_or_default(),
        version: first(&report_fields, "version").unwrap_or_default(),
        reporting_mta: first(&report_fields, "reporting-mta"),
        source_ip: first(&report_fields, "source-ip"),
        original_mail_from: first(&report_fields, "original-mail-from").map(|v| angle_free(&v)),
        original_rcpt_to: report_fields
            .iter()
            .filter(|(n, _)| n == "original-rcpt-to")
            .take(MAX_RCPTS)
            .map(|(_, v)| clip(&angle_free(v)))
            .collect(),
        arrival_date: first(&report_fields, "arrival-date")
            .or_else(|| first(&report_fields, "received-date")),
        reporter: parsed
            .from()
            .and_then(|f| f.first())
            .and_then(|a| a.address())
            .map(clip)
            .unwrap_or_default(),
        ..ArfSummary::default()
    };
    let (message_id, queue_ids) = returned_ids(&parsed, message);
    s.message_id = message_id;
    s.queue_ids = queue_ids;
    Ok(s)
}

/// The bytes of a part as its fields are read: the decoded text where
/// there is one, else the decoded body, else the raw body.
pub(crate) fn part_bytes<'m>(
    part: &'m mail_parser::MessagePart<'m>,
    message: &'m [u8],
) -> std::borrow::Cow<'m, [u8]> {
    match &part.body {
        PartType::Text(t) => std::borrow::Cow::Borrowed(t.as_bytes()),
        PartType::Binary(b) | PartType::InlineBinary(b) => std::borrow::Cow::Borrowed(b),
        _ => {
            let (a, b) = (
                part.raw_body_offset() as usize,
                part.raw_end_offset() as usize,
            );
            std::borrow::Cow::Borrowed(message.get(a..b.min(message.len())).unwrap_or_default())
        }
    }
}

/// What a report's returned message (`message/rfc822` or
/// `text/rfc822-headers`) says of whose it was: its Message-ID, without
/// `<>`, and the `id` of every returned Received field (ours among
/// them). ARF and DSNs return the message the same way.
pub(crate) fn returned_ids(
    parsed: &mail_parser::Message<'_>,
    message: &[u8],
) -> (Option<String>, Vec<String>) {
    let returned = parsed.parts.iter().find(|p| {
        let m = media(p);
        m == "message/rfc822" || m == "text/rfc822-headers"
    });
    let Some(part) = returned else {
        return (None, Vec::new());
    };
    // A message/* part is 7bit or 8bit (RFC 2046 §5.2.1): its raw body
    // is the returned message; text/rfc822-headers is decoded text.
    let headers = match &part.body {
        PartType::Text(t) => fields(t.as_bytes()),
        _ => {
            let (a, b) = (
                part.raw_body_offset() as usize,
                part.raw_end_offset() as usize,
            );
            fields(message.get(a..b.min(message.len())).unwrap_or_default())
        }
    };
    let message_id = first(&headers, "message-id")
        .map(|v| angle_free(&v))
        .filter(|v| !v.is_empty());
    let queue_ids = headers
        .iter()
        .filter(|(n, _)| n == "received")
        .filter_map(|(_, v)| received_id(v))
        .take(MAX_IDS)
        .collect();
    (message_id, queue_ids)
}
