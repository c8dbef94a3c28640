//! The end of data: what portcullis decides about the message itself.
//! Submitted mail must carry owned From: addresses and gets Date,
//! Message-ID and a DKIM signature (RFC 6409 §8, submission.rs). Received
//! mail is authenticated (DKIM, ARC, DMARC over the SPF result kept since
//! MAIL FROM) and labelled in Authentication-Results; the recipient
//! domains' policy may refuse it or file it as junk; the signing domains'
//! lists, the class's byte budget and the domain-range rule apply; rspamd
//! gives its verdict. Then `cleanup.rs` queues what was accepted.

use crate::checks::{self, Disposition};
use crate::{Connection, rspamd};
use portcullis_admission::Verdict;
use portcullis_authn::{AuthResult, SpfCheck};
use portcullis_config::clock::now_secs;
use portcullis_metrics::Counter;
use portcullis_smtp::{Reply, Status, Transaction};
use std::borrow::Cow;
use tracing::{info, warn};

/// What the end of data decided about a message it accepts.
pub(crate) struct Accepted<'a> {
    /// Header lines to prepend.
    pub headers: String,
    /// The content to queue after them.
    pub body: Cow<'a, [u8]>,
    /// Maildir++ folder for local recipients (`Junk`).
    pub folder: Option<String>,
    pub origin: Origin,
}

/// How the message came: submitted by an account, or received on port 25.
pub(crate) enum Origin {
    Submitted {
        message_id: String,
    },
    Received {
        spf: Box<SpfCheck>,
        /// Domains it authenticated for: the SPF-passing MAIL FROM domain
        /// and every passing DKIM `d=`.
        domains: Vec<String>,
        verdict: Option<Verdict>,
        /// The message's row for its From: domain's DMARC aggregate
        /// report, recorded once the message is queued.
        dmarc_observation: Option<Box<portcullis_dmarcrpt::Observation>>,
    },
}

/// What authenticating a received message found, once it is not refused.
struct Authenticated {
    header: String,
    /// Maildir++ folder (`Junk`) where the domain policy files it there.
    folder: Option<String>,
    spf: SpfCheck,
    /// Domains it authenticated for.
    domains: Vec<String>,
    dmarc_observation: Option<Box<portcullis_dmarcrpt::Observation>>,
}

impl Connection {
    /// The end of data: the reply to the message, after it is queued
    /// (write, fsync) when accepted.
    pub async fn data(&mut self, txn: Transaction) -> Reply {
        let id = self.inbound.queue.new_id();
        let decided = match txn.auth {
            Some(_) => self.submitted(&txn, &id),
            None => self.received(&txn, &id).await,
        };
        match decided {
            Ok(accepted) => self.enqueue(&txn, &id, accepted).await,
            Err(reply) => reply,
        }
    }

    fn submitted<'a>(&self, txn: &'a Transaction, id: &str) -> Result<Accepted<'a>, Reply> {
        let (headers, message_id) =
            self.inbound
                .submission
                .prepare(txn, &self.config.hostname, id)?;
        Ok(Accepted {
            headers,
            body: Cow::Borrowed(&txn.body),
            folder: None,
            origin: Origin::Submitted { message_id },
        })
    }

    async fn received<'a>(
        &mut self,
        txn: &'a Transaction,
        id: &str,
    ) -> Result<Accepted<'a>, Reply> {
        let Authenticated {
            header: mut headers,
            folder,
            spf,
            domains,
            dmarc_observation,
        } = self.authenticate_message(txn).await?;
        let body = portcullis_authn::strip_forged_results(&txn.body, &self.config.hostname);
        if let Some(label) = self.admit_data(txn, &domains).await? {
            headers.push_str(&label);
        }
        let mut verdict = None;
        if let Some(scan) = self.scan(txn, id, &domains).await? {
            headers.push_str(&scan.headers());
            verdict = scan.verdict();
        }
        Ok(Accepted {
            headers,
            body: Cow::Owned(body),
            folder,
            origin: Origin::Received {
                spf: Box::new(spf),
                domains,
                verdict,
                dmarc_observation,
            },
        })
    }

    /// DKIM, ARC and DMARC over the message, the domain policy applied:
    /// the header lines, the folder, the SPF check and the domains the
    /// message authenticated for; or the refusal.
    async fn authenticate_message(&mut self, txn: &Transaction) -> Result<Authenticated, Reply> {
        // The transaction's state ends here, whatever happens next.
        let txn_state = self.txn.take().unwrap_or_default();
        let ip = self.peer.ip();
        let spf = match txn_state.spf {
            Some(s) => s,
            None => {
                let sender = txn.mail_from.as_ref().map(|m| m.to_string());
                let checks = &self.inbound.checks;
                checks
                    .spf(ip, &txn.helo, sender.as_deref(), now_secs())
                    .await
            }
        };
        let t0 = std::time::Instant::now();
        let mut r = self.inbound.checks.check_message(&txn.body, &spf).await;
        self.inbound.metrics.dns_check("message", t0.elapsed());
        let rcpt_domains = txn.recipients.iter().map(|r| r.mailbox.domain.as_str());
        let mut disposition = checks::message_disposition(&self.config, rcpt_domains, &r);
        for (method, result) in [("spf", r.spf), ("dkim", r.dkim), ("dmarc", r.dmarc)] {
            let labels = [("method", method), ("result", result.as_str())];
            self.inbound.metrics.inc(Counter::AuthResults, &labels);
        }
        if let Some(iprev) = self.iprev {
            r.add_iprev(iprev, ip);
        }
        let mut header = r.header.clone();
        let mut labels = txn_state.labels;
        for d in &r.dkim_domains {
            let lists = &self.config.dns_lists;
            match crate::dnslists::domain(self.inbound.checks.as_ref(), lists, d, "Signing").await {
                Ok(l) => labels.extend(l),
                Err(reply) => disposition = Disposition::Reject(reply),
            }
        }
        header.extend(self.client_labels.iter().cloned());
        header.extend(labels);
        info!(
            session = %self.id, event = "authentication", spf = r.spf.as_str(), dkim = r.dkim.as_str(),
            dmarc = r.dmarc.as_str(), arc = r.arc.as_str(), from_domain = %r.from_domain, disposition = disposition.as_str()
        );
        let folder = match disposition {
            Disposition::Accept => None,
            Disposition::Junk => Some("Junk".to_owned()),
            Disposition::Defer(reply) | Disposition::Reject(reply) => return Err(reply),
        };
        let mut domains = Vec::new();
        if r.spf == AuthResult::Pass && !spf.domain().is_empty() {
            domains.push(spf.domain().to_ascii_lowercase());
        }
        for d in &r.dkim_domains {
            let d = d.to_ascii_lowercase();
            if !domains.contains(&d) {
                domains.push(d);
            }
        }
        // RFC 7489 §7.2: the report says what we did with the message.
        let dmarc_observation = r.dmarc_observation.take().map(|mut o| {
            if folder.is_some() {
                o.disposition = "quarantine".to_owned();
            }
            Box::new(o)
        });
        Ok(Authenticated {
            header,
            folder,
            spf,
            domains,
            dmarc_observation,
        })
    }

    /// Bytes, and the domain-range rule, which refuses only where a
    /// recipient domain's policy stage refuses (otherwise it labels).
    async fn admit_data(
        &self,
        txn: &Transaction,
        domains: &[String],
    ) -> Result<Option<String>, Reply> {
        let Some(g) = &self.gate else {
            return Ok(None);
        };
        let null = txn.mail_from.is_none();
        let bytes = txn.body.len() as u64;
        let rcpt_domains = txn.recipients.iter().map(|r| r.mailbox.domain.as_str());
        let refusing = checks::policy_refuses(&self.config, rcpt_domains);
        self.inbound
            .admission
            .data(g, bytes, domains, null, refusing)
            .await
    }

    /// rspamd's verdict, when configured. A scanner that does not answer
    /// defers the message (451 4.7.1) rather than letting it through
    /// unscanned; a "reject" is refused when the config says so.
    async fn scan(
        &self,
        txn: &Transaction,
        id: &str,
        domains: &[String],
    ) -> Result<Option<rspamd::Scan>, Reply> {
        let Some(cfg) = &self.config.rspamd else {
            return Ok(None);
        };
        let from = txn
            .mail_from
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default();
        let rcpts: Vec<String> = txn
            .recipients
            .iter()
            .map(|r| r.mailbox.to_string())
            .collect();
        let env = rspamd::Envelope {
            ip: self.peer.ip(),
            helo: &txn.helo,
            from: &from,
            rcpts: rcpts.iter().map(String::as_str).collect(),
            queue_id: id,
        };
        match rspamd::check(cfg, &env, &txn.body).await {
            Ok(scan) => {
                info!(session = %self.id, event = "rspamd", action = %scan.action, score = scan.score);
                if scan.rejects() && cfg.reject {
                    self.count_message(domains, scan.verdict()).await;
                    let text = format!("Message refused as spam (score {:.1})", scan.score);
                    return Err(Reply::new(550, Status(5, 7, 1), text));
                }
                Ok(Some(scan))
            }
            Err(e) => {
                warn!(session = %self.id, event = "rspamd_failed", error = %e);
                let text = "Content scanner unavailable, try again later";
                Err(Reply::new(451, Status(4, 7, 1), text))
            }
        }
    }

    /// After a message was judged (accepted, or refused as spam): its
    /// volume and quality count for the sender's identity.
    pub(crate) async fn count_message(&self, domains: &[String], verdict: Option<Verdict>) {
        if let Some(g) = &self.gate {
            self.inbound.admission.judged(g, domains, verdict).await;
        }
    }
}
