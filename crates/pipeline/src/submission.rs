//! The submission service's decisions (RFC 6409, spamops §3, OP25B §4.4):
//! who the user is, which senders they may use, how many recipients they
//! may reach, and what a submitted message must carry. The SMTP session
//! enforces "AUTH before MAIL"; this module answers the questions it asks.

use crate::reloading::Reloading;
use crate::trace::{SubmissionLog, iso8601};
use crate::{StageResult, Transaction, checks};
use portcullis_accounts::{
    AccountStore, AuthGate, AuthThrottle, QuotaExceeded, QuotaLimits, RecipientQuota,
    ThrottleConfig, decide_auth_gate,
};
use portcullis_config::Config;
use portcullis_config::clock::now_secs;
use portcullis_metrics::Counter;
use portcullis_smtp::{Credentials, Mailbox, Reply, Status};
use portcullis_state::Store;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tracing::{info, warn};

/// Concurrent argon2id verifications (each holds its memory cost).
const PASSWORD_CHECKS_AT_ONCE: usize = 4;

pub struct Submission {
    accounts_path: PathBuf,
    /// The account file as last read, with its modification time: the CLI
    /// edits the file, and the next login sees the change.
    accounts: Reloading<AccountStore, Option<SystemTime>>,
    throttle: Mutex<AuthThrottle>,
    /// Password checks running at once: each argon2id check takes its
    /// memory cost in RAM, so a crowd of AUTH attempts must queue rather
    /// than grow the process without bound.
    hashing: tokio::sync::Semaphore,
    recipients: Mutex<RecipientQuota>,
    messages: Mutex<RecipientQuota>,
    limits: portcullis_config::Submission,
    dkim_dir: PathBuf,
    /// Signing keys with the fingerprint of the key directory they were
    /// loaded from: `dkim keygen` on a running server takes effect at once.
    dkim: Reloading<portcullis_authn::DkimKeys, Vec<SystemTime>>,
    pub log: SubmissionLog,
    pub metrics: Arc<portcullis_metrics::Metrics>,
}

/// Held while an authenticated session lives; counts it against the
/// account's concurrent-session limit (with Redis, on every node).
pub struct AccountSession {
    _slot: portcullis_state::Slot,
}

fn quota_reply(what: &str, account: &str, e: QuotaExceeded) -> Reply {
    Reply::new(
        451,
        Status(4, 7, 1),
        format!(
            "{what} quota of {} per {} exceeded for {account}; it resets at {}",
            e.limit,
            e.window.name(),
            iso8601(e.resets_at)
        ),
    )
}

impl Submission {
    pub fn new(
        config: &Config,
        metrics: Arc<portcullis_metrics::Metrics>,
    ) -> anyhow::Result<Submission> {
        let accounts_path = config.data_dir.join("accounts.json");
        let store = AccountStore::load(&accounts_path)?;
        let mtime = std::fs::metadata(&accounts_path)
            .and_then(|m| m.modified())
            .ok();
        let a = &config.auth;
        let throttle = AuthThrottle::new(ThrottleConfig {
            base_delay: Duration::from_millis(a.failure_delay_ms),
            max_delay: Duration::from_millis(a.max_failure_delay_ms),
            address_lock_after: a.address_lock_after,
            account_lock_after: a.account_lock_after,
            lock_for: Duration::from_secs(a.lock_secs),
        });
        let dkim_dir = config.data_dir.join("dkim");
        let dkim = (
            portcullis_authn::DkimKeys::load(&dkim_dir)?,
            portcullis_authn::key_dir_fingerprint(&dkim_dir),
        );
        Ok(Submission {
            hashing: tokio::sync::Semaphore::new(PASSWORD_CHECKS_AT_ONCE),
            metrics,
            dkim_dir,
            dkim: Reloading::new("dkim keys", dkim.0, dkim.1),
            accounts_path,
            accounts: Reloading::new("accounts", store, mtime),
            throttle: Mutex::new(throttle),
            recipients: Mutex::new(RecipientQuota::default()),
            messages: Mutex::new(RecipientQuota::default()),
            limits: config.submission.clone(),
            log: SubmissionLog::new(&config.data_dir, config.submission.log_retention_days),
        })
    }

    /// The current accounts, re-read if the file changed.
    fn accounts(&self) -> Arc<AccountStore> {
        let mtime = std::fs::metadata(&self.accounts_path)
            .and_then(|m| m.modified())
            .ok();
        self.accounts
            .get(mtime, || AccountStore::load(&self.accounts_path))
    }

    /// Whether this process can load the account file as it stands (the
    /// CLI asks after a change): how many accounts it holds, or why not.
    pub fn check_accounts(&self) -> Result<String, String> {
        AccountStore::load(&self.accounts_path)
            .map(|s| format!("{} accounts", s.list().count()))
            .map_err(|e| e.to_string())
    }

    /// Whether this process can load the signing keys as they stand.
    pub fn check_dkim_keys(&self) -> Result<String, String> {
        portcullis_authn::DkimKeys::load(&self.dkim_dir)
            .map(|k| format!("keys for {} domains", k.domains().count()))
            .map_err(|e| e.to_string())
    }

    /// The signing keys, re-read when `dkim keygen` added one.
    pub fn dkim_keys(&self) -> Arc<portcullis_authn::DkimKeys> {
        let print = portcullis_authn::key_dir_fingerprint(&self.dkim_dir);
        self.dkim
            .get(print, || portcullis_authn::DkimKeys::load(&self.dkim_dir))
    }

    /// Whether a local mailbox exists: an account with that address, or
    /// the role addresses every domain must have (RFC 5321 4.5.1 postmaster,
    /// RFC 2142 abuse).
    pub fn recipient_exists(&self, m: &Mailbox) -> bool {
        let local = m.local.to_ascii_lowercase();
        local == "postmaster" || local == "abuse" || self.accounts().get(&m.to_string()).is_some()
    }

    /// The throttle's gate for an attempt: from the failures every node
    /// has seen when the state is in Redis, from this node's otherwise.
    async fn auth_gate(&self, state: &Store, ip: IpAddr, account: &str) -> Option<AuthGate> {
        let now = Instant::now();
        let shared = state.auth_counts(ip, account).await;
        let t = self.throttle.lock().ok()?;
        Some(match shared {
            Some(c) => {
                let until = |(n, secs): (u32, u64)| (n, now + Duration::from_secs(secs));
                decide_auth_gate(
                    t.config(),
                    Some(until(c.address)),
                    Some(until(c.account)),
                    c.known,
                )
            }
            None => t.gate(ip, account, now),
        })
    }

    /// A login's outcome for the throttle: this node's and, with Redis,
    /// the cluster's.
    async fn record_login(&self, state: &Store, ip: IpAddr, account: &str, ok: bool) {
        let Some(config) = self.throttle.lock().ok().map(|mut t| {
            match ok {
                true => t.record_success(ip, account, Instant::now()),
                false => t.record_failure(ip, account, Instant::now()),
            }
            t.config().clone()
        }) else {
            return;
        };
        state.auth_outcome(ip, account, ok, &config).await;
    }

    /// Check a login, with throttling. On success the returned guard counts
    /// the session against the account until it is dropped.
    pub async fn authenticate(
        &self,
        state: &Store,
        ip: IpAddr,
        c: Credentials,
    ) -> (StageResult<String>, Option<AccountSession>) {
        let gate = self.auth_gate(state, ip, &c.username).await;
        let delay = match gate {
            Some(AuthGate::Check { delay_on_failure }) => delay_on_failure,
            Some(AuthGate::Locked { until }) => {
                let mins = until
                    .saturating_duration_since(Instant::now())
                    .as_secs()
                    .div_ceil(60);
                info!(event = "auth", account = %c.username, client = %ip, result = "locked");
                self.metrics
                    .inc(Counter::AuthAttempts, &[("result", "locked")]);
                let r = Reply::new(
                    454,
                    Status(4, 7, 0),
                    format!("Too many failed logins; try again in {mins} minutes"),
                );
                return (Err(r), None);
            }
            None => Duration::ZERO,
        };
        let store = self.accounts();
        let username = c.username.clone();
        // Password hashing is deliberately slow: keep it off the reactor,
        // and only a few at a time.
        let _permit = self.hashing.acquire().await.ok();
        let verified = tokio::task::spawn_blocking(move || {
            store
                .authenticate(&c.username, &c.password)
                .map(|a| a.address.clone())
        })
        .await
        .ok()
        .flatten();
        let Some(account) = verified else {
            self.record_login(state, ip, &username, false).await;
            info!(event = "auth", account = %username, client = %ip, result = "failed");
            self.metrics.auth_failure(
                ip.to_string(),
                username.clone(),
                portcullis_config::clock::now_secs(),
            );
            self.metrics
                .inc(Counter::AuthAttempts, &[("result", "failed")]);
            tokio::time::sleep(delay).await;
            let r = Reply::new(535, Status(5, 7, 8), "Authentication credentials invalid");
            return (Err(r), None);
        };
        self.record_login(state, ip, &account, true).await;
        match self.open_session(state, &account).await {
            Some(guard) => {
                info!(event = "auth", account = %account, client = %ip, result = "ok");
                self.metrics.inc(Counter::AuthAttempts, &[("result", "ok")]);
                (Ok(account), Some(guard))
            }
            None => {
                warn!(event = "auth", account = %account, client = %ip, result = "too_many_sessions");
                self.metrics
                    .inc(Counter::AuthAttempts, &[("result", "too_many_sessions")]);
                let r = Reply::new(
                    454,
                    Status(4, 7, 0),
                    format!("Too many concurrent sessions for {account}; try again later"),
                );
                (Err(r), None)
            }
        }
    }

    /// A session slot for the account: counted by every node when the
    /// state is in Redis, by this node otherwise (or while Redis is down).
    async fn open_session(&self, state: &Store, account: &str) -> Option<AccountSession> {
        let max = self.limits.max_sessions_per_account;
        let slot = state.slot(&format!("account:{account}"), max).await?;
        Some(AccountSession { _slot: slot })
    }

    /// MAIL FROM: the sender must be an address the account owns (spamops
    /// §3.1 "Submission Rights"), within the message rate.
    pub async fn check_sender(
        &self,
        state: &Store,
        account: &str,
        from: Option<&Mailbox>,
    ) -> StageResult<()> {
        let store = self.accounts();
        let Some(acct) = store.get(account) else {
            return Err(Reply::new(451, Status(4, 7, 1), "Account no longer exists"));
        };
        let owned = match from {
            Some(m) => acct.owns(&m.to_string()),
            None => acct.any_sender,
        };
        if !owned {
            let shown = from.map_or_else(|| "<>".to_owned(), |m| format!("<{m}>"));
            return Err(Reply::new(
                553,
                Status(5, 7, 1),
                format!("Sender address {shown} is not owned by {account}"),
            ));
        }
        let limits = QuotaLimits {
            per_hour: self.limits.messages_per_hour,
            per_day: u32::MAX,
        };
        match self
            .take(state, "messages", &self.messages, account, limits)
            .await
        {
            Err(e) => {
                warn!(event = "quota", account = %account, kind = "messages", limit = e.limit);
                self.metrics
                    .inc(Counter::QuotaDeferrals, &[("kind", "messages")]);
                Err(quota_reply("Message", account, e))
            }
            Ok(()) => Ok(()),
        }
    }

    /// RCPT TO: an authenticated user may send anywhere; each accepted
    /// recipient counts against the quota (OP25B §4.4.3).
    pub async fn check_recipient(
        &self,
        state: &Store,
        config: &Config,
        account: &str,
        to: &Mailbox,
    ) -> StageResult<()> {
        let exists = self.recipient_exists(to) || config.is_report_mailbox(&to.to_string());
        if config.is_local_domain(&to.domain) {
            checks::recipient(config, to, exists)?;
        }
        self.charge_recipient(state, account).await
    }

    /// One recipient counted against `account`'s quotas (OP25B §4.4.3):
    /// the quota part of RCPT, also what the policy service asks for a
    /// Postfix that authenticated the user itself.
    pub async fn charge_recipient(&self, state: &Store, account: &str) -> StageResult<()> {
        let limits = QuotaLimits {
            per_hour: self.limits.recipients_per_hour,
            per_day: self.limits.recipients_per_day,
        };
        match self
            .take(state, "recipients", &self.recipients, account, limits)
            .await
        {
            Err(e) => {
                warn!(event = "quota", account = %account, kind = "recipients", limit = e.limit, window = e.window.name());
                self.metrics
                    .inc(Counter::QuotaDeferrals, &[("kind", "recipients")]);
                Err(quota_reply("Recipient", account, e))
            }
            Ok(()) => Ok(()),
        }
    }

    /// One unit of `account`'s `kind` quota: shared by every node through
    /// Redis when there is one, otherwise (or while it is down) counted
    /// here.
    async fn take(
        &self,
        state: &Store,
        kind: &str,
        local: &Mutex<RecipientQuota>,
        account: &str,
        limits: QuotaLimits,
    ) -> Result<(), QuotaExceeded> {
        let now = now_secs();
        if let Some(shared) = state
            .take_quota(&format!("{kind}:{account}"), limits, 1, now)
            .await
        {
            return shared;
        }
        local
            .lock()
            .map_or(Ok(()), |mut q| q.try_take(account, limits, 1, now))
    }

    /// End of data: every From: address must be owned, missing Date and
    /// Message-ID are added (RFC 6409 §8.3, §8.4). Goes on with what to
    /// add and the domain that signs ([`Submission::sign`], after the
    /// milters).
    pub(crate) fn prepare(
        &self,
        txn: &Transaction,
        hostname: &str,
        queue_id: &str,
    ) -> StageResult<Prepared> {
        let account = txn.auth.as_deref().unwrap_or("");
        let headers = header_block(&txn.body);
        let parsed = mail_parser::MessageParser::new().parse_headers(headers);
        let from: Vec<String> = parsed
            .as_ref()
            .and_then(|m| m.from())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.address())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if from.is_empty() {
            return Err(Reply::new(
                554,
                Status(5, 6, 0),
                "Message has no From: header field (RFC 5322 3.6.2)",
            ));
        }
        let store = self.accounts();
        let acct = store.get(account);
        if let Some(bad) = from.iter().find(|f| !acct.is_some_and(|a| a.owns(f))) {
            return Err(Reply::new(
                553,
                Status(5, 7, 1),
                format!("From: address <{bad}> is not owned by {account}"),
            ));
        }
        let mut add = String::new();
        if parsed.as_ref().and_then(|m| m.date()).is_none() && !has_field(headers, "date") {
            add.push_str(&format!(
                "Date: {}\r\n",
                portcullis_smtp::rfc5322_date(SystemTime::now())
            ));
        }
        let message_id = match parsed.as_ref().and_then(|m| m.message_id()) {
            Some(id) => format!("<{id}>"),
            None => {
                let id = format!("<{queue_id}@{hostname}>");
                add.push_str(&format!("Message-ID: {id}\r\n"));
                id
            }
        };
        let domain = from[0].rsplit_once('@').map_or("", |(_, d)| d);
        Ok(Prepared {
            added: add,
            message_id,
            domain: domain.to_owned(),
        })
    }

    /// The DKIM signatures over the message as it will be queued (our
    /// additions and the milters' changes included); none when signing
    /// fails (logged).
    pub fn sign(&self, domain: &str, message: &[u8]) -> String {
        match self.dkim_keys().sign(domain, message) {
            Ok(sigs) => sigs,
            Err(e) => {
                warn!(event = "dkim_sign_failed", domain = %domain, error = %e);
                String::new()
            }
        }
    }
}

/// The header section: everything up to the first empty line.
fn header_block(body: &[u8]) -> &[u8] {
    match body.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => &body[..i + 4],
        None => body,
    }
}

fn has_field(headers: &[u8], name: &str) -> bool {
    headers.split(|&b| b == b'\n').any(|line| {
        line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
            && line[name.len()] == b':'
    })
}

/// A submitted message as its checks let it through: the fields we add
/// (Date, Message-ID where missing), its Message-ID, and the domain that
/// signs it.
pub(crate) struct Prepared {
    pub added: String,
    pub message_id: String,
    pub domain: String,
}
