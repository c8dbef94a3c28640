//! Connection opening, HELO/EHLO and STARTTLS (RFC 3207).

use super::{Action, Pending, Session, TlsInfo};
use crate::reply::{Reply, Status, canned};

impl<X> Session<X> {
    /// Queue the 220 greeting. The driver calls this when it is ready to
    /// talk (after the pregreet wait, after the TLS handshake on 465).
    pub fn start(&mut self) {
        let text = format!("{} ESMTP portcullis", self.cfg.hostname);
        self.reply(Reply::bare(220, text));
    }

    /// Refuse the connection before the greeting (policy, load).
    pub fn refuse(&mut self, reply: Reply) {
        self.close_with(reply);
    }

    /// The client sent data before our greeting: it is not waiting for
    /// replies, as a spam engine in a hurry does (postscreen's pregreet test).
    pub fn refuse_early_talker(&mut self) {
        self.close_with(Reply::new(
            554,
            Status(5, 5, 1),
            "Protocol error: client sent data before the greeting",
        ));
    }

    pub(super) fn helo(&mut self, name: String, esmtp: bool) {
        // RFC 5321 4.1.4: EHLO/HELO resets any transaction in progress.
        self.reset_txn();
        self.helo = Some((name.clone(), esmtp));
        if !esmtp {
            self.reply(Reply::bare(250, self.cfg.hostname.clone()));
            return;
        }
        let mut r = Reply::bare(250, format!("{} greets {name}", self.cfg.hostname))
            .with_line("PIPELINING")
            .with_line(format!("SIZE {}", self.cfg.limits.max_message_size))
            .with_line("8BITMIME")
            .with_line("SMTPUTF8")
            .with_line("ENHANCEDSTATUSCODES")
            .with_line("CHUNKING")
            .with_line("DSN");
        if self.starttls_offered() {
            r = r.with_line("STARTTLS");
        }
        if self.auth_offered() {
            r = r.with_line("AUTH PLAIN LOGIN");
        }
        // RFC 8689 §4.1: a message can only ask for REQUIRETLS over TLS.
        if self.tls.is_some() {
            r = r.with_line("REQUIRETLS");
        }
        self.reply(r.with_line("HELP"));
    }

    /// HELP lists what EHLO would: STARTTLS only while it can be used
    /// (not on 465, not once TLS is active).
    pub(super) fn help(&mut self) {
        let mut text = String::from(
            "See RFC 5321; commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP",
        );
        if self.starttls_offered() {
            text.push_str(" STARTTLS");
        }
        if self.auth_offered() {
            text.push_str(" AUTH");
        }
        self.reply(Reply::new(214, Status(2, 0, 0), text));
    }

    fn starttls_offered(&self) -> bool {
        self.cfg.tls_available && self.tls.is_none()
    }

    pub(super) fn starttls(&mut self) {
        if self.tls.is_some() {
            return self.fail(canned::bad_sequence("TLS already active"));
        }
        if !self.cfg.tls_available {
            return self.fail(Reply::new(454, Status(4, 7, 0), "TLS not available"));
        }
        if self.txn.is_some() {
            return self.fail(canned::bad_sequence(
                "STARTTLS not allowed during a mail transaction",
            ));
        }
        self.reply(Reply::new(220, Status(2, 0, 0), "Ready to start TLS"));
        // RFC 3207 4.2 / CVE-2011-0411: anything the client pipelined after
        // STARTTLS arrived in plaintext and must not be executed after the
        // handshake. Throw it away.
        self.input.clear();
        self.pos = 0;
        self.out.push_back(Action::StartTls);
        self.pending = Some(Pending::Tls);
    }

    /// The handshake finished. RFC 3207 4.2: discard all knowledge from
    /// the client; it must send EHLO again.
    pub fn tls_established(&mut self, info: TlsInfo) {
        self.input.clear();
        self.pos = 0;
        self.helo = None;
        self.reset_txn();
        self.auth = None;
        self.tls = Some(info);
        self.pending = None;
    }
}
