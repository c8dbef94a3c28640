//! The message as queued (Postfix's cleanup): our Received header on top,
//! the envelope, and for received mail the forwarding plan: alias copies
//! (each its own queue id, ARC-sealed when it leaves), SRS addresses
//! reversed, loops and unknown users under accept-all bounced once (or
//! dropped when SPF says the sender is forged). Then the queue (write and
//! fsync before the 250), the submission log, and reputation.

use crate::data::{Message, Origin};
use crate::forwarding::Copy;
use crate::{Connection, StageResult, Transaction, checks};
use portcullis_authn::{AuthResult, SpfCheck};
use portcullis_config::RecipientPolicy;
use portcullis_metrics::{Counter, Outcome};
use portcullis_queue::{Bounce, Envelope, QueuedRecipient, StoredMessage};
use portcullis_smtp::{Reply, Status};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The hold reason of a message whose account is on hold (containment).
const ACCOUNT_HELD: &str = "its account is on hold (containment)";
use tracing::{info, warn};

impl Connection {
    /// The message queued: goes on with its queue id.
    pub(crate) async fn enqueue(
        &self,
        txn: &Transaction,
        id: &str,
        msg: Message<'_>,
    ) -> StageResult<String> {
        if msg.milter.discard {
            // Accepted and dropped: the client hears 250, nothing is queued.
            info!(session = %self.id, event = "discarded", id = %id, by = "milter");
            let m = &self.inbound.metrics;
            m.inc(Counter::MilterMessages, &[("outcome", "discarded")]);
            return Ok(id.to_owned());
        }
        let now = SystemTime::now();
        let received = portcullis_smtp::received_header(txn, &self.config.hostname, id, now);
        let headers = msg.accept.header_block();
        let mut data = Vec::with_capacity(received.len() + headers.len() + msg.body.len());
        data.extend_from_slice(received.as_bytes());
        data.extend_from_slice(headers.as_bytes());
        data.extend_from_slice(&msg.body);
        let mut envelope = envelope(txn, id, now, msg.accept.folder);
        milter_envelope(&mut envelope, &msg.milter.envelope);
        let hold = msg.milter.quarantine.as_deref();
        let mut copies = Vec::new();
        if let Origin::Received(found) = &msg.origin {
            let spf = &found.spf;
            if let Some(hops) = self.inbound.forwarding.too_many_hops(&data) {
                let text = format!("Too many hops ({hops} Received: fields): a mail loop");
                return Err(Reply::new(554, Status(5, 4, 6), text));
            }
            let unknown = self.take_unknown_recipients(&mut envelope);
            if !unknown.is_empty() {
                self.bounce_unknown(&envelope, &unknown, spf.result(), &data)
                    .await;
            }
            let plan = self.inbound.forwarding.plan(&mut envelope, &data);
            if !plan.loops.is_empty() {
                self.bounce_loops(&envelope, &plan.loops, &data).await;
            }
            copies = self.copies(plan.copies, &data, spf).await;
            if envelope.recipients.is_empty() && copies.is_empty() {
                // Accept-all and loops: the client learns nothing about
                // which addresses exist.
                info!(session = %self.id, event = "accepted_for_unknown_only", id = %id);
                return Ok(id.to_owned());
            }
        }
        let data = Arc::new(data);
        let size = data.len();
        if !envelope.recipients.is_empty() {
            let held = self.account_held(txn).await.then_some(ACCOUNT_HELD);
            self.queue(envelope.clone(), data.clone(), hold.or(held))
                .await?;
            if hold.is_some() {
                let m = &self.inbound.metrics;
                m.inc(Counter::MilterMessages, &[("outcome", "quarantined")]);
            }
            if let Origin::Submitted { message_id } = &msg.origin {
                self.log_submission(txn, &envelope, message_id, size, now);
                self.count_submitted(txn, &envelope).await;
            }
        }
        for (copy, copy_data) in copies {
            self.queue(copy, Arc::new(copy_data), hold).await?;
        }
        if let Origin::Received(found) = &msg.origin {
            if txn.mail_from.is_none() {
                // A DSN about an account's message counts against it.
                let to = txn.recipients.iter().map(|r| r.mailbox.to_string());
                let log = self.inbound.submission.log.clone();
                let c = &self.inbound.containment;
                c.returned_dsn(self.config.clone(), log, to.collect(), data.clone());
            }
            self.count_message(&found.domains, found.verdict).await;
            let sink = &self.inbound.dmarc_observations;
            if let (Some(o), Some(sink)) = (&found.dmarc_observation, sink) {
                sink.observe(o);
            }
        }
        let m = &self.inbound.metrics;
        m.inc(Counter::MessagesAccepted, &[("listener", self.role.name())]);
        m.outcome(Outcome::Accepted, portcullis_config::clock::now_secs());
        Ok(id.to_owned())
    }

    /// Whether a submitted message's account is on hold (here, or on
    /// any node): its message is queued held, never refused.
    async fn account_held(&self, txn: &Transaction) -> bool {
        match txn.auth.as_deref() {
            Some(account) if self.config.containment.enabled => {
                self.held || self.inbound.containment.is_held(account).await
            }
            _ => false,
        }
    }

    /// A submitted message counts for its account's volume.
    async fn count_submitted(&self, txn: &Transaction, envelope: &Envelope) {
        let Some(account) = txn.auth.as_deref() else {
            return;
        };
        let now = portcullis_config::clock::now_secs();
        let to: Vec<String> = envelope
            .recipients
            .iter()
            .map(|r| r.address.clone())
            .collect();
        let changes = portcullis_containment::observe::queued(&envelope.id, &to, now);
        let rules = &self.config.containment;
        let c = &self.inbound.containment;
        c.observe(rules, account, "", &changes, now).await;
    }

    /// Commit one envelope durably through the queue; on hold (a milter's
    /// quarantine, an account on hold) when there is a reason.
    async fn queue(
        &self,
        envelope: Envelope,
        data: Arc<Vec<u8>>,
        hold: Option<&str>,
    ) -> StageResult<()> {
        let (id, from, recipients, size) = (
            envelope.id.clone(),
            envelope.sender.clone(),
            envelope.recipients.len(),
            data.len(),
        );
        let queued = match hold {
            Some(reason) => {
                self.inbound
                    .queue
                    .enqueue_held(envelope, data, reason)
                    .await
            }
            None => self.inbound.queue.enqueue(envelope, data).await,
        };
        match queued {
            Ok(()) => {
                info!(session = %self.id, event = "queued", id = %id, from = %from, recipients, size, held = hold);
                Ok(())
            }
            Err(e) if e.is_storage_full() => {
                warn!(session = %self.id, event = "spool_full", error = %e);
                let text = "Insufficient system storage, try again later";
                Err(Reply::new(452, Status(4, 3, 1), text))
            }
            Err(e) => {
                warn!(session = %self.id, event = "spool_error", error = %e);
                let text = "Local error in processing, try again later";
                Err(Reply::new(451, Status(4, 3, 0), text))
            }
        }
    }

    /// The alias copies of a message: each its own queue id, its
    /// Delivered-To: fields, and for copies leaving for another domain an
    /// ARC seal over what we found on arrival (RFC 8617).
    async fn copies(
        &self,
        plan: Vec<Copy>,
        data: &[u8],
        spf: &SpfCheck,
    ) -> Vec<(Envelope, Vec<u8>)> {
        let mut out = Vec::with_capacity(plan.len());
        for c in plan {
            let mut copy = c.headers.into_bytes();
            copy.extend_from_slice(data);
            if c.forwarded {
                let keys = self.inbound.submission.dkim_keys();
                let domain = &self.inbound.forwarding.domain;
                match self
                    .inbound
                    .checks
                    .arc_seal(&copy, spf, &keys, domain)
                    .await
                {
                    Ok(seal) => {
                        copy.splice(0..0, seal.into_bytes());
                    }
                    Err(e) => warn!(session = %self.id, event = "arc_seal_skipped", reason = %e),
                }
            }
            let envelope = Envelope {
                id: self.inbound.queue.new_id(),
                ..c.envelope
            };
            info!(
                session = %self.id, event = "alias_copy", id = %envelope.id, sender = %envelope.sender,
                recipients = envelope.recipients.len(), forwarded = c.forwarded
            );
            out.push((envelope, copy));
        }
        out
    }

    /// Recipients accepted at RCPT under accept-all that do not exist.
    fn take_unknown_recipients(&self, envelope: &mut Envelope) -> Vec<QueuedRecipient> {
        let (unknown, known): (Vec<_>, Vec<_>) = std::mem::take(&mut envelope.recipients)
            .into_iter()
            .partition(|r| {
                let Some((local, domain)) = r.address.rsplit_once('@') else {
                    return false;
                };
                let m = portcullis_smtp::Mailbox {
                    local: local.to_owned(),
                    domain: domain.to_owned(),
                };
                checks::recipient_policy(&self.config, domain) == RecipientPolicy::AcceptAll
                    && !self.inbound.submission.recipient_exists(&m)
                    && !self.config.is_report_mailbox(&r.address)
            });
        envelope.recipients = known;
        unknown
    }

    /// The slides' "Proposal for SPF deployment": bounce mail for unknown
    /// users only when SPF does not say the sender is forged; otherwise
    /// drop it, so forged senders get no backscatter.
    async fn bounce_unknown(
        &self,
        original: &Envelope,
        unknown: &[QueuedRecipient],
        spf: AuthResult,
        data: &[u8],
    ) {
        let addrs: Vec<&str> = unknown.iter().map(|r| r.address.as_str()).collect();
        if matches!(spf, AuthResult::Fail | AuthResult::SoftFail) || original.sender.is_empty() {
            info!(session = %self.id, event = "bounce_suppressed", spf = spf.as_str(), sender = %original.sender, recipients = ?addrs);
            return;
        }
        let reply = Reply::new(550, Status(5, 1, 1), "user unknown");
        self.bounce(original, unknown, data, &reply).await;
    }

    /// Aliases that loop are bounced once (5.4.6), never forwarded again.
    async fn bounce_loops(&self, original: &Envelope, looped: &[QueuedRecipient], data: &[u8]) {
        let addrs: Vec<&str> = looped.iter().map(|r| r.address.as_str()).collect();
        warn!(session = %self.id, event = "alias_loop", recipients = ?addrs);
        let reply = Reply::new(554, Status(5, 4, 6), "alias loop detected, not forwarded");
        self.bounce(original, looped, data, &reply).await;
    }

    /// A failure DSN (RFC 3464) to the sender for `recipients`, all with
    /// the same reply.
    async fn bounce(
        &self,
        original: &Envelope,
        recipients: &[QueuedRecipient],
        data: &[u8],
        reply: &Reply,
    ) {
        let status = reply.status.unwrap_or(Status(5, 0, 0));
        let why = reply.lines.join(" ");
        let failed: Vec<Bounce> = recipients
            .iter()
            .map(|r| Bounce {
                recipient: r.clone(),
                status,
                diagnostic: format!("{} {status} <{}>: {why}", reply.code, r.address),
                class: portcullis_queue::ReplyClass::Other,
            })
            .collect();
        let message = StoredMessage {
            envelope: original.clone(),
            data: Arc::new(data.to_vec()),
        };
        self.inbound.queue.bounce(&message, &failed).await;
    }

    fn log_submission(
        &self,
        txn: &Transaction,
        e: &Envelope,
        message_id: &str,
        size: usize,
        now: SystemTime,
    ) {
        let tls = txn
            .tls
            .as_ref()
            .map_or(String::new(), |t| format!("{} {}", t.version, t.cipher));
        let record = crate::trace::SubmissionRecord {
            queue_id: &e.id,
            message_id,
            account: txn.auth.as_deref().unwrap_or(""),
            client: &e.client_ip,
            helo: &e.helo,
            mail_from: &e.sender,
            recipients: e.recipients.iter().map(|r| r.address.clone()).collect(),
            size,
            tls: &tls,
        };
        if let Err(err) = self.inbound.submission.log.append(&record, now) {
            warn!(session = %self.id, event = "submission_log_failed", error = %err);
        }
    }
}

/// The queue's envelope of a transaction.
fn envelope(txn: &Transaction, id: &str, now: SystemTime, folder: Option<String>) -> Envelope {
    let p = &txn.mail_params;
    Envelope {
        id: id.to_owned(),
        sender: txn
            .mail_from
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
        recipients: txn
            .recipients
            .iter()
            .map(|r| QueuedRecipient {
                address: r.mailbox.to_string(),
                notify: r.params.notify.map(notify_keywords),
                orcpt: r.params.orcpt.as_ref().map(|(t, a)| format!("{t};{a}")),
                folder: folder.clone(),
            })
            .collect(),
        received_at: now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        client_ip: txn.peer.addr.ip().to_string(),
        helo: txn.helo.clone(),
        auth: txn.auth.clone(),
        smtputf8: p.smtputf8,
        eight_bit: p.body == portcullis_smtp::Body::EightBitMime,
        ret: p.ret.map(|r| match r {
            portcullis_smtp::Ret::Full => "FULL".to_owned(),
            portcullis_smtp::Ret::Hdrs => "HDRS".to_owned(),
        }),
        envid: p.envid.clone(),
        require_tls: p.requiretls,
    }
}

/// The milters' envelope changes: the new sender, recipients deleted
/// (compared without case), recipients added (filed like the others).
fn milter_envelope(e: &mut Envelope, edits: &portcullis_milter::EnvelopeEdits) {
    if edits.is_empty() {
        return;
    }
    if let Some(sender) = &edits.sender {
        e.sender.clone_from(sender);
    }
    e.recipients.retain(|r| {
        !edits
            .delete_recipients
            .iter()
            .any(|d| d.eq_ignore_ascii_case(&r.address))
    });
    let folder = e.recipients.first().and_then(|r| r.folder.clone());
    for a in &edits.add_recipients {
        if !e
            .recipients
            .iter()
            .any(|r| r.address.eq_ignore_ascii_case(a))
        {
            e.recipients.push(QueuedRecipient {
                address: a.clone(),
                folder: folder.clone(),
                ..QueuedRecipient::default()
            });
        }
    }
}

/// RFC 3461 NOTIFY as the queue keeps it: the keywords, or NEVER.
fn notify_keywords(n: portcullis_smtp::Notify) -> String {
    let mut v = Vec::new();
    n.success.then(|| v.push("SUCCESS"));
    n.failure.then(|| v.push("FAILURE"));
    n.delay.then(|| v.push("DELAY"));
    if v.is_empty() {
        "NEVER".to_owned()
    } else {
        v.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milter_envelope_changes_replace_the_sender_and_recipients() {
        let rcpt = |a: &str| QueuedRecipient {
            address: a.to_owned(),
            folder: Some("Junk".to_owned()),
            ..QueuedRecipient::default()
        };
        let mut e = Envelope {
            sender: "old@a.test".into(),
            recipients: vec![rcpt("Kept@b.test"), rcpt("gone@b.test")],
            ..Envelope::default()
        };
        let edits = portcullis_milter::EnvelopeEdits {
            sender: Some(String::new()),
            add_recipients: vec!["new@b.test".into(), "kept@b.test".into()],
            delete_recipients: vec!["GONE@b.test".into()],
        };
        milter_envelope(&mut e, &edits);
        assert_eq!(e.sender, "", "the null sender");
        let addrs: Vec<&str> = e.recipients.iter().map(|r| r.address.as_str()).collect();
        assert_eq!(addrs, ["Kept@b.test", "new@b.test"]);
        assert_eq!(e.recipients[1].folder.as_deref(), Some("Junk"));
    }
}
