//! RCPT TO. On the submission ports an authenticated user may send
//! anywhere, each recipient counted against the quota (OP25B §4.4.3). On
//! port 25: one of our SRS addresses (a bounce going back to its original
//! sender), an alias, or a local mailbox, never a relay; then the class's
//! recipient budget. "User unknown" slows the client down (the tarpit)
//! and counts against its range. Strangers (the default pool) may be
//! greylisted.

use crate::{Connection, StageResult, Transaction, checks};
use portcullis_config::clock::now_secs;
use portcullis_containment::observe;
use portcullis_smtp::{Mailbox, Reply, Status};
use tracing::info;

impl Connection {
    /// One more recipient for the session's open transaction, whose
    /// account, sender and recipients so far this stage reads.
    pub async fn rcpt(&mut self, txn: &Transaction, to: &Mailbox) -> StageResult<()> {
        if txn.auth.is_some() {
            // Not "user unknown" of ours: no tarpit, no penalty.
            self.not_suppressed(to).await?;
        }
        let result = match txn.auth.as_deref() {
            Some(account) => self.submitted_recipient(account, to).await,
            None => self.mx_recipient(txn, to).await,
        };
        let result = match result {
            Ok(()) => self.milter_rcpt(to).await,
            refused => refused,
        };
        if checks::is_user_unknown(&result) {
            self.unknown_users += 1;
            let range = self.inbound.admission.policy().range_of(self.peer.ip());
            self.inbound.admission.state.penalize(range).await;
        }
        info!(session = %self.id, event = "rcpt", to = %to, accepted = result.is_ok());
        result
    }

    /// A submitted recipient: deferred while the account is on hold;
    /// an unknown local one or a spam trap counts against the account,
    /// which may put it on hold at once.
    async fn submitted_recipient(&mut self, account: &str, to: &Mailbox) -> StageResult<()> {
        let rules = &self.config.containment;
        if self.held {
            let text = match self
                .inbound
                .containment
                .admit(rules, account, now_secs())
                .await
            {
                Err(reply) => return Err(reply),
                Ok(()) => "Sending is on hold for this account",
            };
            return Err(Reply::new(451, Status(4, 7, 1), text));
        }
        let state = &self.inbound.admission.state;
        let s = &self.inbound.submission;
        let result = s.check_recipient(state, &self.config, account, to).await;
        let now = now_secs();
        let (signal, changes) = if checks::is_user_unknown(&result) {
            ("unknown_recipient", observe::unknown_recipient(now))
        } else if result.is_ok()
            && portcullis_containment::is_spam_trap(&rules.spam_traps, &to.to_string())
        {
            ("spam_trap", observe::trap_hit(now))
        } else {
            return result;
        };
        let after = self
            .inbound
            .containment
            .observe(rules, account, signal, &changes, now)
            .await;
        if after.is_some_and(|c| c.action == portcullis_containment::Action::Hold) {
            self.held = true;
        }
        result
    }

    /// A remote address that bounced as unknown lately is refused at
    /// once, saying when and why (the suppression list).
    async fn not_suppressed(&self, to: &Mailbox) -> StageResult<()> {
        let address = to.to_string();
        let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
        if self.config.is_local_domain(&domain.to_ascii_lowercase()) {
            return Ok(());
        }
        match self.inbound.admission.state.suppressed(&address).await {
            Some(entry) => {
                info!(session = %self.id, event = "rcpt_suppressed", to = %to, until = entry.until);
                Err(Reply::new(550, Status(5, 1, 1), entry.refusal()))
            }
            None => Ok(()),
        }
    }

    async fn mx_recipient(&self, txn: &Transaction, to: &Mailbox) -> StageResult<()> {
        let inbound = &self.inbound;
        // The address reporters were told to use (RFC 7489 §7.2 `rua`,
        // RFC 8460 §3 `rua`): ours to consume whatever its domain, never
        // a relay, never "user unknown".
        if self.config.is_report_mailbox(&to.to_string()) {
            return self.admit_recipient(txn, to).await;
        }
        let known = match inbound.forwarding.srs_reverse(to) {
            Some(Ok(_)) => return self.admit_recipient(txn, to).await,
            Some(Err(why)) => {
                return Err(Reply::new(550, Status(5, 1, 1), format!("<{to}>: {why}")));
            }
            None => inbound.submission.recipient_exists(to) || inbound.forwarding.is_alias(to),
        };
        checks::recipient(&self.config, to, known)?;
        self.admit_recipient(txn, to).await
    }

    /// The class's recipient budget, then the greylist.
    async fn admit_recipient(&self, txn: &Transaction, to: &Mailbox) -> StageResult<()> {
        let Some(g) = &self.gate else {
            return Ok(());
        };
        let admission = &self.inbound.admission;
        admission.rcpt(g, txn.recipients.len()).await?;
        let sender = txn.mail_from.as_ref().map(|m| m.to_string());
        let greylist = &self.config.greylist;
        let ip = self.peer.ip();
        admission
            .greylist(greylist, g, ip, sender.as_deref(), &to.to_string())
            .await
    }
}
