//! MAIL FROM (RFC 5321 4.1.1.2).

use super::{Action, Answer, Pending, Session, Transaction};
use crate::address::{Mailbox, Path};
use crate::command::MailParams;
use crate::reply::{Reply, Status, canned};

impl<X> Session<X> {
    pub(super) fn mail(&mut self, path: Path, params: MailParams) {
        let Some((_, esmtp)) = &self.helo else {
            return self.fail(canned::bad_sequence("Send EHLO or HELO first"));
        };
        if self.txn.is_some() {
            return self.fail(canned::bad_sequence("Nested MAIL command"));
        }
        if !*esmtp && params != MailParams::default() {
            return self.fail(Reply::new(
                555,
                Status(5, 5, 4),
                "ESMTP parameters need EHLO, not HELO",
            ));
        }
        // RFC 6409 4.3 and spamops 3.1: every submitted message is
        // authenticated; there is no address-based trust on these ports.
        if self.cfg.role.is_submission() && self.auth.is_none() {
            // Before STARTTLS, AUTH is not even offered: asking for it
            // would send the client looking for a mechanism it cannot see.
            // RFC 3207 4 names the reply for a server that needs TLS first.
            let why = if self.tls.is_none() && self.cfg.tls_available {
                "Must issue a STARTTLS command first"
            } else {
                "Authentication required"
            };
            return self.fail(Reply::new(530, Status(5, 7, 0), why));
        }
        if params.requiretls && self.tls.is_none() {
            // RFC 8689 §4.1: REQUIRETLS is only accepted over TLS; X.7.10
            // is "encryption needed" (RFC 5248).
            return self.fail(Reply::new(
                530,
                Status(5, 7, 10),
                "REQUIRETLS needs a TLS session: STARTTLS first",
            ));
        }
        let limit = self.cfg.limits.max_message_size;
        if params.size.is_some_and(|s| s > limit) {
            return self.fail(canned::size_exceeded(limit));
        }
        let from = match path {
            Path::Null => None,
            Path::Mailbox(m) => Some(m),
            Path::Postmaster => return self.fail(canned::syntax("Bad sender address")),
        };
        self.out.push_back(Action::CheckMail {
            from: from.clone(),
            params: params.clone(),
        });
        self.pending = Some(Pending::Mail { from, params });
    }

    /// The answer to the last `CheckMail`: on acceptance, the driver's
    /// state for the transaction it opens.
    pub fn answer_mail(&mut self, answer: Answer<X>) {
        match self.pending.take() {
            Some(Pending::Mail { from, params }) => self.mail_answered(from, params, answer),
            other => self.pending = other,
        }
    }

    fn mail_answered(&mut self, from: Option<Mailbox>, params: MailParams, answer: Answer<X>) {
        match answer {
            Err(r) => self.fail(r),
            Ok(findings) => {
                let (helo, esmtp) = self.helo.clone().unwrap_or_default();
                self.txn = Some(Transaction {
                    peer: self.peer.clone(),
                    helo,
                    esmtp,
                    tls: self.tls.clone(),
                    auth: self.auth.clone(),
                    mail_from: from,
                    mail_params: params,
                    recipients: Vec::new(),
                    body: Vec::new(),
                    findings,
                });
                self.reply(Reply::new(250, Status(2, 1, 0), "Sender ok"));
            }
        }
    }
}
