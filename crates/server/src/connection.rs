//! One SMTP connection: the small, mechanical loop around the session
//! (feed what the socket gives, do what the session asks, write replies).

use crate::{Context, checks, tls};
use portcullis_authn::AuthResult;
use portcullis_config::ListenerRole;
use portcullis_metrics::{Counter, Outcome};
use portcullis_queue::{Envelope, QueuedRecipient, StoredMessage};
use portcullis_smtp::{Action, Peer, Reply, Session, SessionConfig, Status, Transaction, Verdict};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::timeout;
use tracing::{info, warn};

/// Read sizes while waiting for a command and while reading content.
const COMMAND_READ: usize = 1024;
const DATA_READ: usize = 32 * 1024;

/// Longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct Connection {
    pub ctx: Arc<Context>,
    /// The configuration in force when the connection arrived.
    pub config: Arc<portcullis_config::Config>,
    /// Becomes true when the server is stopping.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    pub id: String,
    pub role: ListenerRole,
    pub pregreet_wait: Duration,
    pub session_config: Arc<SessionConfig>,
    pub peer: SocketAddr,
    /// The authenticated account's session slot, while authenticated.
    pub account_session: std::sync::Mutex<Option<crate::submission::AccountSession>>,
    /// SPF of the current transaction, from MAIL FROM to end of data.
    pub spf: std::sync::Mutex<Option<portcullis_authn::SpfCheck>>,
    /// "User unknown" answers given so far: each makes every further reply
    /// wait longer (a tarpit for address harvesters).
    pub tarpit: std::sync::atomic::AtomicU32,
    /// Header lines from label-only DNS lists about the client address, for
    /// every message of the connection ...
    pub client_labels: std::sync::Mutex<Vec<String>>,
    /// The client's reverse-DNS result (iprev), found at connect on port 25.
    pub iprev: std::sync::Mutex<Option<AuthResult>>,
    /// The HELO name's own SPF result, kept for the connection's later
    /// transactions.
    pub helo_spf: std::sync::Mutex<Option<(String, Option<portcullis_authn::SpfOutput>)>>,
    /// ... and about the current transaction's domains.
    pub list_labels: std::sync::Mutex<Vec<String>>,
    /// The class of service of a port-25 client.
    pub gate: tokio::sync::Mutex<Option<crate::admission::Gate>>,
}

/// What inbound authentication found, for delivery and for admission.
struct Inbound {
    header: String,
    folder: Option<String>,
    spf: AuthResult,
    /// The SPF check itself, for the ARC seal of forwarded copies.
    spf_check: portcullis_authn::SpfCheck,
    /// Domains the message authenticated for: the SPF-passing MAIL FROM
    /// domain and every passing DKIM `d=`.
    domains: Vec<String>,
}

enum Exit {
    Closed,
    StartTls,
}

type IoResult<T> = std::io::Result<T>;

impl Connection {
    pub(crate) async fn run(self, stream: TcpStream, permit: Option<OwnedSemaphorePermit>) {
        info!(session = %self.id, event = "connect", listener = self.role.name(), peer = %self.peer);
        let result = self.serve(stream, permit.is_some()).await;
        match result {
            Ok(()) => info!(session = %self.id, event = "disconnect"),
            Err(e) => info!(session = %self.id, event = "disconnect", error = %e),
        }
        drop(permit);
    }

    fn session(&self, ptr: Option<String>) -> Session {
        let peer = Peer {
            addr: self.peer,
            ptr,
        };
        Session::new(self.session_config.clone(), peer, None)
    }

    /// Connect stage on port 25: the client's forward-confirmed reverse
    /// name (for Received) and the address lists.
    async fn connect_checks(&self) -> (Option<String>, Option<Reply>) {
        if self.role != ListenerRole::Mx {
            return (None, None);
        }
        let ctx = &self.ctx;
        // The class of service first: a blocked or over-limit client costs
        // no DNS lookups.
        match ctx.admission.connect(self.peer.ip()).await {
            Ok(gate) => {
                self.slow_down(gate.unknown_users).await;
                *self.gate.lock().await = Some(gate);
            }
            Err(r) => return (None, Some(r)),
        }
        let t0 = std::time::Instant::now();
        let (iprev, ptr) = ctx.verifier.iprev(self.peer.ip()).await;
        ctx.metrics.dns_check("iprev", t0.elapsed());
        info!(session = %self.id, event = "iprev", result = iprev.as_str(), ptr = ptr.as_deref().unwrap_or(""));
        if let Ok(mut held) = self.iprev.lock() {
            *held = Some(iprev);
        }
        let lists =
            crate::dnslists::client(&ctx.verifier, &self.config.dns_lists, self.peer.ip()).await;
        if let Ok(mut held) = self.client_labels.lock() {
            *held = lists.labels;
        }
        let refusal = lists.refusal.or_else(|| {
            checks::reverse_dns_refusal(&self.config.reverse_dns, iprev, self.peer.ip())
        });
        (ptr, refusal)
    }

    fn remember_labels(&self, labels: Vec<String>) {
        if let Ok(mut held) = self.list_labels.lock() {
            held.extend(labels);
        }
    }

    async fn serve(&self, mut stream: TcpStream, admitted: bool) -> IoResult<()> {
        let (ptr, refusal) = if admitted {
            self.connect_checks().await
        } else {
            (None, None)
        };
        let mut session = self.session(ptr);
        let outcome = match (&refusal, admitted) {
            (_, false) => "refused_max_sessions",
            (Some(_), true) => "refused_dns_list",
            (None, true) => "admitted",
        };
        self.ctx.metrics.inc(
            Counter::Connections,
            &[("listener", self.role.name()), ("outcome", outcome)],
        );
        if !admitted {
            warn!(session = %self.id, event = "refused", reason = "max_sessions");
            session.refuse(Reply::new(
                421,
                Status(4, 7, 0),
                "Too many connections, try again later",
            ));
            self.drive(&mut stream, &mut session).await?;
            return Ok(());
        }
        if self.role == ListenerRole::Submissions {
            return Box::pin(self.serve_implicit_tls(stream, session)).await;
        }
        if let Some(r) = refusal {
            info!(session = %self.id, event = "refused", reason = "dns_list", reply = %r);
            session.refuse(r);
        } else if self.talks_first(&stream).await {
            info!(session = %self.id, event = "refused", reason = "early_talker");
            session.refuse_early_talker();
        } else {
            session.start();
        }
        if let Exit::StartTls = self.drive(&mut stream, &mut session).await? {
            // Boxed: the TLS state is large, and most sessions never need it
            // (it would otherwise sit in every connection task's future).
            Box::pin(self.continue_in_tls(stream, session)).await?;
        }
        Ok(())
    }

    async fn continue_in_tls(&self, stream: TcpStream, mut session: Session) -> IoResult<()> {
        let mut tls = self.handshake(stream).await?;
        session.tls_established(tls::describe(tls.get_ref().1));
        self.log_tls(&session);
        self.drive(&mut tls, &mut session).await?;
        Ok(())
    }

    /// RFC 8314: on 465 TLS starts at once, and the greeting comes after.
    async fn serve_implicit_tls(&self, stream: TcpStream, mut session: Session) -> IoResult<()> {
        let mut tls = self.handshake(stream).await?;
        session.tls_established(tls::describe(tls.get_ref().1));
        self.log_tls(&session);
        session.start();
        self.drive(&mut tls, &mut session).await?;
        Ok(())
    }

    async fn handshake(
        &self,
        stream: TcpStream,
    ) -> IoResult<tokio_rustls::server::TlsStream<TcpStream>> {
        match timeout(HANDSHAKE_TIMEOUT, self.ctx.tls().accept(stream)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            )),
        }
    }

    fn log_tls(&self, s: &Session) {
        if let Some(t) = s.tls() {
            info!(session = %self.id, event = "tls", version = %t.version, cipher = %t.cipher);
        }
    }

    /// postscreen's pregreet test: a client that sends before our greeting
    /// is not an SMTP client waiting for replies. With no wait configured
    /// this still catches bytes that arrived with the connection.
    async fn talks_first(&self, stream: &TcpStream) -> bool {
        let mut probe = [0u8; 1];
        matches!(timeout(self.pregreet_wait, stream.peek(&mut probe)).await, Ok(Ok(n)) if n > 0)
    }

    /// Run the session over `io` until it closes or asks for TLS.
    async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: &mut S,
        s: &mut Session,
    ) -> IoResult<Exit> {
        let mut out = Vec::with_capacity(512);
        let mut buf = Vec::new();
        loop {
            while let Some(action) = s.poll() {
                match action {
                    Action::Reply(r) => {
                        if r.code >= 400 {
                            info!(session = %self.id, event = "reply", reply = %r);
                            let code = r
                                .status
                                .map_or_else(|| r.code.to_string(), |s| s.to_string());
                            self.ctx.metrics.inc(
                                Counter::MessagesRejected,
                                &[("listener", self.role.name()), ("code", &code)],
                            );
                            let o = if r.code < 500 {
                                Outcome::Deferred
                            } else {
                                Outcome::Rejected
                            };
                            self.ctx
                                .metrics
                                .outcome(o, portcullis_config::clock::now_secs());
                        }
                        r.write_to(&mut out);
                    }
                    Action::StartTls => {
                        self.write_out(io, &mut out, s).await?;
                        return Ok(Exit::StartTls);
                    }
                    Action::Authenticate(c) => {
                        let (outcome, slot) = self
                            .ctx
                            .submission
                            .authenticate(&self.ctx.admission.state, self.peer.ip(), c)
                            .await;
                        if let Ok(mut held) = self.account_session.lock() {
                            *held = slot;
                        }
                        s.answer_auth(outcome);
                    }
                    Action::CheckMail { from, .. } => {
                        let mut verdict = match s.authenticated() {
                            Some(account) => {
                                self.ctx
                                    .submission
                                    .check_sender(&self.ctx.admission.state, account, from.as_ref())
                                    .await
                            }
                            None => checks::mx_sender(&self.config, self.peer.ip(), from.as_ref()),
                        };
                        if verdict == Verdict::Accept && s.authenticated().is_none() {
                            match self.sender_lists(from.as_ref()).await {
                                Some(r) => verdict = Verdict::Reject(r),
                                None => {
                                    self.check_spf(s.helo_name().unwrap_or(""), from.as_ref())
                                        .await;
                                    if let Err(r) = self.admit_message().await {
                                        verdict = Verdict::Reject(r);
                                    }
                                }
                            }
                        }
                        let from = from.map_or_else(|| "<>".to_owned(), |m| m.to_string());
                        info!(session = %self.id, event = "mail", from = %from, account = s.authenticated(), accepted = verdict == Verdict::Accept);
                        s.answer(verdict);
                    }
                    Action::CheckRcpt { to, .. } => {
                        let verdict = match s.authenticated() {
                            Some(account) => {
                                self.ctx
                                    .submission
                                    .check_recipient(
                                        &self.ctx.admission.state,
                                        &self.config,
                                        account,
                                        &to,
                                    )
                                    .await
                            }
                            None => self.mx_recipient(&to, s.recipient_count()).await,
                        };
                        if checks::is_user_unknown(&verdict) {
                            self.tarpit
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let range = self.ctx.admission.policy().range_of(self.peer.ip());
                            self.ctx.admission.state.penalize(range).await;
                        }
                        info!(session = %self.id, event = "rcpt", to = %to, accepted = verdict == Verdict::Accept);
                        s.answer(verdict);
                    }
                    Action::Deliver(txn) => {
                        // Replies before DATA's end go out now, so the client
                        // is not kept waiting for them behind the fsync.
                        self.write_out(io, &mut out, s).await?;
                        let reply = self.accept_message(*txn).await;
                        s.answer_data(reply);
                    }
                    Action::Close => {
                        self.write_out(io, &mut out, s).await?;
                        let _ = timeout(Duration::from_secs(5), io.shutdown()).await;
                        return Ok(Exit::Closed);
                    }
                }
            }
            self.write_out(io, &mut out, s).await?;
            // Idle sessions between commands hold a small buffer; content
            // is read in large pieces.
            let want = if s.in_data() { DATA_READ } else { COMMAND_READ };
            if buf.len() != want {
                buf = vec![0u8; want];
            }
            // A stopping server lets a message being sent finish, and
            // tells everyone else 421 at once.
            let in_data = s.in_data();
            let mut stop = self.shutdown.clone();
            let stopping = async move {
                if in_data || stop.wait_for(|v| *v).await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                biased;
                () = stopping => s.shut_down(),
                read = timeout(s.timeout(), io.read(&mut buf)) => match read {
                    Err(_) => s.timed_out(),
                    Ok(Ok(0)) => return Ok(Exit::Closed),
                    Ok(Ok(n)) => s.feed(&buf[..n]),
                    Ok(Err(e)) => return Err(e),
                },
            }
        }
    }

    /// Write pending replies, within the session's timeout: a client that
    /// stops reading must not hold the task forever.
    async fn write_out<S: AsyncWrite + Unpin>(
        &self,
        io: &mut S,
        out: &mut Vec<u8>,
        s: &Session,
    ) -> IoResult<()> {
        if out.is_empty() {
            return Ok(());
        }
        let unknown = self.tarpit.load(std::sync::atomic::Ordering::Relaxed);
        if unknown > 0 {
            tokio::time::sleep(self.tarpit_delay(unknown)).await;
        }
        let write = async {
            io.write_all(out).await?;
            io.flush().await
        };
        match timeout(s.timeout(), write).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "client stopped reading",
                ));
            }
        }
        out.clear();
        Ok(())
    }

    /// SPF at MAIL FROM (RFC 7208 §2.4: the HELO identity for `<>`); the
    /// result waits for the end of data, where the policy uses it.
    /// Domain lists for the MAIL FROM domain.
    async fn sender_lists(&self, from: Option<&portcullis_smtp::Mailbox>) -> Option<Reply> {
        // A new transaction: labels about an abandoned one's sender (MAIL,
        // then RSET) must not reach this message.
        if let Ok(mut held) = self.list_labels.lock() {
            held.clear();
        }
        let from = from?;
        let ctx = &self.ctx;
        let out = crate::dnslists::domain(
            &ctx.verifier,
            &self.config.dns_lists,
            &from.domain,
            "Sender",
        )
        .await;
        self.remember_labels(out.labels);
        out.refusal
    }

    /// The slides' "if a client causes user unknown, taking a longer time
    /// to accept the next connection from the client": the greeting waits
    /// as a reply in the tarpit would.
    async fn slow_down(&self, unknown_users: u32) {
        if unknown_users > 0 {
            tokio::time::sleep(self.tarpit_delay(unknown_users)).await;
        }
    }

    fn tarpit_delay(&self, unknown: u32) -> Duration {
        let l = &self.config.limits;
        let ms = l
            .tarpit_step_ms
            .saturating_mul(u64::from(unknown))
            .min(l.tarpit_max_ms);
        Duration::from_millis(ms)
    }

    /// MAIL FROM on port 25: the SPF-authenticated domain (if any) moves
    /// the client to its class; one message is drawn from the budget.
    async fn admit_message(&self) -> Result<(), Reply> {
        let spf_pass = self.spf.lock().ok().and_then(|s| {
            s.as_ref()
                .filter(|c| c.result() == AuthResult::Pass)
                .map(|c| c.domain().to_owned())
        });
        let mut gate = self.gate.lock().await;
        match gate.as_mut() {
            Some(g) => self.ctx.admission.mail(g, spf_pass.as_deref()).await,
            None => Ok(()),
        }
    }

    /// RCPT on port 25: one of our SRS addresses (a bounce going back to
    /// the original sender), an alias, or a mailbox; then the class's
    /// budget.
    async fn mx_recipient(&self, to: &portcullis_smtp::Mailbox, so_far: usize) -> Verdict {
        let known = match self.ctx.forwarding.srs_reverse(to) {
            Some(Ok(_)) => return self.admit_recipient(so_far).await,
            Some(Err(why)) => {
                return Verdict::Reject(Reply::new(550, Status(5, 1, 1), format!("<{to}>: {why}")));
            }
            None => self.ctx.submission.recipient_exists(to) || self.ctx.forwarding.is_alias(to),
        };
        match checks::recipient(&self.config, to, known) {
            Verdict::Accept => self.admit_recipient(so_far).await,
            refused => refused,
        }
    }

    async fn admit_recipient(&self, so_far: usize) -> Verdict {
        let gate = self.gate.lock().await;
        match gate.as_ref() {
            Some(g) => match self.ctx.admission.rcpt(g, so_far).await {
                Ok(()) => Verdict::Accept,
                Err(r) => Verdict::Reject(r),
            },
            None => Verdict::Accept,
        }
    }

    async fn check_spf(&self, helo: &str, from: Option<&portcullis_smtp::Mailbox>) {
        let sender = from.map(|m| m.to_string());
        let t0 = std::time::Instant::now();
        let now = portcullis_config::clock::now_secs();
        let verifier = &self.ctx.verifier;
        let mut spf = verifier
            .spf(self.peer.ip(), helo, sender.as_deref(), now)
            .await;
        // The null sender's check already is the HELO check.
        if sender.is_some() {
            spf.helo_result = self.helo_spf(helo, now).await;
        }
        self.ctx.metrics.dns_check("spf", t0.elapsed());
        info!(session = %self.id, event = "spf", result = spf.result().as_str(), domain = %spf.domain(), reason = %spf.reason);
        if let Ok(mut slot) = self.spf.lock() {
            *slot = Some(spf);
        }
    }

    /// The HELO identity's SPF result, checked once per HELO name of the
    /// connection rather than once per transaction.
    async fn helo_spf(&self, helo: &str, now: u64) -> Option<portcullis_authn::SpfOutput> {
        if let Ok(held) = self.helo_spf.lock()
            && let Some((name, out)) = &*held
            && name == helo
        {
            return out.clone();
        }
        let out = self
            .ctx
            .verifier
            .helo_check(self.peer.ip(), helo, now)
            .await;
        if let Ok(mut held) = self.helo_spf.lock() {
            *held = Some((helo.to_owned(), out.clone()));
        }
        out
    }

    /// DKIM, ARC and DMARC over an inbound message, the domain policy
    /// applied: the Authentication-Results header to prepend, the folder to
    /// deliver to, or the refusal.
    async fn authenticate_inbound(&self, txn: &Transaction) -> Result<Inbound, Reply> {
        let stored = self.spf.lock().ok().and_then(|mut s| s.take());
        let spf = match stored {
            Some(s) => s,
            None => {
                let sender = txn.mail_from.as_ref().map(|m| m.to_string());
                self.ctx
                    .verifier
                    .spf(
                        self.peer.ip(),
                        &txn.helo,
                        sender.as_deref(),
                        portcullis_config::clock::now_secs(),
                    )
                    .await
            }
        };
        let t0 = std::time::Instant::now();
        let r = self.ctx.verifier.check_message(&txn.body, &spf).await;
        self.ctx.metrics.dns_check("message", t0.elapsed());
        let domains = txn.recipients.iter().map(|r| r.mailbox.domain.as_str());
        let mut disposition = checks::message_disposition(&self.config, domains, &r);
        for (method, result) in [("spf", r.spf), ("dkim", r.dkim), ("dmarc", r.dmarc)] {
            self.ctx.metrics.inc(
                Counter::AuthResults,
                &[("method", method), ("result", result.as_str())],
            );
        }
        let iprev = self.iprev.lock().ok().and_then(|i| *i);
        let mut r = r;
        if let Some(iprev) = iprev {
            r.add_iprev(iprev, self.peer.ip());
        }
        let mut header = r.header.clone();
        for d in &r.dkim_domains {
            let out =
                crate::dnslists::domain(&self.ctx.verifier, &self.config.dns_lists, d, "Signing")
                    .await;
            self.remember_labels(out.labels);
            if let Some(reply) = out.refusal {
                disposition = checks::Disposition::Reject(reply);
            }
        }
        if let Ok(labels) = self.client_labels.lock() {
            header.extend(labels.iter().cloned());
        }
        if let Ok(mut labels) = self.list_labels.lock() {
            header.extend(labels.drain(..));
        }
        info!(
            session = %self.id, event = "authentication", spf = r.spf.as_str(), dkim = r.dkim.as_str(),
            dmarc = r.dmarc.as_str(), arc = r.arc.as_str(), from_domain = %r.from_domain, disposition = ?disposition
        );
        let folder = match disposition {
            checks::Disposition::Accept => None,
            checks::Disposition::Junk => Some("Junk".to_owned()),
            checks::Disposition::Defer(reply) | checks::Disposition::Reject(reply) => {
                return Err(reply);
            }
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
        Ok(Inbound {
            header,
            folder,
            spf: r.spf,
            spf_check: spf,
            domains,
        })
    }

    /// Spool the message durably, then answer 250 with its queue id.
    async fn accept_message(&self, txn: Transaction) -> Reply {
        let ctx = &self.ctx;
        let id = ctx.queue.new_id();
        let now = SystemTime::now();
        let mut submitted = None;
        let mut spf_result = None;
        let mut inbound_domains = None;
        let mut verdict = None;
        let (added, body, folder) = match txn.auth {
            Some(_) => match ctx.submission.prepare(&txn, &self.config.hostname, &id) {
                Ok((headers, message_id)) => {
                    submitted = Some(message_id);
                    (headers, std::borrow::Cow::Borrowed(&txn.body[..]), None)
                }
                Err(r) => return r,
            },
            None => match self.authenticate_inbound(&txn).await {
                Ok(inbound) => {
                    spf_result = Some((inbound.spf, inbound.spf_check));
                    let body =
                        portcullis_authn::strip_forged_results(&txn.body, &self.config.hostname);
                    let mut header = inbound.header;
                    if let Err(r) = self.admit_data(&txn, &inbound.domains).await {
                        return r;
                    }
                    match self.scan(&txn, &id, &inbound.domains).await {
                        Ok(Some(scan)) => {
                            header.push_str(&scan.headers());
                            verdict = scan.verdict();
                        }
                        Ok(None) => {}
                        Err(r) => return r,
                    }
                    inbound_domains = Some(inbound.domains);
                    (header, std::borrow::Cow::Owned(body), inbound.folder)
                }
                Err(r) => return r,
            },
        };
        let received = portcullis_smtp::received_header(&txn, &self.config.hostname, &id, now);
        let mut data = Vec::with_capacity(received.len() + added.len() + body.len());
        data.extend_from_slice(received.as_bytes());
        data.extend_from_slice(added.as_bytes());
        data.extend_from_slice(&body);
        let mut envelope = envelope(&txn, &id, now, folder);
        let mut copies = Vec::new();
        if let Some((spf, spf_check)) = spf_result {
            if let Some(hops) = ctx.forwarding.too_many_hops(&data) {
                return Reply::new(
                    554,
                    Status(5, 4, 6),
                    format!("Too many hops ({hops} Received: fields): a mail loop"),
                );
            }
            let unknown = self.take_unknown_recipients(&mut envelope);
            if !unknown.is_empty() {
                self.bounce_unknown(&envelope, &unknown, spf, &data).await;
            }
            let plan = ctx.forwarding.plan(&mut envelope, &data);
            if !plan.loops.is_empty() {
                self.bounce_loops(&envelope, &plan.loops, &data).await;
            }
            copies = self.copies(plan.copies, &data, &spf_check).await;
            if envelope.recipients.is_empty() && copies.is_empty() {
                // Accept-all and loops: the client learns nothing about
                // which addresses exist.
                info!(session = %self.id, event = "accepted_for_unknown_only", id = %id);
                return Reply::new(250, Status(2, 0, 0), format!("Ok: queued as {id}"));
            }
        }
        let data = Arc::new(data);
        let size = data.len();
        if !envelope.recipients.is_empty() {
            if let Err(r) = self.queue(envelope.clone(), data).await {
                return r;
            }
            if let Some(message_id) = &submitted {
                self.log_submission(&txn, &envelope, message_id, size, now);
            }
        }
        for (copy, copy_data) in copies {
            if let Err(r) = self.queue(copy, Arc::new(copy_data)).await {
                return r;
            }
        }
        if let Some(domains) = inbound_domains {
            self.count_message(&domains, verdict).await;
        }
        ctx.metrics
            .inc(Counter::MessagesAccepted, &[("listener", self.role.name())]);
        ctx.metrics
            .outcome(Outcome::Accepted, portcullis_config::clock::now_secs());
        Reply::new(250, Status(2, 0, 0), format!("Ok: queued as {id}"))
    }

    /// Commit one envelope durably and hand it to delivery.
    async fn queue(&self, envelope: Envelope, data: Arc<Vec<u8>>) -> Result<(), Reply> {
        let (id, from, recipients, size) = (
            envelope.id.clone(),
            envelope.sender.clone(),
            envelope.recipients.len(),
            data.len(),
        );
        match self.ctx.queue.enqueue(envelope, data).await {
            Ok(()) => {
                info!(session = %self.id, event = "queued", id = %id, from = %from, recipients, size);
                Ok(())
            }
            Err(e) if e.is_storage_full() => {
                warn!(session = %self.id, event = "spool_full", error = %e);
                Err(Reply::new(
                    452,
                    Status(4, 3, 1),
                    "Insufficient system storage, try again later",
                ))
            }
            Err(e) => {
                warn!(session = %self.id, event = "spool_error", error = %e);
                Err(Reply::new(
                    451,
                    Status(4, 3, 0),
                    "Local error in processing, try again later",
                ))
            }
        }
    }

    /// The alias copies of a message: each its own queue id, its
    /// Delivered-To: fields, and for copies leaving for another domain an
    /// ARC seal over what we found on arrival (RFC 8617).
    async fn copies(
        &self,
        plan: Vec<crate::forwarding::Copy>,
        data: &[u8],
        spf: &portcullis_authn::SpfCheck,
    ) -> Vec<(Envelope, Vec<u8>)> {
        let mut out = Vec::with_capacity(plan.len());
        for c in plan {
            let mut copy = c.headers.into_bytes();
            copy.extend_from_slice(data);
            if c.forwarded {
                let keys = self.ctx.submission.dkim_keys();
                match self
                    .ctx
                    .verifier
                    .arc_seal(&copy, spf, &keys, &self.ctx.forwarding.domain)
                    .await
                {
                    Ok(seal) => {
                        copy.splice(0..0, seal.into_bytes());
                    }
                    Err(e) => warn!(session = %self.id, event = "arc_seal_skipped", reason = %e),
                }
            }
            let envelope = Envelope {
                id: self.ctx.queue.new_id(),
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

    /// Aliases that loop are bounced once (5.4.6), never forwarded again.
    async fn bounce_loops(&self, original: &Envelope, looped: &[QueuedRecipient], data: &[u8]) {
        let addrs: Vec<&str> = looped.iter().map(|r| r.address.as_str()).collect();
        warn!(session = %self.id, event = "alias_loop", recipients = ?addrs);
        let why = "alias loop detected, not forwarded";
        self.bounce(original, looped, data, Status(5, 4, 6), 554, why)
            .await;
    }

    /// A failure DSN (RFC 3464) to the sender for `recipients`, all with
    /// the same reply.
    async fn bounce(
        &self,
        original: &Envelope,
        recipients: &[QueuedRecipient],
        data: &[u8],
        status: Status,
        code: u16,
        why: &str,
    ) {
        let failed: Vec<portcullis_queue::Bounce> = recipients
            .iter()
            .map(|r| portcullis_queue::Bounce {
                recipient: r.clone(),
                status,
                diagnostic: format!("{code} {status} <{}>: {why}", r.address),
            })
            .collect();
        let message = StoredMessage {
            envelope: original.clone(),
            data: Arc::new(data.to_vec()),
        };
        self.ctx
            .queue
            .bounce(
                &message,
                &failed,
                portcullis_queue::dsn::ReportKind::Failure,
            )
            .await;
    }
}

impl Connection {
    /// End of data on port 25: bytes, and the domain-range rule.
    async fn admit_data(&self, txn: &Transaction, domains: &[String]) -> Result<(), Reply> {
        let gate = self.gate.lock().await;
        match gate.as_ref() {
            Some(g) => {
                let null = txn.mail_from.is_none();
                self.ctx
                    .admission
                    .data(g, txn.body.len() as u64, domains, null)
                    .await
            }
            None => Ok(()),
        }
    }

    async fn count_message(
        &self,
        domains: &[String],
        verdict: Option<portcullis_admission::Verdict>,
    ) {
        let gate = self.gate.lock().await;
        if let Some(g) = gate.as_ref() {
            self.ctx.admission.judged(g, domains, verdict).await;
        }
    }

    /// rspamd's verdict, when configured. A scanner that does not answer
    /// defers the message (451 4.7.1) rather than letting it through
    /// unscanned.
    async fn scan(
        &self,
        txn: &Transaction,
        id: &str,
        domains: &[String],
    ) -> Result<Option<crate::rspamd::Scan>, Reply> {
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
        let env = crate::rspamd::Envelope {
            ip: self.peer.ip(),
            helo: &txn.helo,
            from: &from,
            rcpts: rcpts.iter().map(String::as_str).collect(),
            queue_id: id,
        };
        match crate::rspamd::check(cfg, &env, &txn.body).await {
            Ok(scan) => {
                info!(session = %self.id, event = "rspamd", action = %scan.action, score = scan.score);
                if scan.rejects() && cfg.reject {
                    self.count_message(domains, scan.verdict()).await;
                    return Err(Reply::new(
                        550,
                        Status(5, 7, 1),
                        format!("Message refused as spam (score {:.1})", scan.score),
                    ));
                }
                Ok(Some(scan))
            }
            Err(e) => {
                warn!(session = %self.id, event = "rspamd_failed", error = %e);
                Err(Reply::new(
                    451,
                    Status(4, 7, 1),
                    "Content scanner unavailable, try again later",
                ))
            }
        }
    }

    /// Recipients accepted at RCPT under accept-all that do not exist.
    fn take_unknown_recipients(&self, envelope: &mut Envelope) -> Vec<QueuedRecipient> {
        let config = &self.config;
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
                checks::recipient_policy(config, domain)
                    == portcullis_config::RecipientPolicy::AcceptAll
                    && !self.ctx.submission.recipient_exists(&m)
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
        self.bounce(
            original,
            unknown,
            data,
            Status(5, 1, 1),
            550,
            "user unknown",
        )
        .await;
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
        if let Err(err) = self.ctx.submission.log.append(&record, now) {
            warn!(session = %self.id, event = "submission_log_failed", error = %err);
        }
    }
}

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
                notify: r.params.notify.map(|n| {
                    let mut v = Vec::new();
                    n.success.then(|| v.push("SUCCESS"));
                    n.failure.then(|| v.push("FAILURE"));
                    n.delay.then(|| v.push("DELAY"));
                    if v.is_empty() {
                        "NEVER".to_owned()
                    } else {
                        v.join(",")
                    }
                }),
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
    }
}
