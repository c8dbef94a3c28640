//! How fast one site may be sent to now: its limits, the pause after a
//! rate answer and the recovery after it (additive increase,
//! multiplicative decrease). Every call takes `now` in milliseconds
//! since the epoch; nothing here sleeps or reads a clock.
//!
//! A rate answer (`421 4.7.28`, `451 4.7.650`, `421 4.7.0 [TSS04]`, ...)
//! pauses the site for at least `min_pause` (doubling while the pauses
//! follow each other, up to `max_pause`) and cuts its rate to half of
//! what it was sending; every `recover_every` after the pause without a
//! new rate answer the rate rises by a tenth of where it came from, up to
//! nine tenths of the rate the site refused, and holds there: the site
//! told us its limit, and probing it again would only earn the next
//! refusal (and, with the big providers, a worse reputation). A calm
//! `max_pause` after the last pause forgets what was learned, and the
//! rate rises on to the configured limit. The pause doubles only when a
//! rate answer comes right after the last pause ended (within one
//! `recover_every`): a refusal after a calm stretch starts again at
//! `min_pause`. Answers from transactions that were under way when the
//! pause began do not pause it again.

use crate::classify::{Action, ReplyClass};
use crate::ledger::SharedPause;
use crate::site::SiteLimits;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

mod shared;

const MINUTE: u64 = 60_000;
/// How many recent answers a site remembers for the operator.
const REMEMBERED: usize = 8;

/// The back-off's constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaceSettings {
    /// The first pause after a rate answer (at least a minute).
    pub min_pause_ms: u64,
    /// The longest pause, however often the answers repeat.
    pub max_pause_ms: u64,
    /// How often a cut rate rises by one step.
    pub recover_every_ms: u64,
    /// A start further away than this is not waited for: the message
    /// waits in the queue instead, holding no attempt slot.
    pub max_wait_ms: u64,
}

impl Default for PaceSettings {
    fn default() -> Self {
        PaceSettings {
            min_pause_ms: MINUTE,
            max_pause_ms: 60 * MINUTE,
            recover_every_ms: MINUTE,
            max_wait_ms: 2_000,
        }
    }
}

/// Whether a transaction may start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Start at `at` (now, or a moment later to keep the pace): a
    /// connection is taken and must be given back with [`SiteState::done`].
    Go { at: u64 },
    /// Every connection is in use: wait for one to be given back.
    Full,
    /// Not now: try again at `until`, which counts as no attempt.
    Defer { until: u64, reason: String },
}

/// One remembered answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answered {
    pub at: u64,
    pub class: ReplyClass,
    /// `421 4.7.28`, or the enhanced code of a failure of our own.
    pub reply: String,
}

/// One site's state.
#[derive(Clone, Debug)]
pub struct SiteState {
    name: String,
    limits: SiteLimits,
    settings: PaceSettings,
    in_use: u32,
    /// The earliest start of the next transaction.
    next_start: u64,
    /// The earliest opening of the next new connection
    /// (`connections_per_minute`; a kept connection's transactions open
    /// none).
    next_connection: u64,
    /// Deferred messages are spread from here on, one interval apart.
    horizon: u64,
    paused_until: u64,
    pause_reason: String,
    /// Pauses in a row (reset after a calm `max_pause`).
    pauses: u32,
    /// The cut rate in force (messages a minute), while recovering.
    rate: Option<u32>,
    /// The rate the site last refused with a rate answer: recovery holds
    /// below it until a calm `max_pause` forgets it.
    refused_at: Option<u32>,
    /// A recovery step.
    step: u32,
    last_step: u64,
    /// Starts in this minute and the one before, for the observed rate.
    window: (u64, u32, u32),
    last: VecDeque<Answered>,
    /// Deferred messages by the time they come back.
    deferred: BTreeMap<u64, u32>,
}

/// A site as the operator sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteView {
    pub name: String,
    pub limits: SiteLimits,
    pub connections: u32,
    /// Messages sent back to the queue to wait for this site.
    pub deferred: u32,
    /// Messages a minute in force (0: no limit).
    pub rate_per_minute: u32,
    pub paused_until: Option<u64>,
    pub pause_reason: Option<String>,
    pub pauses: u32,
    pub last_answers: Vec<Answered>,
}

impl SiteState {
    pub fn new(name: &str, limits: SiteLimits, settings: PaceSettings) -> SiteState {
        SiteState {
            name: name.to_owned(),
            limits,
            settings,
            in_use: 0,
            next_start: 0,
            next_connection: 0,
            horizon: 0,
            paused_until: 0,
            pause_reason: String::new(),
            pauses: 0,
            rate: None,
            refused_at: None,
            step: 1,
            last_step: 0,
            window: (0, 0, 0),
            last: VecDeque::new(),
            deferred: BTreeMap::new(),
        }
    }

    /// Messages a minute in force now (0: no limit).
    pub fn rate(&self) -> u32 {
        let configured = Some(self.limits.messages_per_minute).filter(|r| *r > 0);
        match (configured, self.rate) {
            (Some(c), Some(r)) => c.min(r),
            (Some(c), None) => c,
            (None, Some(r)) => r,
            (None, None) => 0,
        }
    }

    fn interval(&self) -> u64 {
        match self.rate() {
            0 => 0,
            r => MINUTE / u64::from(r),
        }
    }

    /// Send `until` a little later than the ones deferred before it, so
    /// that they do not all come back at once: one interval of the rate
    /// in force apart. The rate may change within one recovery step (a
    /// cut rises, a pause cuts), so nothing is sent further away than
    /// that: a message whose turn is later comes back then and is spread
    /// again at the rate of that moment.
    fn spread(&mut self, until: u64, now: u64) -> u64 {
        let from = until.max(now);
        let revisit = from + self.settings.recover_every_ms.max(1);
        let t = from.max(self.horizon);
        let t = if t > revisit {
            revisit
        } else {
            self.horizon = t + match self.interval() {
                0 => self.settings.max_wait_ms / 4,
                i => i,
            };
            t
        };
        // Forget the times gone by: a split, not a walk over every entry,
        // since this runs for each message sent back.
        self.deferred = self.deferred.split_off(&(now + 1));
        *self.deferred.entry(t).or_default() += 1;
        t
    }

    fn recover(&mut self, now: u64) {
        let Some(rate) = self.rate else {
            return;
        };
        let every = self.settings.recover_every_ms.max(1);
        if now < self.last_step + every {
            return;
        }
        let steps = (now - self.last_step) / every;
        self.last_step += steps * every;
        let rate = rate.saturating_add(self.step.saturating_mul(steps as u32));
        let ceiling = self.limits.messages_per_minute;
        let learned = self.refused_at.map(|r| (r * 9 / 10).max(1));
        self.rate = match learned {
            // Below what the site refused: rise to nine tenths of it and
            // hold there.
            Some(hold) if ceiling == 0 || hold < ceiling => Some(rate.min(hold)),
            // Back at the limit: no cut any more. A site without a limit
            // is let go once it is back at ten steps above the cut.
            _ => {
                let done = if ceiling > 0 {
                    rate >= ceiling
                } else {
                    rate >= self.step * 20
                };
                (!done).then_some(rate)
            }
        };
        if now >= self.paused_until + self.settings.max_pause_ms {
            self.pauses = 0;
            self.refused_at = None;
        }
    }

    /// Come back when the pause ends.
    fn paused_deferral(&mut self, now: u64) -> Admit {
        let until = self.spread(self.paused_until, now);
        Admit::Defer {
            until,
            reason: format!(
                "site {} paused until {} after {}",
                self.name,
                clock_time(self.paused_until),
                self.pause_reason
            ),
        }
    }

    /// May a transaction start now?
    pub fn admit(&mut self, now: u64) -> Admit {
        if now < self.paused_until {
            return self.paused_deferral(now);
        }
        self.recover(now);
        if self.in_use >= self.limits.max_connections.max(1) {
            return Admit::Full;
        }
        let at = self.next_start.max(now);
        if at > now + self.settings.max_wait_ms {
            let until = self.spread(at, now);
            return Admit::Defer {
                until,
                reason: format!("site {} at its rate of {}/min", self.name, self.rate()),
            };
        }
        self.next_start = at + self.interval();
        self.in_use += 1;
        self.count_start(at);
        Admit::Go { at }
    }

    /// May a transaction that holds a connection slot open a new
    /// connection (it found no kept one)? At once, a moment later to keep
    /// `connections_per_minute`, or not now: the transaction goes back to
    /// the queue. Transactions over kept connections open none, so they
    /// are held only by the message rate.
    pub fn admit_connection(&mut self, now: u64) -> Admit {
        let per_minute = self.limits.connections_per_minute;
        if per_minute == 0 {
            return Admit::Go { at: now };
        }
        let at = self.next_connection.max(now);
        if at > now + self.settings.max_wait_ms {
            let until = self.spread(at, now);
            return Admit::Defer {
                until,
                reason: format!(
                    "site {} at its rate of {per_minute} connections/min",
                    self.name
                ),
            };
        }
        self.next_connection = at + MINUTE / u64::from(per_minute);
        Admit::Go { at }
    }

    fn count_start(&mut self, at: u64) {
        let minute = at / MINUTE;
        let (w, this, before) = self.window;
        self.window = match minute {
            m if m == w => (w, this + 1, before),
            m if m == w + 1 => (m, 1, this),
            m => (m, 1, 0),
        };
    }

    /// Messages started in the last full minute or this one, whichever
    /// is more: what the site was taking before it complained.
    fn observed(&self) -> u32 {
        self.window.1.max(self.window.2)
    }

    /// A transaction taken with [`Admit::Go`] ended with these answers;
    /// the pause they began, if they did, for the other nodes.
    pub fn done(
        &mut self,
        now: u64,
        answers: &[(ReplyClass, Action, String)],
    ) -> Option<SharedPause> {
        let before = self.paused_until;
        self.in_use = self.in_use.saturating_sub(1);
        for (class, action, reply) in answers {
            if *action == Action::Pause {
                self.pause(now, reply);
            }
            if self.last.len() == REMEMBERED {
                self.last.pop_front();
            }
            self.last.push_back(Answered {
                at: now,
                class: *class,
                reply: reply.clone(),
            });
        }
        (self.paused_until != before).then(|| self.shared_pause())
    }

    /// A rate answer: pause, and cut the rate to half of what it was.
    pub fn pause(&mut self, now: u64, reply: &str) {
        if now < self.paused_until {
            // An answer to a transaction started before the pause.
            return;
        }
        let s = self.settings;
        if now >= self.paused_until.saturating_add(s.recover_every_ms.max(1)) {
            // Not a repeat: the site took our rate for a while.
            self.pauses = 0;
        }
        let length = s
            .min_pause_ms
            .max(MINUTE)
            .saturating_mul(1u64 << self.pauses.min(16))
            .min(s.max_pause_ms.max(MINUTE));
        self.paused_until = now + length;
        self.pause_reason = reply.to_owned();
        self.pauses += 1;
        let before = match self.rate() {
            0 => self.observed().max(2),
            r => r,
        };
        let cut = (before / 2).max(1);
        self.rate = Some(cut);
        self.refused_at = Some(before);
        self.step = (before / 10).max(1);
        self.last_step = self.paused_until;
        self.next_start = self.paused_until;
        self.horizon = self.paused_until;
    }

    /// Until when the site is paused, and after what.
    pub fn paused(&self, now: u64) -> Option<(u64, &str)> {
        (now < self.paused_until).then_some((self.paused_until, self.pause_reason.as_str()))
    }

    pub fn view(&self, now: u64) -> SiteView {
        let deferred = self.deferred.range(now + 1..).map(|(_, n)| n).sum();
        SiteView {
            name: self.name.clone(),
            limits: self.limits,
            connections: self.in_use,
            deferred,
            rate_per_minute: self.rate(),
            paused_until: self.paused(now).map(|(t, _)| t),
            pause_reason: self.paused(now).map(|(_, r)| r.to_owned()),
            pauses: self.pauses,
            last_answers: self.last.iter().cloned().collect(),
        }
    }

    /// Whether the site can be forgotten: nothing under way, nothing
    /// deferred to it, no pause or cut in force.
    pub fn idle(&self, now: u64) -> bool {
        self.in_use == 0
            && now >= self.paused_until
            && self.rate.is_none()
            && self.deferred.range(now + 1..).next().is_none()
    }
}

/// `HH:MM` (UTC) of a time in milliseconds since the epoch.
pub fn clock_time(ms: u64) -> String {
    let s = ms / 1000 % 86_400;
    format!("{:02}:{:02}", s / 3600, s / 60 % 60)
}

#[cfg(test)]
mod tests;
