//! Delivery status notifications (RFC 3464) that come back to us: a
//! remote MTA accepted one of our messages and failed to deliver it
//! later, so it mailed a `multipart/report; report-type=delivery-status`
//! from the null sender. Its `message/delivery-status` part has one
//! per-message block (`Reporting-MTA`, ...) and one block per recipient
//! (`Final-Recipient`, `Action`, `Status`, §2.3); the returned message,
//! or its headers, names whose message it was (the Message-ID and our
//! queue id in our Received field), read as ARF reads it.
//!
//! Plain logic: the caller (containment) decides what a failed
//! recipient means. A DSN we cannot read is not an error: it is still
//! delivered to its mailbox, it only says nothing here. Bounded: at
//! most `MAX_RECIPIENTS` recipients, every string clipped.

use crate::arf::{angle_free, fields, first, is_report, media, part_bytes, returned_ids};
use crate::summary::clip;
use mail_parser::MessageParser;
use serde::{Deserialize, Serialize};

/// Recipient blocks read from one report.
const MAX_RECIPIENTS: usize = 100;

/// What a delivery status notification says.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DsnSummary {
    pub reporting_mta: Option<String>,
    /// One entry per recipient block that names a recipient, an action
    /// and a status.
    pub recipients: Vec<DsnRecipient>,
    /// The returned message's Message-ID, without `<>`.
    pub message_id: Option<String>,
    /// The `id` of every returned Received field (ours among them).
    pub queue_ids: Vec<String>,
}

/// One recipient's fate (RFC 3464 §2.3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DsnRecipient {
    /// `Final-Recipient`'s address, without its address type.
    pub final_recipient: String,
    /// `Original-Recipient`'s address, when given.
    pub original_recipient: Option<String>,
    /// `failed`, `delayed`, `delivered`, `relayed` or `expanded`.
    pub action: String,
    /// The enhanced status code (RFC 3463).
    pub status: (u8, u16, u16),
}

impl DsnRecipient {
    /// Whether delivery to this recipient failed for good: `Action:
    /// failed` with a 5.x.x status.
    pub fn failed_permanently(&self) -> bool {
        self.action == "failed" && self.status.0 == 5
    }
}

/// Whether `message` is a delivery status notification (the top-level
/// type says so).
pub fn is_dsn(message: &[u8]) -> bool {
    is_report(message, "delivery-status")
}

/// Read a delivery status notification; `None` when `message` is not
/// one we can read (another type, no `message/delivery-status` part, no
/// usable recipient block).
pub fn read_dsn(message: &[u8]) -> Option<DsnSummary> {
    if !is_dsn(message) {
        return None;
    }
    let parsed = MessageParser::new().parse(message)?;
    let status = parsed.parts.iter().find(|p| {
        let m = media(p);
        m == "message/delivery-status" || m == "message/global-delivery-status"
    })?;
    let text = part_bytes(status, message);
    let mut blocks = blocks(&text).into_iter();
    let per_message = blocks.next()?;
    let recipients: Vec<DsnRecipient> = blocks
        .filter_map(|b| recipient(&b))
        .take(MAX_RECIPIENTS)
        .collect();
    if recipients.is_empty() {
        return None;
    }
    let (message_id, queue_ids) = returned_ids(&parsed, message);
    Some(DsnSummary {
        reporting_mta: first(&per_message, "reporting-mta").map(|v| address(&v)),
        recipients,
        message_id,
        queue_ids,
    })
}

/// The field blocks of a delivery-status body, split at empty lines.
fn blocks(body: &[u8]) -> Vec<Vec<(String, String)>> {
    let text = String::from_utf8_lossy(body);
    let mut out = Vec::new();
    let mut block = String::new();
    for line in text.split('\n') {
        if line.trim().is_empty() {
            if !block.is_empty() {
                out.push(fields(block.as_bytes()));
                block.clear();
            }
            continue;
        }
        block.push_str(line.trim_end_matches('\r'));
        block.push('\n');
        // A stranger's report: never more blocks than we will read.
        if out.len() > MAX_RECIPIENTS {
            break;
        }
    }
    if !block.is_empty() {
        out.push(fields(block.as_bytes()));
    }
    out
}

/// One recipient block, when it has what a per-recipient block must
/// (`Final-Recipient`, `Action`, `Status`) in a form we can read.
fn recipient(f: &[(String, String)]) -> Option<DsnRecipient> {
    let final_recipient = address(&first(f, "final-recipient")?);
    if final_recipient.is_empty() {
        return None;
    }
    let action = first(f, "action")?;
    let action = action
        .split(|c: char| c.is_whitespace() || c == '(')
        .next()?
        .to_ascii_lowercase();
    Some(DsnRecipient {
        final_recipient,
        original_recipient: first(f, "original-recipient")
            .map(|v| address(&v))
            .filter(|v| !v.is_empty()),
        action,
        status: status(&first(f, "status")?)?,
    })
}

/// `rfc822; user@example.com` (the address type is optional in
/// practice), without `<>`, lower-cased.
fn address(value: &str) -> String {
    let v = value.split_once(';').map_or(value, |(_, a)| a);
    clip(&angle_free(v)).to_ascii_lowercase()
}

/// `5.1.1`, perhaps followed by a comment; the class must be 2, 4 or 5
/// (RFC 3463 §3.1).
fn status(value: &str) -> Option<(u8, u16, u16)> {
    let code = value
        .split(|c: char| c.is_whitespace() || c == '(')
        .next()?;
    let mut parts = code.split('.');
    let class: u8 = parts.next()?.parse().ok()?;
    let subject: u16 = parts.next()?.parse().ok()?;
    let detail: u16 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || ![2, 4, 5].contains(&class) {
        return None;
    }
    Some((class, subject, detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC: &[u8] = include_bytes!("../testdata/dsn-rfc3464.eml");
    const POSTFIX: &[u8] = include_bytes!("../testdata/dsn-postfix.eml");
    const EXCHANGE: &[u8] = include_bytes!("../testdata/dsn-exchange.eml");

    fn failed(d: &DsnSummary) -> Vec<(&str, (u8, u16, u16))> {
        d.recipients
            .iter()
            .filter(|r| r.failed_permanently())
            .map(|r| (r.final_recipient.as_str(), r.status))
            .collect()
    }

    #[test]
    fn rfc3464_example_reads_every_recipient_block_with_its_action() {
        let d = read_dsn(RFC).unwrap();
        assert_eq!(d.reporting_mta.as_deref(), Some("cs.utk.edu"));
        let actions: Vec<_> = d.recipients.iter().map(|r| r.action.as_str()).collect();
        assert_eq!(actions, ["failed", "delayed", "failed"]);
        assert_eq!(
            failed(&d),
            [
                ("arathib@vnet.ibm.com", (5, 0, 0)),
                ("wsnell@sdcc13.ucsd.edu", (5, 0, 0))
            ]
        );
        assert_eq!(
            d.recipients[0].original_recipient.as_deref(),
            Some("arathib@vnet.ibm.com")
        );
        // "[original message goes here]": nothing to match it by.
        assert_eq!((d.message_id, d.queue_ids.len()), (None, 0));
    }

    #[test]
    fn postfix_bounce_names_the_unknown_user_and_our_queue_id() {
        let d = read_dsn(POSTFIX).unwrap();
        assert_eq!(failed(&d), [("nobody@far.test", (5, 1, 1))]);
        assert_eq!(
            d.message_id.as_deref(),
            Some("0001796320799000042@mail.example.test")
        );
        assert_eq!(d.queue_ids, ["4dQ7Lw0XyPz1xBc", "0001796320799000042"]);
    }

    #[test]
    fn exchange_ndr_with_returned_headers_only_gives_each_status() {
        let d = read_dsn(EXCHANGE).unwrap();
        assert_eq!(
            failed(&d),
            [
                ("ghost@contoso.test", (5, 1, 10)),
                ("ceo@contoso.test", (5, 2, 2))
            ]
        );
        assert_eq!(
            d.reporting_mta.as_deref(),
            Some("am0pr01mb0001.eurprd01.prod.exchangelabs.com")
        );
        assert_eq!(d.queue_ids, ["0001796320799000043"]);
        assert_eq!(
            d.message_id.as_deref(),
            Some("0001796320799000043@mail.example.test")
        );
    }

    #[test]
    fn a_delay_notice_fails_no_recipient() {
        let text = String::from_utf8_lossy(POSTFIX)
            .replace("Action: failed", "Action: delayed")
            .replace("Status: 5.1.1", "Status: 4.4.1");
        let d = read_dsn(text.as_bytes()).unwrap();
        assert!(failed(&d).is_empty());
    }

    #[test]
    fn not_a_delivery_status_report_is_not_read() {
        assert!(!is_dsn(b"Subject: hi\r\n\r\nhello\r\n"));
        assert_eq!(read_dsn(b"Subject: hi\r\n\r\nhello\r\n"), None);
        let arf = include_bytes!("../testdata/arf-yahoo.eml");
        assert_eq!(read_dsn(arf), None);
    }

    #[test]
    fn malformed_reports_are_ignored_without_panic() {
        let text = String::from_utf8_lossy(POSTFIX).into_owned();
        let broken = [
            // No delivery-status part at all.
            text.replace(
                "Content-Type: message/delivery-status",
                "Content-Type: text/plain",
            ),
            // Recipient blocks without a status, or with nonsense in it.
            text.replace("Status: 5.1.1\r\n", ""),
            text.replace("Status: 5.1.1", "Status: 5.x.1"),
            text.replace("Status: 5.1.1", "Status: 7.1.1"),
            text.replace("Status: 5.1.1", "Status: 5.1.1.1"),
            text.replace(
                "Final-Recipient: rfc822; nobody@far.test",
                "Final-Recipient: rfc822;",
            ),
            // Cut off in the middle of the report.
            text[..text.find("Action: failed").unwrap()].to_owned(),
        ];
        for b in &broken {
            assert_eq!(read_dsn(b.as_bytes()), None, "{b}");
        }
        // Garbage under the right type.
        let junk = b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x\r\nContent-Type: message/delivery-status\r\n\r\n\xff\xfe:::\r\n\r\n;;;\r\n--x";
        assert_eq!(read_dsn(junk), None);
        for n in 0..POSTFIX.len() {
            let _ = read_dsn(&POSTFIX[..n]);
        }
    }

    #[test]
    fn recipient_blocks_are_bounded() {
        let block =
            "Final-Recipient: rfc822; x@far.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n";
        let text = String::from_utf8_lossy(POSTFIX).replace(
            "Final-Recipient: rfc822; nobody@far.test",
            &(block.repeat(500) + "Final-Recipient: rfc822; nobody@far.test"),
        );
        let d = read_dsn(text.as_bytes()).unwrap();
        assert_eq!(d.recipients.len(), MAX_RECIPIENTS);
    }
}
