//! RCPT TO. On the submission ports an authenticated user may send
//! anywhere, each recipient counted against the quota (OP25B §4.4.3). On
//! port 25: one of our SRS addresses (a bounce going back to its original
//! sender), an alias, or a local mailbox, never a relay; then the class's
//! recipient budget. "User unknown" slows the client down (the tarpit)
//! and counts against its range. Strangers (the default pool) may be
//! greylisted.

use crate::{Connection, checks};
use portcullis_smtp::{Mailbox, Reply, Status, Verdict};
use tracing::info;

impl Connection {
    /// `so_far`: recipients already accepted in this transaction.
    pub async fn rcpt(&mut self, account: Option<&str>, to: &Mailbox, so_far: usize) -> Verdict {
        let verdict = match account {
            Some(account) => {
                let state = &self.inbound.admission.state;
                let s = &self.inbound.submission;
                s.check_recipient(state, &self.config, account, to).await
            }
            None => self.mx_recipient(to, so_far).await,
        };
        if checks::is_user_unknown(&verdict) {
            self.unknown_users += 1;
            let range = self.inbound.admission.policy().range_of(self.peer.ip());
            self.inbound.admission.state.penalize(range).await;
        }
        info!(session = %self.id, event = "rcpt", to = %to, accepted = verdict == Verdict::Accept);
        verdict
    }

    async fn mx_recipient(&self, to: &Mailbox, so_far: usize) -> Verdict {
        let inbound = &self.inbound;
        // The address reporters were told to use (RFC 7489 §7.2 `rua`,
        // RFC 8460 §3 `rua`): ours to consume whatever its domain, never
        // a relay, never "user unknown".
        if self.config.is_report_mailbox(&to.to_string()) {
            return self.admit_recipient(to, so_far).await;
        }
        let known = match inbound.forwarding.srs_reverse(to) {
            Some(Ok(_)) => return self.admit_recipient(to, so_far).await,
            Some(Err(why)) => {
                return Verdict::Reject(Reply::new(550, Status(5, 1, 1), format!("<{to}>: {why}")));
            }
            None => inbound.submission.recipient_exists(to) || inbound.forwarding.is_alias(to),
        };
        match checks::recipient(&self.config, to, known) {
            Verdict::Accept => self.admit_recipient(to, so_far).await,
            refused => refused,
        }
    }

    async fn admit_recipient(&self, to: &Mailbox, so_far: usize) -> Verdict {
        let Some(g) = &self.gate else {
            return Verdict::Accept;
        };
        if let Err(r) = self.inbound.admission.rcpt(g, so_far).await {
            return Verdict::Reject(r);
        }
        let sender = self.txn.as_ref().and_then(|t| t.sender.as_deref());
        let greylist = &self.config.greylist;
        match self
            .inbound
            .admission
            .greylist(greylist, g, self.peer.ip(), sender, &to.to_string())
            .await
        {
            Ok(()) => Verdict::Accept,
            Err(r) => Verdict::Reject(r),
        }
    }
}
