//! The reports we send (TLS-RPT, RFC 8460 §5.3; DMARC aggregate, RFC 7489
//! §7.2.1.1) leave the same way: a text part and the report gzip'd in an
//! attachment, DKIM-signed by the reporting domain, queued like any
//! message. What differs (media types, names, extra header fields) is
//! the caller's.

use crate::Outbox;
use base64::Engine as _;
use portcullis_config::clock::now_secs;
use portcullis_queue::{Envelope, QueuedRecipient};
use std::io::Write as _;
use std::sync::Arc;

/// One report message.
pub struct ReportMail<'a> {
    pub id: &'a str,
    pub from: &'a str,
    pub to: &'a [String],
    pub subject: String,
    /// Further header fields, each ending in CRLF.
    pub extra_headers: String,
    /// The top-level media type, with its parameters but no boundary.
    pub content_type: &'a str,
    pub text: String,
    /// The attachment's media type and file name; the payload is
    /// gzip'd into it.
    pub attachment_type: &'a str,
    pub filename: String,
    pub payload: &'a [u8],
}

impl ReportMail<'_> {
    /// The message as bytes: headers, text part, the gzip'd payload in
    /// base64.
    pub fn compose(&self, submitter: &str) -> std::io::Result<Vec<u8>> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(self.payload)?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(gz.finish()?);
        let body: Vec<&str> = b64
            .as_bytes()
            .chunks(76)
            .filter_map(|c| std::str::from_utf8(c).ok())
            .collect();
        let boundary = format!("report-{}", self.id);
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let to = self
            .to
            .iter()
            .map(|a| format!("<{a}>"))
            .collect::<Vec<_>>()
            .join(", ");
        let text = format!(
            "From: <{from}>\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {date}\r\n\
             Message-ID: <{id}.report@{submitter}>\r\nAuto-Submitted: auto-generated\r\n{extra}\
             MIME-Version: 1.0\r\nContent-Type: {ctype}; boundary=\"{boundary}\"\r\n\r\n\
             --{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body_text}\r\n\r\n\
             --{boundary}\r\nContent-Type: {atype}\r\nContent-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=\"{filename}\"\r\n\r\n\
             {body}\r\n--{boundary}--\r\n",
            from = self.from,
            subject = self.subject,
            id = self.id,
            extra = self.extra_headers,
            ctype = self.content_type,
            body_text = self.text,
            atype = self.attachment_type,
            filename = self.filename,
            body = body.join("\r\n"),
        );
        Ok(text.into_bytes())
    }

    /// Sign with the From: domain's DKIM key and queue it.
    pub async fn send(&self, outbox: &Outbox) -> Result<(), String> {
        let config = outbox.config.get();
        let message = self.compose(&config.hostname).map_err(|e| e.to_string())?;
        let from_domain = self.from.rsplit_once('@').map_or("", |(_, d)| d);
        let signature = outbox.signer.sign(from_domain, &message)?;
        if signature.is_empty() {
            return Err(format!(
                "no DKIM key for {from_domain} to sign the report with (dkim keygen --domain {from_domain})"
            ));
        }
        let mut data = signature.into_bytes();
        data.extend_from_slice(&message);
        let envelope = Envelope {
            id: self.id.to_owned(),
            sender: self.from.to_owned(),
            recipients: self
                .to
                .iter()
                .map(|a| QueuedRecipient {
                    address: a.clone(),
                    ..Default::default()
                })
                .collect(),
            received_at: now_secs(),
            client_ip: "127.0.0.1".into(),
            helo: config.hostname.clone(),
            ..Default::default()
        };
        outbox
            .queue
            .enqueue(envelope, Arc::new(data))
            .await
            .map_err(|e| e.to_string())
    }
}
