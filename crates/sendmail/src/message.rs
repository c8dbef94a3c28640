//! The message a program hands over on standard input, made ready for
//! submission: CRLF line ends (programs write bare LF), the input ended by
//! a lone dot unless `-i`, recipients taken from the headers with `-t`
//! (and Bcc: removed so blind copies stay blind), a From: when missing.

use mail_parser::{Address, MessageParser};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("no recipients: give them as arguments or use -t with To:, Cc: or Bcc:")]
    NoRecipients,
    #[error("no sender: use -f ADDRESS, `sender` in the config, or a From: header")]
    NoSender,
    #[error("the message has no header/body separator or no headers")]
    Malformed,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Prepared {
    pub sender: String,
    pub recipients: Vec<String>,
    pub data: Vec<u8>,
}

/// Lines of the input, LF or CRLF ended, as CRLF; stop at a line with a
/// single dot unless `ignore_dots` (sendmail's default without `-i`).
pub fn normalize(raw: &[u8], ignore_dots: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 40);
    for line in raw.split_inclusive(|b| *b == b'\n') {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if !ignore_dots && body == b"." {
            break;
        }
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The header block's end (after the blank line), if any.
fn header_end(data: &[u8]) -> Option<usize> {
    if data.starts_with(b"\r\n") {
        return Some(2);
    }
    data.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

/// Remove every `Bcc:` field (with its folded lines) from the header.
fn without_bcc(data: &[u8]) -> Vec<u8> {
    let end = header_end(data).unwrap_or(data.len());
    let mut out = Vec::with_capacity(data.len());
    let mut dropping = false;
    for line in data[..end].split_inclusive(|b| *b == b'\n') {
        let folded = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !folded {
            dropping = line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"bcc:");
        }
        if !dropping {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(&data[end..]);
    out
}

fn addresses(a: Option<&Address<'_>>) -> Vec<String> {
    a.map(|a| {
        a.iter()
            .filter_map(|x| x.address().map(str::to_owned))
            .collect()
    })
    .unwrap_or_default()
}

/// Envelope and content for one submission.
pub fn prepare(
    raw: &[u8],
    ignore_dots: bool,
    from_headers: bool,
    arg_recipients: &[String],
    sender: Option<&str>,
    full_name: Option<&str>,
) -> Result<Prepared, MessageError> {
    let mut data = normalize(raw, ignore_dots);
    if header_end(&data).is_none() {
        // A body with no blank line: all header, as sendmail treats it.
        data.extend_from_slice(b"\r\n");
    }
    let parsed = MessageParser::default()
        .parse_headers(&data)
        .ok_or(MessageError::Malformed)?;
    let mut recipients: Vec<String> = arg_recipients.to_vec();
    if from_headers {
        for a in [parsed.to(), parsed.cc(), parsed.bcc()] {
            recipients.extend(addresses(a));
        }
    }
    recipients.dedup();
    if recipients.is_empty() {
        return Err(MessageError::NoRecipients);
    }
    let header_from = addresses(parsed.from()).into_iter().next();
    let sender = sender
        .map(str::to_owned)
        .or(header_from.clone())
        .ok_or(MessageError::NoSender)?;
    let has_from = parsed.from().is_some();
    drop(parsed);
    if from_headers {
        data = without_bcc(&data);
    }
    if !has_from && !sender.is_empty() {
        let from = match full_name {
            Some(n) => format!(
                "From: \"{}\" <{sender}>\r\n",
                n.replace(['"', '\r', '\n'], "")
            ),
            None => format!("From: {sender}\r\n"),
        };
        data.splice(0..0, from.into_bytes());
    }
    Ok(Prepared {
        sender,
        recipients,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_lf_becomes_crlf_and_a_dot_ends_the_input() {
        assert_eq!(normalize(b"a\nb\r\n.\nafter\n", false), b"a\r\nb\r\n");
        assert_eq!(normalize(b"a\n.\nafter", true), b"a\r\n.\r\nafter\r\n");
    }

    #[test]
    fn recipients_come_from_headers_with_t_and_bcc_is_removed() {
        let raw = b"From: App <app@x.test>\nTo: a@x.test, B <b@x.test>\nCc: c@x.test\nBcc: hidden@x.test,\n more@x.test\nSubject: hi\n\nbody\nBcc: not-a-header@x.test\n";
        let p = prepare(raw, true, true, &[], None, None).unwrap();
        assert_eq!(
            p.recipients,
            [
                "a@x.test",
                "b@x.test",
                "c@x.test",
                "hidden@x.test",
                "more@x.test"
            ]
        );
        assert_eq!(p.sender, "app@x.test");
        let text = String::from_utf8(p.data).unwrap();
        assert!(
            !text.contains("hidden@") && !text.contains("more@x.test"),
            "{text}"
        );
        assert!(
            text.contains("Subject: hi\r\n") && text.contains("Bcc: not-a-header"),
            "the body is untouched"
        );
    }

    #[test]
    fn a_missing_from_is_added_with_the_full_name() {
        let p = prepare(
            b"Subject: cron\n\nout\n",
            true,
            false,
            &["root@h.test".into()],
            Some("cron@h.test"),
            Some("Cron Daemon"),
        )
        .unwrap();
        assert!(
            p.data
                .starts_with(b"From: \"Cron Daemon\" <cron@h.test>\r\nSubject: cron\r\n")
        );
    }

    #[test]
    fn refuses_a_message_without_recipients_or_sender() {
        assert_eq!(
            prepare(
                b"Subject: x\n\nb\n",
                true,
                true,
                &[],
                Some("a@b.test"),
                None
            ),
            Err(MessageError::NoRecipients)
        );
        assert_eq!(
            prepare(b"To: a@b.test\n\nb\n", true, true, &[], None, None),
            Err(MessageError::NoSender)
        );
    }
}
