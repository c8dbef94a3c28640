//! Delivery status notifications (RFC 3464, with RFC 3461's RET and
//! ENVID): the multipart/report a sender gets when mail cannot be
//! delivered. Plain text building; sending it is the queue's job, to the
//! envelope sender with a null reverse-path so it can never bounce again.

/// One recipient the report is about.
#[derive(Clone, Debug)]
pub struct FailedRecipient {
    pub address: String,
    /// ORCPT as given at RCPT (`rfc822;addr`).
    pub orcpt: Option<String>,
    /// Enhanced status code, e.g. `5.1.1`.
    pub status: String,
    /// What the last hop said, e.g. `smtp; 550 5.1.1 User unknown`.
    pub diagnostic: String,
    /// The reply's class (`mailbox_unknown`), as an extension field.
    pub class: &'static str,
}

/// What the report says and about which message.
pub struct DsnRequest<'a> {
    pub reporting_mta: &'a str,
    /// The original envelope sender, who gets the report.
    pub to: &'a str,
    pub envid: Option<&'a str>,
    /// RFC 5322 date of arrival.
    pub arrival_date: &'a str,
    /// RFC 5322 date of now.
    pub date: &'a str,
    pub message_id: &'a str,
    pub recipients: &'a [FailedRecipient],
    /// The original message.
    pub original: &'a [u8],
    /// RET=FULL: return the whole message; otherwise only its headers
    /// (less backscatter for mail that may be spam).
    pub ret_full: bool,
    pub kind: ReportKind,
}

/// Failure ("will not be delivered") or delay ("still trying") report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportKind {
    Failure,
    Delay,
}

impl ReportKind {
    fn subject(self) -> &'static str {
        match self {
            ReportKind::Failure => "Undelivered Mail Returned to Sender",
            ReportKind::Delay => "Delayed Mail (still being retried)",
        }
    }

    fn action(self) -> &'static str {
        match self {
            ReportKind::Failure => "failed",
            ReportKind::Delay => "delayed",
        }
    }

    fn sentence(self) -> &'static str {
        match self {
            ReportKind::Failure => {
                "Your message could not be delivered to the following recipients:"
            }
            ReportKind::Delay => {
                "Your message has not been delivered yet to the following recipients. Delivery is still being retried; you need not send it again:"
            }
        }
    }
}

/// The report as a message, CRLF line endings.
pub fn failure_report(r: &DsnRequest<'_>) -> Vec<u8> {
    let boundary = format!(
        "{}/{}",
        r.message_id.trim_matches(['<', '>']),
        r.reporting_mta
    );
    let mut out = String::new();
    out.push_str(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{mta}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nDate: {date}\r\nMessage-ID: {mid}\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\nThis is a MIME-encapsulated delivery status notification.\r\n\r\n",
        mta = r.reporting_mta,
        subject = r.kind.subject(),
        to = r.to,
        date = r.date,
        mid = r.message_id,
    ));
    out.push_str(&format!(
        "--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ));
    out.push_str(&format!(
        "This is the mail system at {}.\r\n\r\n{}\r\n\r\n",
        r.reporting_mta,
        r.kind.sentence()
    ));
    for f in r.recipients {
        out.push_str(&format!("<{}>: {}\r\n", f.address, f.diagnostic));
    }
    out.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
    ));
    out.push_str(&format!("Reporting-MTA: dns; {}\r\n", r.reporting_mta));
    if let Some(envid) = r.envid {
        out.push_str(&format!("Original-Envelope-Id: {envid}\r\n"));
    }
    out.push_str(&format!("Arrival-Date: {}\r\n", r.arrival_date));
    for f in r.recipients {
        out.push_str("\r\n");
        if let Some(orcpt) = &f.orcpt {
            out.push_str(&format!("Original-Recipient: {orcpt}\r\n"));
        }
        out.push_str(&format!(
            "Final-Recipient: rfc822; {}\r\nAction: {}\r\nStatus: {}\r\nDiagnostic-Code: {}\r\nX-Reply-Class: {}\r\n",
            f.address,
            r.kind.action(),
            f.status,
            f.diagnostic,
            f.class
        ));
    }
    let (kind, body) = if r.ret_full {
        ("message/rfc822", r.original)
    } else {
        ("text/rfc822-headers", header_section(r.original))
    };
    out.push_str(&format!("\r\n--{boundary}\r\nContent-Type: {kind}\r\n\r\n"));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    if !body.ends_with(b"\r\n") {
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    bytes
}

fn header_section(message: &[u8]) -> &[u8] {
    match message.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => &message[..i + 2],
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(recipients: &'a [FailedRecipient], ret_full: bool) -> DsnRequest<'a> {
        DsnRequest {
            reporting_mta: "mx.test",
            to: "a@remote.test",
            envid: Some("ENV1"),
            arrival_date: "Tue, 24 Nov 2026 12:00:00 +0000",
            date: "Tue, 24 Nov 2026 12:00:01 +0000",
            message_id: "<Q1.dsn@mx.test>",
            recipients,
            original: b"Subject: hi\r\nFrom: a@remote.test\r\n\r\nsecret body\r\n",
            ret_full,
            kind: ReportKind::Failure,
        }
    }

    #[test]
    fn report_has_the_three_parts_and_per_recipient_fields() {
        let r = [FailedRecipient {
            address: "nobody@local.test".into(),
            orcpt: Some("rfc822;nobody@local.test".into()),
            status: "5.1.1".into(),
            diagnostic: "smtp; 550 5.1.1 User unknown".into(),
            class: "mailbox_unknown",
        }];
        let text = String::from_utf8(failure_report(&request(&r, false))).unwrap();
        assert!(text.contains("Content-Type: multipart/report; report-type=delivery-status;"));
        assert!(text.contains("Reporting-MTA: dns; mx.test\r\nOriginal-Envelope-Id: ENV1\r\n"));
        assert!(text.contains(
            "Final-Recipient: rfc822; nobody@local.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        ));
        assert!(text.contains(
            "Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\nX-Reply-Class: mailbox_unknown\r\n"
        ));
        assert!(text.contains("Content-Type: text/rfc822-headers\r\n\r\nSubject: hi\r\n"));
        assert!(
            !text.contains("secret body"),
            "RET=HDRS returns headers only"
        );
        assert!(text.ends_with("--\r\n"));
    }

    #[test]
    fn ret_full_returns_the_whole_message() {
        let text = String::from_utf8(failure_report(&request(&[], true))).unwrap();
        assert!(text.contains("Content-Type: message/rfc822\r\n\r\nSubject: hi"));
        assert!(text.contains("secret body"));
    }
}
