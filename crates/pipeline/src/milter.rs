//! The milters at each stage (`[[milter]]`, crate `portcullis-milter`):
//! after our own MAIL FROM and RCPT TO checks accept, the milters are
//! asked; at the end of data they see the message after our own
//! authentication (so forged Authentication-Results are already gone)
//! and before our Authentication-Results, spam headers and Received go on
//! top and before our DKIM signature (submission). What they change is
//! applied to the content here and to the envelope in cleanup; a discard
//! is accepted and dropped, a quarantine accepted and held in the queue
//! (Postfix's MILTER_README order: smtpd's own checks, then the milters,
//! then the message is signed).

use crate::{Connection, StageResult, Transaction};
use portcullis_milter::{Client, Mail, Outcome};
use portcullis_smtp::{MailParams, Mailbox, TlsInfo};

impl Connection {
    /// This connection's milter hooks, opened with its first message.
    fn milters(&mut self) -> Option<&mut portcullis_milter::Session> {
        if self.inbound.milters.is_empty() {
            return None;
        }
        if self.milter.is_none() {
            let client = Client {
                hostname: self.config.hostname.clone(),
                daemon_name: self.role.name().to_owned(),
                addr: self.peer,
                name: self.ptr.clone(),
            };
            self.milter = Some(self.inbound.milters.session(self.role, client));
        }
        self.milter.as_mut()
    }

    /// MAIL FROM, as our own checks accepted it.
    pub(crate) async fn milter_mail(
        &mut self,
        account: Option<&str>,
        helo: &str,
        from: Option<&Mailbox>,
        params: &MailParams,
        tls: Option<&TlsInfo>,
    ) -> StageResult<()> {
        let mechanism = self.auth_mechanism;
        let Some(m) = self.milters() else {
            return Ok(());
        };
        let mail = Mail {
            helo,
            sender: from.map(|f| f.to_string()),
            params: mail_params(params),
            auth: account.map(|a| (a, mechanism)),
            tls: tls.map(|t| (t.version.as_str(), t.cipher.as_str())),
        };
        m.mail(&mail).await
    }

    /// One recipient, as our own checks accepted it.
    pub(crate) async fn milter_rcpt(&mut self, to: &Mailbox) -> StageResult<()> {
        match self.milters() {
            Some(m) => m.rcpt(&to.to_string()).await,
            None => Ok(()),
        }
    }

    /// The message (headers and body as they will be queued, without our
    /// own trace and authentication headers).
    pub(crate) async fn milter_message(
        &mut self,
        _txn: &Transaction,
        id: &str,
        content: &[u8],
    ) -> StageResult<Outcome> {
        match self.milters() {
            Some(m) => m.message(id, content).await,
            None => Ok(Outcome::default()),
        }
    }
}

/// The ESMTP parameters of MAIL FROM as the milter is told them.
fn mail_params(p: &MailParams) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(size) = p.size {
        v.push(format!("SIZE={size}"));
    }
    if p.body == portcullis_smtp::Body::EightBitMime {
        v.push("BODY=8BITMIME".to_owned());
    }
    if p.smtputf8 {
        v.push("SMTPUTF8".to_owned());
    }
    v
}
