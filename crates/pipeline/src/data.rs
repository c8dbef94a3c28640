//! The end of data: what portcullis decides about the message itself.
//! Submitted mail must carry owned From: addresses and gets Date,
//! Message-ID and a DKIM signature (RFC 6409 §8, submission.rs). Received
//! mail is authenticated (DKIM, ARC, DMARC over the SPF result kept since
//! MAIL FROM) and labelled in Authentication-Results; the recipient
//! domains' policy may refuse it or file it as junk; the signing domains'
//! lists, the class's byte budget and the domain-range rule apply; rspamd
//! gives its verdict. Each of these answers with a [`StageResult`]: the
//! first refusal ends the message, and what the others add (header lines,
//! a folder) is joined in order. Then `cleanup.rs` queues what was
//! accepted. Nothing here writes the spool.

use crate::outcome::disposition;
use crate::{Accept, Connection, StageResult, Transaction, checks, dnslists, rspamd};
use portcullis_admission::Verdict;
use portcullis_authn::{AuthResult, MessageResults, SpfCheck};
use portcullis_config::clock::now_secs;
use portcullis_metrics::Counter;
use portcullis_smtp::{Reply, Status};
use std::borrow::Cow;
use tracing::{info, warn};

/// The message as the end of data lets it through, for cleanup.
pub(crate) struct Message<'a> {
    /// What every stage added: header lines to prepend, the folder.
    pub accept: Accept,
    /// The content to queue after them.
    pub body: Cow<'a, [u8]>,
    pub origin: Origin,
    /// What the milters said beyond the content: envelope changes,
    /// discard, quarantine.
    pub milter: portcullis_milter::Outcome,
}

/// How the message came: submitted by an account, or received on port 25.
pub(crate) enum Origin {
    Submitted { message_id: String },
    Received(Box<Received>),
}

/// What authenticating and scanning a received message found, which
/// cleanup needs after queueing it.
pub(crate) struct Received {
    pub spf: SpfCheck,
    /// Domains it authenticated for: the SPF-passing MAIL FROM domain
    /// and every passing DKIM `d=`.
    pub domains: Vec<String>,
    pub verdict: Option<Verdict>,
    /// The message's row for its From: domain's DMARC aggregate report,
    /// recorded once the message is queued.
    pub dmarc_observation: Option<portcullis_dmarcrpt::Observation>,
}

impl Connection {
    /// The end of data: goes on with the queue id once the message is
    /// queued (write, fsync).
    pub async fn data(&mut self, txn: Transaction) -> StageResult<String> {
        let id = self.inbound.queue.new_id();
        let message = match txn.auth {
            Some(_) => self.submitted(&txn, &id).await?,
            None => self.received(&txn, &id).await?,
        };
        self.enqueue(&txn, &id, message).await
    }

    /// Submitted: our checks and additions, then the milters over the
    /// message with them, then the DKIM signature over what they left.
    async fn submitted<'a>(&mut self, txn: &'a Transaction, id: &str) -> StageResult<Message<'a>> {
        let hostname = &self.config.hostname;
        let prepared = self.inbound.submission.prepare(txn, hostname, id)?;
        let scanned = self.scan_submitted(txn, id).await?;
        let (body, milter) = if self.inbound.milters.is_empty() {
            (Cow::Borrowed(&txn.body[..]), Default::default())
        } else {
            let mut content = prepared.added.clone().into_bytes();
            content.extend_from_slice(&txn.body);
            let mut milter = self.milter_message(txn, id, &content).await?;
            let content = milter.data.take().unwrap_or(content);
            // Our additions are now part of the content.
            (Cow::Owned(content), milter)
        };
        let added = match &body {
            Cow::Borrowed(_) => prepared.added,
            Cow::Owned(_) => String::new(),
        };
        let mut signed = added.clone().into_bytes();
        signed.extend_from_slice(&body);
        let sigs = self.inbound.submission.sign(&prepared.domain, &signed);
        Ok(Message {
            accept: Accept::with_lines(vec![sigs + &added]).and(scanned),
            body,
            origin: Origin::Submitted {
                message_id: prepared.message_id,
            },
            milter,
        })
    }

    /// Outbound scanning (`[rspamd] scan_submission`): rspamd applies its
    /// rules for authenticated users (the `User` header); `reject` or
    /// `add header` is a strike against the account (containment), and
    /// a `reject` is refused as for received mail.
    async fn scan_submitted(&self, txn: &Transaction, id: &str) -> StageResult<Accept> {
        let (Some(cfg), Some(account)) = (&self.config.rspamd, txn.auth.as_deref()) else {
            return Ok(Accept::default());
        };
        if !cfg.scan_submission {
            return Ok(Accept::default());
        }
        let scan = self.rspamd(cfg, txn, id, Some(account), &txn.body).await?;
        if matches!(scan.action.as_str(), "reject" | "add header") {
            let now = now_secs();
            let strike = portcullis_containment::observe::spam_strike(id, now);
            let rules = &self.config.containment;
            let c = &self.inbound.containment;
            c.observe(rules, account, "spam_strike", &strike, now).await;
        }
        if scan.rejects() && cfg.reject {
            let text = format!("Message refused as spam (score {:.1})", scan.score);
            return Err(Reply::new(550, Status(5, 7, 1), text));
        }
        Ok(Accept::with_lines(vec![scan.headers()]))
    }

    /// Received: authenticated as it came (DKIM verifies what the sender
    /// signed), then the milters over it, then rspamd over what they left.
    async fn received<'a>(&mut self, txn: &'a Transaction, id: &str) -> StageResult<Message<'a>> {
        let (authenticated, mut found) = self.authenticate_message(txn).await?;
        let body = portcullis_authn::strip_forged_results(&txn.body, &self.config.hostname);
        let admitted = self.admit_data(txn, &found.domains).await?;
        let mut milter = self.milter_message(txn, id, &body).await?;
        let body = milter.data.take().unwrap_or(body);
        let (scanned, verdict) = self.scan(txn, id, &found.domains, &body).await?;
        found.verdict = verdict;
        Ok(Message {
            accept: authenticated.and(admitted).and(scanned),
            body: Cow::Owned(body),
            origin: Origin::Received(Box::new(found)),
            milter,
        })
    }

    /// DKIM, ARC and DMARC over the message, the domain policy and the
    /// signing domains' lists applied: goes on with Authentication-Results
    /// and the lists' lines (the client's, the sender's, the signers'),
    /// and the folder; and what cleanup needs to know.
    async fn authenticate_message(&self, txn: &Transaction) -> StageResult<(Accept, Received)> {
        let spf = self.spf_of(txn).await;
        let t0 = std::time::Instant::now();
        let mut r = self.inbound.checks.check_message(&txn.body, &spf).await;
        self.inbound.metrics.dns_check("message", t0.elapsed());
        self.count_results(&r);
        if let Some(iprev) = self.iprev {
            r.add_iprev(iprev, self.peer.ip());
        }
        let rcpt_domains = txn.recipients.iter().map(|r| r.mailbox.domain.as_str());
        let policy = checks::message_disposition(&self.config, rcpt_domains, &r);
        let lines = Accept::with_lines(vec![r.header.clone()])
            .and(self.client_labels.clone())
            .and(txn.findings.sender_labels.clone());
        // A listed signing domain refuses whatever the policy said.
        let decided = self
            .signing_lists(&r.dkim_domains)
            .await
            .and_then(|signers| policy.map(|folder| lines.and(signers).and(folder)));
        info!(
            session = %self.id, event = "authentication", spf = r.spf.as_str(), dkim = r.dkim.as_str(),
            dmarc = r.dmarc.as_str(), arc = r.arc.as_str(), from_domain = %r.from_domain, disposition = disposition(&decided)
        );
        let accept = decided?;
        let domains = authenticated_domains(&spf, &r);
        // RFC 7489 §7.2: the report says what we did with the message.
        let dmarc_observation = r.dmarc_observation.take().map(|mut o| {
            if accept.folder.is_some() {
                o.row.disposition = "quarantine".to_owned();
            }
            o
        });
        let found = Received {
            spf,
            domains,
            verdict: None,
            dmarc_observation,
        };
        Ok((accept, found))
    }

    /// The SPF check kept since MAIL FROM; made now for a transaction
    /// that came without one.
    async fn spf_of(&self, txn: &Transaction) -> SpfCheck {
        if let Some(spf) = &txn.findings.spf {
            return spf.clone();
        }
        let sender = txn.mail_from.as_ref().map(|m| m.to_string());
        let checks = &self.inbound.checks;
        checks
            .spf(self.peer.ip(), &txn.helo, sender.as_deref(), now_secs())
            .await
    }

    fn count_results(&self, r: &MessageResults) {
        for (method, result) in [("spf", r.spf), ("dkim", r.dkim), ("dmarc", r.dmarc)] {
            let labels = [("method", method), ("result", result.as_str())];
            self.inbound.metrics.inc(Counter::AuthResults, &labels);
        }
    }

    /// The domain lists about every DKIM signer: their lines, or the
    /// refusal of the last listed signer.
    async fn signing_lists(&self, signers: &[String]) -> StageResult {
        let (checks, lists) = (self.inbound.checks.as_ref(), &self.config.dns_lists);
        let mut out = Ok(Accept::default());
        for d in signers {
            let listed = dnslists::domain(checks, lists, d, "Signing").await;
            out = match (out, listed) {
                (_, Err(refused)) => Err(refused),
                (Ok(so_far), Ok(more)) => Ok(so_far.and(more)),
                (refused, Ok(_)) => refused,
            };
        }
        out
    }

    /// Bytes, and the domain-range rule, which refuses only where a
    /// recipient domain's policy stage refuses (otherwise it labels).
    async fn admit_data(&self, txn: &Transaction, domains: &[String]) -> StageResult {
        let Some(g) = &self.gate else {
            return Ok(Accept::default());
        };
        let null = txn.mail_from.is_none();
        let bytes = txn.body.len() as u64;
        let rcpt_domains = txn.recipients.iter().map(|r| r.mailbox.domain.as_str());
        let refusing = checks::policy_refuses(&self.config, rcpt_domains);
        let admission = &self.inbound.admission;
        let label = admission.data(g, bytes, domains, null, refusing).await?;
        Ok(Accept::with_lines(label.into_iter().collect()))
    }

    /// rspamd's verdict, when configured: goes on with its header lines
    /// and the verdict for reputation. A scanner that does not answer
    /// defers the message (451 4.7.1) rather than letting it through
    /// unscanned; a "reject" is refused when the config says so.
    async fn scan(
        &self,
        txn: &Transaction,
        id: &str,
        domains: &[String],
        content: &[u8],
    ) -> StageResult<(Accept, Option<Verdict>)> {
        let Some(cfg) = &self.config.rspamd else {
            return Ok((Accept::default(), None));
        };
        let scan = self.rspamd(cfg, txn, id, None, content).await?;
        if scan.rejects() && cfg.reject {
            self.count_message(domains, scan.verdict()).await;
            let text = format!("Message refused as spam (score {:.1})", scan.score);
            return Err(Reply::new(550, Status(5, 7, 1), text));
        }
        Ok((Accept::with_lines(vec![scan.headers()]), scan.verdict()))
    }

    /// One rspamd scan; a scanner that does not answer defers (451 4.7.1).
    async fn rspamd(
        &self,
        cfg: &portcullis_config::Rspamd,
        txn: &Transaction,
        id: &str,
        user: Option<&str>,
        content: &[u8],
    ) -> StageResult<rspamd::Scan> {
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
            user,
        };
        match rspamd::check(cfg, &env, content).await {
            Ok(scan) => {
                info!(session = %self.id, event = "rspamd", action = %scan.action, score = scan.score, user);
                Ok(scan)
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

/// The domains a received message authenticated for: the SPF-passing
/// MAIL FROM domain, then every DKIM signer, each once, in lower case.
fn authenticated_domains(spf: &SpfCheck, r: &MessageResults) -> Vec<String> {
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
    domains
}
