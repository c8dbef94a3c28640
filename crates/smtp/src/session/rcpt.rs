//! RCPT TO (RFC 5321 4.1.1.3).

use super::{Action, Answer, Pending, Recipient, Session};
use crate::address::{Mailbox, Path};
use crate::command::RcptParams;
use crate::reply::{Reply, Status, canned};

impl<X> Session<X> {
    pub(super) fn rcpt(&mut self, path: Path, params: RcptParams) {
        let Some(txn) = &self.txn else {
            return self.fail(canned::bad_sequence("Need MAIL before RCPT"));
        };
        // 4.5.3.1.10: too many recipients is a 452, and the client goes on
        // with the ones accepted. Not counted as a client error.
        if txn.recipients.len() >= self.cfg.limits.max_recipients {
            let r = Reply::new(452, Status(4, 5, 3), "Too many recipients");
            return self.reply(r);
        }
        let mailbox = match path {
            // 4.1.1.3: <Postmaster> is the postmaster of this server.
            Path::Postmaster => Mailbox {
                local: "postmaster".into(),
                domain: self.cfg.hostname.clone(),
            },
            Path::Mailbox(m) => m,
            Path::Null => return self.fail(canned::syntax("Bad recipient address")),
        };
        if mailbox.is_utf8() && !txn.mail_params.smtputf8 {
            let r = Reply::new(
                553,
                Status(5, 6, 7),
                "Non-ASCII recipient requires MAIL FROM ... SMTPUTF8",
            );
            return self.fail(r);
        }
        if txn.recipients.iter().any(|r| r.mailbox == mailbox) {
            return self.reply(Reply::new(
                250,
                Status(2, 1, 5),
                "Duplicate recipient ignored",
            ));
        }
        self.out.push_back(Action::CheckRcpt {
            to: mailbox.clone(),
            params: params.clone(),
        });
        self.pending = Some(Pending::Rcpt(Recipient { mailbox, params }));
    }

    /// The answer to the last `CheckRcpt`.
    pub fn answer_rcpt(&mut self, answer: Answer<()>) {
        match self.pending.take() {
            Some(Pending::Rcpt(r)) => self.rcpt_answered(r, answer),
            other => self.pending = other,
        }
    }

    fn rcpt_answered(&mut self, r: Recipient, answer: Answer<()>) {
        match (answer, &mut self.txn) {
            (Err(reply), _) => self.fail(reply),
            (Ok(()), Some(txn)) => {
                txn.recipients.push(r);
                self.reply(Reply::new(250, Status(2, 1, 5), "Recipient ok"));
            }
            (Ok(()), None) => self.fail(canned::bad_sequence("Need MAIL before RCPT")),
        }
    }
}
