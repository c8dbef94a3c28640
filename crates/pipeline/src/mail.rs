//! MAIL FROM. On the submission ports the account must own the sender
//! (spamops §3.1) within its message rate. On port 25 a sender in one of
//! our own domains belongs on the submission port; then the sender's
//! domain lists, SPF (RFC 7208, kept for the end of data), and the
//! class's message budget, which an SPF pass may first move to the
//! domain's own class.

use crate::{Accept, Connection, StageResult, Txn, checks, dnslists};
use portcullis_authn::{AuthResult, SpfCheck};
use portcullis_config::clock::now_secs;
use portcullis_smtp::{MailParams, Mailbox, TlsInfo};
use tracing::info;

impl Connection {
    /// Goes on with what the new transaction carries to the end of data.
    /// The milters (`milter.rs`) are asked once our own checks accept.
    pub async fn mail(
        &mut self,
        account: Option<&str>,
        helo: &str,
        from: Option<&Mailbox>,
        params: &MailParams,
        tls: Option<&TlsInfo>,
    ) -> StageResult<Txn> {
        let ours = match account {
            Some(account) => {
                let state = &self.inbound.admission.state;
                let submission = &self.inbound.submission;
                let rules = &self.config.containment;
                let contained = self.inbound.containment.admit(rules, account, now_secs());
                contained.await?;
                let owned = submission.check_sender(state, account, from).await;
                owned.map(|()| Txn::default())
            }
            None => self.mx_mail(helo, from).await,
        };
        let result = match ours {
            Ok(txn) => self
                .milter_mail(account, helo, from, params, tls)
                .await
                .map(|()| txn),
            refused => refused,
        };
        let shown = from.map_or_else(|| "<>".to_owned(), |m| m.to_string());
        info!(session = %self.id, event = "mail", from = %shown, account, accepted = result.is_ok());
        result
    }

    async fn mx_mail(&mut self, helo: &str, from: Option<&Mailbox>) -> StageResult<Txn> {
        checks::mx_sender(&self.config, self.peer.ip(), from)?;
        let sender_labels = match from {
            Some(from) => {
                let lists = &self.config.dns_lists;
                let checks = self.inbound.checks.as_ref();
                dnslists::domain(checks, lists, &from.domain, "Sender").await?
            }
            None => Accept::default(),
        };
        let spf = self.check_spf(helo, from).await;
        self.admit_message(&spf).await?;
        Ok(Txn {
            spf: Some(spf),
            sender_labels,
        })
    }

    /// SPF at MAIL FROM (RFC 7208 §2.4: the HELO identity for `<>`); the
    /// result waits for the end of data, where the policy uses it.
    async fn check_spf(&mut self, helo: &str, from: Option<&Mailbox>) -> SpfCheck {
        let sender = from.map(|m| m.to_string());
        let t0 = std::time::Instant::now();
        let now = now_secs();
        let checks = self.inbound.checks.clone();
        let mut spf = checks
            .spf(self.peer.ip(), helo, sender.as_deref(), now)
            .await;
        // The null sender's check already is the HELO check.
        if sender.is_some() {
            spf.helo_result = self.helo_spf(helo, now).await;
        }
        self.inbound.metrics.dns_check("spf", t0.elapsed());
        info!(session = %self.id, event = "spf", result = spf.result().as_str(), domain = %spf.domain(), reason = %spf.reason);
        spf
    }

    /// The HELO identity's SPF result, checked once per HELO name of the
    /// connection rather than once per transaction.
    async fn helo_spf(&mut self, helo: &str, now: u64) -> Option<portcullis_authn::SpfOutput> {
        if let Some((name, out)) = &self.helo_spf
            && name == helo
        {
            return out.clone();
        }
        let out = self
            .inbound
            .checks
            .helo_check(self.peer.ip(), helo, now)
            .await;
        self.helo_spf = Some((helo.to_owned(), out.clone()));
        out
    }

    /// The SPF-authenticated domain (if any) moves the client to its
    /// class; one message is drawn from the budget.
    async fn admit_message(&mut self, spf: &SpfCheck) -> StageResult<()> {
        let spf_pass = (spf.result() == AuthResult::Pass).then(|| spf.domain());
        match self.gate.as_mut() {
            Some(g) => self.inbound.admission.mail(g, spf_pass).await,
            None => Ok(()),
        }
    }
}
