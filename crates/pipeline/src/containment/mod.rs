//! The way in's side of containment (issue 29): what each stage tells
//! an account's record (`portcullis_containment::observe`), the
//! decision the record calls for, and what a decision does here: the
//! `451 4.7.1` at MAIL and RCPT, the account's queued messages held,
//! the log event, the metrics, the operator's alert. The arithmetic is
//! the containment crate's; the facts live in `portcullis_state`.
//! Nothing here bounces or drops a message.

mod alerts;
mod bounces;

pub use alerts::{AlertSettings, Alerts};

use crate::{Intake, StageResult};
use portcullis_config::Containment as Rules;
use portcullis_containment::{Action, Change, Contained, Tally};
use portcullis_metrics::{Counter, Metrics};
use portcullis_smtp::{Reply, Status};
use portcullis_state::Store;
use std::sync::Arc;
use tracing::{info, warn};

/// Containment as the way in, the queue's outcomes and the operator
/// reach it. Cheap to share (`Arc`).
pub struct Containment {
    state: Store,
    queue: Arc<dyn Intake>,
    metrics: Arc<Metrics>,
    alerts: Option<Alerts>,
}

/// What the operator sees of one account.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AccountView {
    pub account: String,
    pub tally: Tally,
    /// Its messages in the queue now, and which of them are held.
    pub queued: Vec<String>,
    pub held: Vec<String>,
}

impl Containment {
    pub fn new(state: Store, queue: Arc<dyn Intake>, metrics: Arc<Metrics>) -> Containment {
        Containment {
            state,
            queue,
            metrics,
            alerts: None,
        }
    }

    /// Alerts go out through `alerts` from now on.
    pub fn with_alerts(mut self, alerts: Alerts) -> Containment {
        self.alerts = Some(alerts);
        self
    }

    /// MAIL FROM on the submission ports: a held account gets `451
    /// 4.7.1` with the reason and where to ask; a throttled one, once
    /// its hour's small budget is spent.
    pub async fn admit(&self, rules: &Rules, account: &str, now: u64) -> StageResult<()> {
        if !rules.enabled {
            return Ok(());
        }
        let Some(c) = self.state.contained(account).await else {
            return Ok(());
        };
        if !c.in_force(now) {
            return Ok(());
        }
        let tally = match c.action {
            Action::Hold => Tally {
                contained: Some(c),
                ..Tally::default()
            },
            Action::Throttle => {
                self.state
                    .containment_tally(account, now, rules.history_days)
                    .await
            }
        };
        tally.admit(rules, account, now).map_err(|text| {
            self.metrics.inc(
                Counter::ContainmentActions,
                &[("action", "deferred"), ("signal", "")],
            );
            Reply::new(451, Status(4, 7, 1), text)
        })
    }

    /// Whether the account is on hold now (its new messages are queued
    /// held).
    pub async fn is_held(&self, account: &str) -> bool {
        self.state
            .contained(account)
            .await
            .is_some_and(|c| c.action == Action::Hold)
    }

    /// Add what an event says of `account` (`signal` names it for the
    /// metrics, empty for plain volume) and act on what the record now
    /// calls for. The containment in force afterwards, if any.
    pub async fn observe(
        &self,
        rules: &Rules,
        account: &str,
        signal: &'static str,
        changes: &[Change],
        now: u64,
    ) -> Option<Contained> {
        if !rules.enabled {
            return None;
        }
        if !signal.is_empty() {
            self.metrics
                .inc(Counter::ContainmentSignals, &[("signal", signal)]);
        }
        let tally = self
            .state
            .containment_record(account, changes, now, rules.history_days)
            .await;
        let Some(new) = tally.escalation(rules, now) else {
            return tally.contained.filter(|c| c.in_force(now));
        };
        self.put_in_force(account, &new).await;
        Some(new)
    }

    async fn put_in_force(&self, account: &str, c: &Contained) {
        let reason = c.findings.first();
        let signal = reason.map_or("", |f| f.signal.name());
        warn!(
            event = "account_contained", account = %account, action = c.action.name(), signal,
            value = reason.map_or(0.0, |f| f.value), limit = reason.map_or(0.0, |f| f.limit),
            networks = %c.networks.join(","), samples = %c.samples.join(",")
        );
        self.metrics.inc(
            Counter::ContainmentActions,
            &[("action", c.action.name()), ("signal", signal)],
        );
        let saved = if c.action == Action::Hold {
            self.held_around(account, true, self.state.set_contained(account, Some(c)))
                .await
                .0
        } else {
            self.state.set_contained(account, Some(c)).await
        };
        if let Err(e) = saved {
            warn!(event = "containment_not_saved", account = %account, error = %e);
        }
        if let Some(a) = &self.alerts {
            a.send(account, c);
        }
    }

    /// Change the account's state (`save`) with its queued messages
    /// held or released on both sides of it, so that no crash leaves a
    /// held account with a message free to leave, nor a release with
    /// messages still held and the account looking free: the marks are
    /// on disk before the state says so, and a message queued between
    /// the two passes is caught by the second. After a crash in a
    /// release the account is still on hold; releasing it again lets
    /// the rest go. The ids changed, with what `save` returned.
    async fn held_around<T>(
        &self,
        account: &str,
        held: bool,
        save: impl std::future::Future<Output = T>,
    ) -> (T, Vec<String>) {
        let mut ids = self.hold_queued(account, held).await;
        let saved = save.await;
        ids.extend(self.hold_queued(account, held).await);
        (saved, ids)
    }

    async fn hold_queued(&self, account: &str, held: bool) -> Vec<String> {
        match self.queue.hold_account(account, held).await {
            Ok(ids) => {
                let event = if held {
                    "account_messages_held"
                } else {
                    "account_messages_released"
                };
                info!(event, account = %account, messages = ids.len(), ids = %ids.join(","));
                ids
            }
            Err(e) => {
                warn!(event = "account_hold_failed", account = %account, error = %e);
                Vec::new()
            }
        }
    }

    /// The operator holds the account by hand: the messages it changed.
    pub async fn hold(&self, account: &str, now: u64) -> Result<Vec<String>, String> {
        let c = Contained::by_operator(now);
        let save = self.state.set_contained(account, Some(&c));
        let (saved, ids) = self.held_around(account, true, save).await;
        saved?;
        warn!(event = "account_contained", account = %account, action = "hold", signal = "operator");
        self.metrics.inc(
            Counter::ContainmentActions,
            &[("action", "hold"), ("signal", "operator")],
        );
        Ok(ids)
    }

    /// The operator releases the account: its held mail leaves, its
    /// counts start again from nothing.
    pub async fn release(&self, account: &str) -> Result<Vec<String>, String> {
        let save = self.state.set_contained(account, None);
        let (saved, ids) = self.held_around(account, false, save).await;
        saved?;
        info!(event = "account_released", account = %account);
        self.metrics.inc(
            Counter::ContainmentActions,
            &[("action", "release"), ("signal", "operator")],
        );
        Ok(ids)
    }

    /// The account's facts and its queued messages.
    pub async fn show(&self, rules: &Rules, account: &str, now: u64) -> AccountView {
        let tally = self
            .state
            .containment_tally(account, now, rules.history_days)
            .await;
        let (queued, held) = self.queue.messages_of(account).await;
        AccountView {
            account: account.to_ascii_lowercase(),
            tally,
            queued,
            held,
        }
    }

    /// Every account contained now (throttles past their end left out).
    pub async fn contained(&self, now: u64) -> Vec<(String, Contained)> {
        let mut all = self.state.contained_accounts().await;
        all.retain(|(_, c)| c.in_force(now));
        all
    }
}

/// The queue's per-recipient outcomes, counted against the account
/// that submitted the message (the envelope's `auth`): the hook the
/// queue calls (`portcullis_queue::RecipientOutcomes`). Each outcome is
/// recorded on a task of its own: delivery never waits for it.
pub struct OutcomeListener {
    pub containment: Arc<Containment>,
    pub config: portcullis_config::LiveConfig,
}

impl portcullis_queue::RecipientOutcomes for OutcomeListener {
    fn recipient_outcome(
        &self,
        envelope: &portcullis_queue::Envelope,
        _recipient: &str,
        outcome: &portcullis_delivery::RcptOutcome,
    ) {
        use portcullis_delivery::RcptOutcome;
        let Some(account) = envelope.auth.clone() else {
            return;
        };
        let (permanent, signal) = match outcome {
            RcptOutcome::Delivered(_) => (None, ""),
            RcptOutcome::Temporary(_) => return,
            RcptOutcome::Permanent(a) => {
                let s = (a.status.0, a.status.1, a.status.2);
                let signal = if portcullis_containment::is_unknown_recipient(s) {
                    "unknown_remote"
                } else {
                    "bounce"
                };
                (Some(s), signal)
            }
        };
        let config = self.config.get();
        if !config.containment.enabled {
            return;
        }
        let containment = self.containment.clone();
        tokio::spawn(async move {
            let now = portcullis_config::clock::now_secs();
            let changes = portcullis_containment::observe::outcome(permanent, now);
            let rules = &config.containment;
            if permanent.is_none() {
                // A delivered recipient only lowers the bounce ratio: it
                // cannot call for a containment, so nothing is read back.
                let state = &containment.state;
                let days = rules.history_days;
                state.containment_add(&account, &changes, now, days).await;
                return;
            }
            containment
                .observe(rules, &account, signal, &changes, now)
                .await;
        });
    }
}

/// The operator's door to containment (`portcullis account ...`, the
/// admin API), through `portcullis_control`.
pub struct AccountDoor {
    pub containment: Arc<Containment>,
    pub config: portcullis_config::LiveConfig,
}

impl portcullis_control::AccountDoor for AccountDoor {
    fn account<'a>(
        &'a self,
        action: portcullis_control::AccountAction,
        account: &'a str,
    ) -> portcullis_control::Pending<'a, Result<serde_json::Value, String>> {
        use portcullis_control::AccountAction as A;
        Box::pin(async move {
            let now = portcullis_config::clock::now_secs();
            let account = account.to_ascii_lowercase();
            let c = &self.containment;
            Ok(match action {
                A::Show => {
                    let config = self.config.get();
                    let view = c.show(&config.containment, &account, now).await;
                    serde_json::to_value(view).unwrap_or_default()
                }
                A::Hold => {
                    serde_json::json!({ "account": account, "held": c.hold(&account, now).await? })
                }
                A::Release => {
                    serde_json::json!({ "account": account, "released": c.release(&account).await? })
                }
            })
        })
    }

    fn contained(&self) -> portcullis_control::Pending<'_, serde_json::Value> {
        Box::pin(async move {
            let now = portcullis_config::clock::now_secs();
            let all = self.containment.contained(now).await;
            serde_json::Value::Array(
                all.into_iter()
                    .map(|(account, c)| serde_json::json!({ "account": account, "contained": c }))
                    .collect(),
            )
        })
    }
}

/// Feedback reports (ARF) kept by the report store, counted as
/// complaints against the account whose message came back: found in
/// the submission log by one of our queue ids in the returned Received
/// fields, or by the returned Message-ID. Connected once the way in
/// exists (the store is made with the queue, before it).
#[derive(Default)]
pub struct ComplaintCounter {
    connected: std::sync::OnceLock<(
        Arc<Containment>,
        crate::trace::SubmissionLog,
        portcullis_config::LiveConfig,
    )>,
}

impl ComplaintCounter {
    pub fn connect(
        &self,
        containment: Arc<Containment>,
        log: crate::trace::SubmissionLog,
        config: portcullis_config::LiveConfig,
    ) {
        let _ = self.connected.set((containment, log, config));
    }
}

/// The submission log's record of the message a report returns, found
/// by the first of `keys` (our queue ids from the returned Received
/// fields, the returned Message-ID) that names an account's message.
/// Blocking (reads the log).
pub(crate) fn submitted<'k>(
    log: &crate::trace::SubmissionLog,
    keys: impl IntoIterator<Item = &'k String>,
) -> Option<serde_json::Value> {
    keys.into_iter().filter(|k| !k.is_empty()).find_map(|k| {
        let hit = log.search(k).ok()?.into_iter().next()?;
        hit.get("account")?.as_str().filter(|a| !a.is_empty())?;
        Some(hit)
    })
}

/// The account that submitted the message an ARF report returns, and
/// the message's queue id.
fn account_of(
    log: &crate::trace::SubmissionLog,
    arf: &portcullis_reportbox::ArfSummary,
) -> Option<(String, String)> {
    let hit = submitted(log, arf.queue_ids.iter().chain(arf.message_id.iter()))?;
    let text = |k: &str| hit.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    Some((text("account").to_owned(), text("queue_id").to_owned()))
}

impl portcullis_reportbox::ComplaintSink for ComplaintCounter {
    fn complaint(&self, report_id: &str, arf: &portcullis_reportbox::ArfSummary) {
        let Some((containment, log, config)) = self.connected.get().cloned() else {
            warn!(event = "complaint_unmatched", report = %report_id, reason = "containment not running");
            return;
        };
        let (report_id, arf) = (report_id.to_owned(), arf.clone());
        tokio::spawn(async move {
            let found = {
                let arf = arf.clone();
                tokio::task::spawn_blocking(move || account_of(&log, &arf))
                    .await
                    .ok()
                    .flatten()
            };
            let Some((account, queue_id)) = found else {
                info!(event = "complaint_unmatched", report = %report_id, message_id = ?arf.message_id, queue_ids = %arf.queue_ids.join(","));
                return;
            };
            info!(event = "complaint", report = %report_id, account = %account, id = %queue_id, feedback_type = %arf.feedback_type);
            let now = portcullis_config::clock::now_secs();
            let config = config.get();
            let changes = portcullis_containment::observe::complaint(now);
            containment
                .observe(&config.containment, &account, "complaint", &changes, now)
                .await;
        });
    }
}
