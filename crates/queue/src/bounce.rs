//! Bounces: the only writer of delivery status notifications. A report
//! (RFC 3464) goes to the message's envelope sender, never to the null
//! sender (a bounce of a bounce), through the queue like any message, with
//! a null reverse-path of its own.

use crate::dsn::{DsnRequest, FailedRecipient, ReportKind, failure_report};
use crate::{Envelope, Queue, QueuedRecipient, StoredMessage};
use portcullis_config::clock::now_secs;
use portcullis_delivery::Status;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

/// One recipient a report is about: its status and what was said.
#[derive(Clone, Debug)]
pub struct Bounce {
    pub recipient: QueuedRecipient,
    pub status: Status,
    /// The reply or error behind the status, as the report quotes it.
    pub diagnostic: String,
    /// What kind of answer it was (the reply table's class).
    pub class: portcullis_delivery::ReplyClass,
}

impl Queue {
    /// Report `failed` recipients of `original` to its sender: a failure
    /// report, or a delay report while retries go on.
    pub async fn bounce(&self, original: &StoredMessage, failed: &[Bounce], kind: ReportKind) {
        let env = &original.envelope;
        let wanted: Vec<&Bounce> = failed
            .iter()
            .filter(|b| wants(&b.recipient, kind))
            .collect();
        if wanted.is_empty() {
            return;
        }
        if env.sender.is_empty() {
            info!(event = "bounce_not_sent", id = %env.id, reason = "null sender");
            return;
        }
        let hostname = self.hostname();
        let id = self.new_id();
        let now = SystemTime::now();
        let recipients: Vec<FailedRecipient> = wanted
            .iter()
            .map(|b| FailedRecipient {
                address: b.recipient.address.clone(),
                orcpt: b.recipient.orcpt.clone(),
                status: b.status.to_string(),
                diagnostic: format!("smtp; {}", b.diagnostic),
                class: b.class.name(),
            })
            .collect();
        let report = failure_report(&DsnRequest {
            reporting_mta: hostname,
            to: &env.sender,
            envid: env.envid.as_deref(),
            arrival_date: &portcullis_smtp::rfc5322_date(
                UNIX_EPOCH + Duration::from_secs(env.received_at),
            ),
            date: &portcullis_smtp::rfc5322_date(now),
            message_id: &format!("<{id}.dsn@{hostname}>"),
            recipients: &recipients,
            original: &original.data,
            // RFC 8689 §5: a REQUIRETLS message's content does not go
            // back in a report that may travel without TLS.
            ret_full: env.ret.as_deref() == Some("FULL") && !env.require_tls,
            kind,
        });
        let envelope = Envelope {
            id: id.clone(),
            sender: String::new(),
            recipients: vec![QueuedRecipient {
                address: env.sender.clone(),
                ..Default::default()
            }],
            received_at: now_secs(),
            client_ip: "127.0.0.1".into(),
            helo: hostname.to_owned(),
            ..Default::default()
        };
        match self.enqueue(envelope, Arc::new(report)).await {
            Ok(()) => {
                info!(event = "bounce_queued", id = %id, original = %env.id, to = %env.sender, recipients = wanted.len())
            }
            Err(e) => warn!(event = "bounce_failed", original = %env.id, error = %e),
        }
    }
}

/// RFC 3461 §4.1: NOTIFY says which reports a recipient's sender wants;
/// without it, failures and delays are reported.
fn wants(r: &QueuedRecipient, kind: ReportKind) -> bool {
    match (&r.notify, kind) {
        (None, _) => true,
        (Some(n), ReportKind::Failure) => n.contains("FAILURE"),
        (Some(n), ReportKind::Delay) => n.contains("DELAY"),
    }
}
