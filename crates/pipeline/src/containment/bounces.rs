//! Delivery status notifications that come back over port 25 (RFC
//! 3464): a remote MTA accepted one of an account's messages and failed
//! to deliver it later. Each recipient it failed for good counts against
//! the account that submitted the message, as the next hop's own answer
//! would (`OutcomeListener`): a bounce, and a 5.1.x an unknown remote
//! recipient. The DSN itself goes to its mailbox like any message; this
//! only reads it, on a task of its own, after it is queued.
//!
//! Whose message it was is found in the submission log, as for ARF
//! complaints: our queue id in a returned Received field, or the
//! returned Message-ID. A stranger who saw one of the account's messages
//! could forge a DSN about it, so only what the log confirms counts: the
//! DSN must be addressed to the message's envelope sender, and each
//! failed recipient must be one the message was sent to.

use super::{Containment, submitted};
use crate::trace::SubmissionLog;
use portcullis_reportbox::DsnSummary;
use serde_json::Value;
use std::sync::Arc;
use tracing::info;

/// What a DSN counts against an account.
#[derive(Debug, PartialEq)]
pub(crate) struct Charge {
    pub account: String,
    pub queue_id: String,
    /// The status of each recipient it failed for good.
    pub failed: Vec<(u8, u16, u16)>,
}

impl Containment {
    /// A message from the null sender to `recipients` was queued: when it
    /// is a DSN about a message one of our accounts submitted, count it.
    /// Returns at once.
    pub fn returned_dsn(
        self: &Arc<Self>,
        config: Arc<portcullis_config::Config>,
        log: SubmissionLog,
        recipients: Vec<String>,
        data: Arc<Vec<u8>>,
    ) {
        if !config.containment.enabled || !portcullis_reportbox::is_dsn(&data) {
            return;
        }
        let containment = self.clone();
        tokio::spawn(async move {
            let found = tokio::task::spawn_blocking(move || {
                let dsn = portcullis_reportbox::read_dsn(&data)?;
                let keys = dsn.queue_ids.iter().chain(dsn.message_id.iter());
                let logged = submitted(&log, keys)?;
                Some(charge(&dsn, &logged, &recipients))
            })
            .await
            .ok()
            .flatten();
            let Some(Some(charge)) = found else {
                return;
            };
            info!(event = "dsn_returned", account = %charge.account, id = %charge.queue_id, failed = charge.failed.len());
            let rules = &config.containment;
            for status in charge.failed {
                let now = portcullis_config::clock::now_secs();
                let signal = if portcullis_containment::is_unknown_recipient(status) {
                    "unknown_remote"
                } else {
                    "bounce"
                };
                let changes = portcullis_containment::observe::outcome(Some(status), now);
                containment
                    .observe(rules, &charge.account, signal, &changes, now)
                    .await;
            }
        });
    }
}

/// What `dsn`, delivered to `envelope_recipients`, counts against the
/// account of the `logged` submission: nothing unless it went to the
/// message's envelope sender; then each recipient of the message it
/// failed for good.
pub(crate) fn charge(
    dsn: &DsnSummary,
    logged: &Value,
    envelope_recipients: &[String],
) -> Option<Charge> {
    let text = |k: &str| logged.get(k).and_then(Value::as_str).unwrap_or_default();
    let account = text("account");
    let sender = text("mail_from");
    if account.is_empty()
        || sender.is_empty()
        || !envelope_recipients
            .iter()
            .any(|r| r.eq_ignore_ascii_case(sender))
    {
        return None;
    }
    let sent_to: Vec<String> = logged
        .get("recipients")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_ascii_lowercase)
                .collect()
        })
        .unwrap_or_default();
    let failed = dsn
        .recipients
        .iter()
        .filter(|r| r.failed_permanently())
        .filter(|r| {
            std::iter::once(&r.final_recipient)
                .chain(r.original_recipient.iter())
                .any(|a| sent_to.contains(a))
        })
        .map(|r| r.status)
        .collect::<Vec<_>>();
    (!failed.is_empty()).then(|| Charge {
        account: account.to_owned(),
        queue_id: text("queue_id").to_owned(),
        failed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_reportbox::DsnRecipient;
    use serde_json::json;

    fn dsn(recipients: &[(&str, &str, (u8, u16, u16))]) -> DsnSummary {
        DsnSummary {
            recipients: recipients
                .iter()
                .map(|(to, action, status)| DsnRecipient {
                    final_recipient: (*to).into(),
                    original_recipient: None,
                    action: (*action).into(),
                    status: *status,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn logged() -> Value {
        json!({
            "queue_id": "Q1", "account": "alice@local.test", "mail_from": "alice@local.test",
            "recipients": ["nobody@far.test", "Friend@far.test", "full@far.test"],
        })
    }

    const TO_ALICE: &[&str] = &["ALICE@local.test"];

    fn to(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn each_permanently_failed_recipient_of_the_message_is_charged() {
        let d = dsn(&[
            ("nobody@far.test", "failed", (5, 1, 1)),
            ("full@far.test", "failed", (5, 2, 2)),
            ("friend@far.test", "delayed", (4, 4, 1)),
        ]);
        let c = charge(&d, &logged(), &to(TO_ALICE)).unwrap();
        assert_eq!(c.account, "alice@local.test");
        assert_eq!(c.queue_id, "Q1");
        assert_eq!(c.failed, [(5, 1, 1), (5, 2, 2)]);
    }

    #[test]
    fn a_dsn_not_sent_to_the_messages_sender_counts_nothing() {
        let d = dsn(&[("nobody@far.test", "failed", (5, 1, 1))]);
        assert_eq!(charge(&d, &logged(), &to(&["bob@local.test"])), None);
    }

    #[test]
    fn recipients_the_message_never_had_count_nothing() {
        let d = dsn(&[("stranger@far.test", "failed", (5, 1, 1))]);
        assert_eq!(charge(&d, &logged(), &to(TO_ALICE)), None);
    }

    #[test]
    fn a_temporary_failure_counts_nothing() {
        let d = dsn(&[("nobody@far.test", "failed", (4, 4, 7))]);
        assert_eq!(charge(&d, &logged(), &to(TO_ALICE)), None);
    }
}
