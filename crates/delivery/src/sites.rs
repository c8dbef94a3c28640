//! The sites of this node, on the clock: the shaping crate decides (the
//! site of a destination, whether a transaction may start, what a reply
//! means, how a rate answer pauses a site); this applies its answers:
//! it waits the moment a pace asks for, waits for a free connection, and
//! hands every transaction's answers back. A site whose next start is
//! further away than a moment sends its messages back to the queue with
//! the time to come back, so that a slow or paused site holds none of the
//! queue's attempt slots and never delays another site.

use crate::outcome::{Answer, RcptOutcome};
use portcullis_config::Config;
use portcullis_shaping::{
    Action, Admit, Classifier, PaceSettings, Reply, ReplyClass, SiteLimits, SiteState, SiteView,
    Sites,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// Sites not heard of for a while are forgotten once there are this many.
const KEPT: usize = 4096;

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
}

/// A connection taken from a site; given back with its answers.
pub struct Ticket<'a> {
    gate: &'a SiteGate,
    site: String,
    given_back: bool,
}

/// A site sent the recipients back: when to try again and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deferred {
    pub until: u64,
    pub reason: String,
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
        }
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

    /// Take a connection to `site`: at once, after the moment its pace
    /// asks for, or once one is given back; or not now.
    pub async fn enter(&self, site: &str, limits: SiteLimits) -> Result<Ticket<'_>, Deferred> {
        loop {
            let now = now_ms();
            let (admit, notify) = {
                let mut states = self.states();
                if states.len() > KEPT {
                    states.retain(|_, (s, _)| !s.idle(now));
                }
                let (state, notify) = states.entry(site.to_owned()).or_insert_with(|| {
                    (
                        SiteState::new(site, limits, self.settings),
                        Arc::new(Notify::new()),
                    )
                });
                (state.admit(now), notify.clone())
            };
            match admit {
                Admit::Go { at } => {
                    let ticket = Ticket {
                        gate: self,
                        site: site.to_owned(),
                        given_back: false,
                    };
                    if at > now {
                        tokio::time::sleep(Duration::from_millis(at - now)).await;
                    }
                    return Ok(ticket);
                }
                Admit::Defer { until, reason } => return Err(Deferred { until, reason }),
                Admit::Full => {
                    // Woken when a connection is given back; the timeout
                    // only guards against a lost wake-up.
                    let _ = tokio::time::timeout(Duration::from_secs(1), notify.notified()).await;
                }
            }
        }
    }

    /// A connection given back with its transaction's answers.
    fn done(&self, site: &str, answers: &[(ReplyClass, Action, String)]) {
        let mut states = self.states();
        if let Some((state, notify)) = states.get_mut(site) {
            state.done(now_ms(), answers);
            notify.notify_one();
        }
    }

    /// Until when `site` is paused.
    pub fn paused_until(&self, site: &str) -> Option<u64> {
        let now = now_ms();
        let states = self.states();
        states
            .get(site)
            .and_then(|(s, _)| s.paused(now).map(|p| p.0))
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

impl Ticket<'_> {
    /// Give the connection back with the answers of its transaction.
    pub fn leave(mut self, outcomes: &[RcptOutcome]) {
        let mut answers: Vec<(ReplyClass, Action, String)> = Vec::new();
        for o in outcomes {
            let a = o.answer();
            let item = (a.class, a.action, a.short());
            // One transaction's recipients often share one answer.
            if !matches!(o, RcptOutcome::Delivered(_)) && !answers.contains(&item) {
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
