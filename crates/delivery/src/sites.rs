//! The sites of this node, on the clock: the shaping crate decides (the
//! site of a destination, whether a transaction may start, what a reply
//! means, how a rate answer pauses a site); this applies its answers:
//! it waits the moment a pace asks for, waits for a free connection, and
//! hands every transaction's answers back. A site whose next start is
//! further away than a moment sends its messages back to the queue with
//! the time to come back, so that a slow or paused site holds none of the
//! queue's attempt slots and never delays another site.
//!
//! With a ledger shared by every node (Redis, wired by the server), a
//! start this node's state allows is also asked of the ledger: the
//! connections open on every node, the pace of all their starts and a
//! pause any node was given hold for the site as a whole. When the
//! ledger does not answer the node decides alone (counted in
//! `portcullis_site_ledger_fallbacks_total`): no mail waits on Redis.

use crate::outcome::{Answer, RcptOutcome, Status};
use portcullis_config::Config;
use portcullis_metrics::{Counter, Metrics};
use portcullis_shaping::{
    Action, Admit, Classifier, Hold, PaceSettings, Reply, ReplyClass, SharedPause, SiteLedger,
    SiteLimits, SiteState, SiteView, Sites, Taken,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// Sites not heard of for a while are forgotten once there are this many.
const KEPT: usize = 4096;
/// How often a start asks the ledger again while every connection to
/// its site is open (one given back on another node wakes nobody here).
const LEDGER_FULL_WAIT: Duration = Duration::from_millis(250);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Every site this node sends to, and the reply table.
pub struct SiteGate {
    table: Sites,
    classifier: Classifier,
    settings: PaceSettings,
    states: Mutex<HashMap<String, (SiteState, Arc<Notify>)>>,
    shared: OnceLock<Shared>,
}

/// The ledger every node shares, and where its silences are counted.
struct Shared {
    ledger: Arc<dyn SiteLedger>,
    metrics: Arc<Metrics>,
}

/// A connection taken from a site; given back with its answers.
pub struct Ticket<'a> {
    gate: &'a SiteGate,
    site: String,
    given_back: bool,
    /// The ledger's connection (with one), given back when dropped.
    _hold: Option<Hold>,
}

/// A site sent the recipients back: when to try again and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deferred {
    pub until: u64,
    pub reason: String,
}

impl Deferred {
    /// The outcome of recipients the site sent back untried (RFC 3463
    /// X.4.5, mail system congestion: ours, towards that site).
    pub fn outcome(self) -> RcptOutcome {
        RcptOutcome::Temporary(Answer {
            class: ReplyClass::RateLimited,
            retry_at: Some(self.until),
            ..Answer::new(Status(4, 4, 5), self.reason)
        })
    }
}

impl SiteGate {
    pub fn new(config: &Config) -> SiteGate {
        let d = &config.delivery;
        let generic = SiteLimits {
            max_connections: u32::try_from(d.max_per_domain.max(1)).unwrap_or(u32::MAX),
            messages_per_connection: d.messages_per_connection,
            messages_per_minute: d.max_per_domain_per_minute,
            connections_per_minute: d.connections_per_minute,
        };
        SiteGate {
            table: Sites::new(&d.site, generic),
            classifier: Classifier::new(&d.reply_rule),
            settings: PaceSettings {
                min_pause_ms: d.site_pause_secs.saturating_mul(1000),
                max_pause_ms: d.site_max_pause_secs.saturating_mul(1000),
                ..PaceSettings::default()
            },
            states: Mutex::default(),
            shared: OnceLock::new(),
        }
    }

    /// Hold every site's limits and pauses across the nodes that share
    /// `ledger` (once; later calls change nothing).
    pub fn share(&self, ledger: Arc<dyn SiteLedger>, metrics: Arc<Metrics>) {
        let _ = self.shared.set(Shared { ledger, metrics });
    }

    fn states(&self) -> std::sync::MutexGuard<'_, HashMap<String, (SiteState, Arc<Notify>)>> {
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The site of a destination with these MX hosts, and its limits.
    pub fn site_of<'a>(&self, hosts: impl IntoIterator<Item = &'a str>) -> (String, SiteLimits) {
        self.table.site_of(hosts)
    }

    /// The limits of a site by name.
    pub fn limits(&self, site: &str) -> SiteLimits {
        self.table.limits(site)
    }

    /// What the reply table makes of an answer.
    pub fn verdict(&self, a: &Answer) -> (ReplyClass, Action) {
        let s = a.status;
        self.classifier.classify(&Reply {
            code: a.code,
            status: (s.0, s.1, s.2),
            text: &a.text,
        })
    }

    /// Put the reply table's class and action on every outcome.
    pub fn classify(&self, outcomes: &mut [RcptOutcome]) {
        for o in outcomes {
            let a = o.answer_mut();
            // Our own site's deferral is classified already.
            if a.retry_at.is_none() {
                (a.class, a.action) = self.verdict(a);
            }
        }
    }

    /// `f` on the state of `site` (made with `limits` when new) and the
    /// wake-up of its starts waiting for a connection.
    fn state<T>(
        &self,
        site: &str,
        limits: SiteLimits,
        f: impl FnOnce(&mut SiteState, &Arc<Notify>) -> T,
    ) -> T {
        let mut states = self.states();
        if states.len() > KEPT {
            let now = now_ms();
            states.retain(|_, (s, _)| !s.idle(now));
        }
        let (state, notify) = states.entry(site.to_owned()).or_insert_with(|| {
            (
                SiteState::new(site, limits, self.settings),
                Arc::new(Notify::new()),
            )
        });
        f(state, notify)
    }

    /// Take a connection to `site`: at once, after the moment its pace
    /// asks for, or once one is given back; or not now.
    pub async fn enter(&self, site: &str, limits: SiteLimits) -> Result<Ticket<'_>, Deferred> {
        loop {
            let (admit, notify) = self.state(site, limits, |s, n| (s.admit(now_ms()), n.clone()));
            let mut wait = Duration::from_secs(1);
            let admit = match admit {
                Admit::Go { at } => {
                    // Made before the ledger is asked, so that the start
                    // is given back should the caller stop waiting.
                    let mut ticket = Ticket {
                        gate: self,
                        site: site.to_owned(),
                        given_back: false,
                        _hold: None,
                    };
                    let Some(shared) = self.shared.get() else {
                        return Ok(ticket.at(at).await);
                    };
                    match self.ask_ledger(shared, site, limits, at).await {
                        (Admit::Go { at }, hold) => {
                            ticket._hold = hold;
                            return Ok(ticket.at(at).await);
                        }
                        (other, _) => {
                            // The ledger's answer undid the start here.
                            ticket.given_back = true;
                            wait = LEDGER_FULL_WAIT;
                            other
                        }
                    }
                }
                other => other,
            };
            match admit {
                Admit::Defer { until, reason } => return Err(Deferred { until, reason }),
                _ => {
                    // Every connection is open. Woken when one is given
                    // back on this node; the timeout guards against a
                    // lost wake-up and sees those given back elsewhere.
                    let _ = tokio::time::timeout(wait, notify.notified()).await;
                }
            }
        }
    }

    /// A start this node allows at `at`, asked of the ledger every node
    /// shares: what it becomes, and the ledger's connection.
    async fn ask_ledger(
        &self,
        shared: &Shared,
        site: &str,
        limits: SiteLimits,
        at: u64,
    ) -> (Admit, Option<Hold>) {
        let claim = self.state(site, limits, |s, _| s.claim(at));
        let now = now_ms();
        let Some(answer) = shared.ledger.take(site, claim, now).await else {
            shared
                .metrics
                .inc(Counter::SiteLedgerFallbacks, &[("op", "take")]);
            return (Admit::Go { at }, None);
        };
        let admit = self.state(site, limits, |s, _| s.after_ledger(now, at, &answer));
        let hold = match answer.taken {
            Taken::Granted { hold, .. } => Some(hold),
            _ => None,
        };
        (admit, hold)
    }

    /// A connection given back with its transaction's answers.
    fn done(&self, site: &str, answers: &[(ReplyClass, Action, String)]) {
        let began = {
            let mut states = self.states();
            let Some((state, notify)) = states.get_mut(site) else {
                return;
            };
            notify.notify_one();
            state.done(now_ms(), answers)
        };
        if let (Some(pause), Some(shared)) = (began, self.shared.get()) {
            self.hand_on(shared, site, pause);
        }
    }

    /// Tell the other nodes of a pause this node began, without making
    /// the transaction wait for it.
    fn hand_on(&self, shared: &Shared, site: &str, pause: SharedPause) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (ledger, metrics, site) = (
            shared.ledger.clone(),
            shared.metrics.clone(),
            site.to_owned(),
        );
        rt.spawn(async move {
            if ledger.pause(&site, pause).await.is_none() {
                metrics.inc(Counter::SiteLedgerFallbacks, &[("op", "pause")]);
            }
        });
    }

    /// Until when `site` is paused.
    pub fn paused_until(&self, site: &str) -> Option<u64> {
        let now = now_ms();
        let states = self.states();
        states
            .get(site)
            .and_then(|(s, _)| s.paused(now).map(|p| p.0))
    }

    /// A new connection for a transaction that holds a ticket to `site`
    /// and found no kept connection: at once, after the moment the
    /// site's `connections_per_minute` asks for, or not now (the
    /// transaction goes back to the queue with the time to return).
    pub async fn open_connection(&self, site: &str, limits: SiteLimits) -> Result<(), Deferred> {
        match self.state(site, limits, |s, _| s.admit_connection(now_ms())) {
            Admit::Go { at } => {
                let now = now_ms();
                if at > now {
                    tokio::time::sleep(Duration::from_millis(at - now)).await;
                }
                Ok(())
            }
            Admit::Defer { until, reason } => Err(Deferred { until, reason }),
            Admit::Full => Ok(()),
        }
    }

    /// Every site this node knows, for `/metrics`, the admin API and the
    /// dashboard.
    pub fn views(&self) -> Vec<SiteView> {
        let now = now_ms();
        let mut v: Vec<SiteView> = self.states().values().map(|(s, _)| s.view(now)).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}

impl<'a> Ticket<'a> {
    /// The ticket, once the moment its pace asked for has come.
    async fn at(self, at: u64) -> Ticket<'a> {
        let now = now_ms();
        if at > now {
            tokio::time::sleep(Duration::from_millis(at - now)).await;
        }
        self
    }

    /// Give the connection back with the answers of its transaction.
    pub fn leave(mut self, outcomes: &[RcptOutcome]) {
        let mut answers: Vec<(ReplyClass, Action, String)> = Vec::new();
        for o in outcomes {
            let a = o.answer();
            let item = (a.class, a.action, a.short());
            // One transaction's recipients often share one answer; a
            // recipient the site's own connection rate sent back untried
            // got no answer from the receiver.
            let answered = !matches!(o, RcptOutcome::Delivered(_)) && !a.held_back();
            if answered && !answers.contains(&item) {
                answers.push(item);
            }
        }
        self.given_back = true;
        self.gate.done(&self.site, &answers);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.given_back {
            self.gate.done(&self.site, &[]);
        }
    }
}
