//! Reputation of one identity: volume and quality, and the level (the
//! per-sender class) they earn. The paper, "Adjusting Class of Service":
//! the rate rises only while most mail is good, and falls with the class
//! when quality skews to spam. Authentication *failures* are not verdicts
//! and never move a level: only successful validations count.

use portcullis_config::ReputationRules;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ham,
    Spam,
}

impl Verdict {
    pub fn parse(s: &str) -> Option<Verdict> {
        match s.to_ascii_lowercase().as_str() {
            "ham" | "good" => Some(Verdict::Ham),
            "spam" | "virus" | "bad" => Some(Verdict::Spam),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ham => "ham",
            Verdict::Spam => "spam",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reputation {
    /// Index into the configured levels (0: the lowest per-sender class).
    pub level: u32,
    /// Messages accepted from this identity (volume).
    pub messages: u64,
    pub ham: u64,
    pub spam: u64,
    /// Verdicts since the last level change: what promotion and demotion
    /// look at, so one old burst does not decide forever.
    pub ham_at_level: u64,
    pub spam_at_level: u64,
    /// Seconds since the epoch.
    pub first_seen: u64,
    pub last_seen: u64,
    pub last_change: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LevelChange {
    Promoted { from: u32, to: u32 },
    Demoted { from: u32, to: u32 },
}

impl Reputation {
    /// Count one accepted message (and its verdict, when there is one).
    pub fn record(&mut self, verdict: Option<Verdict>, now: u64) {
        if self.first_seen == 0 {
            self.first_seen = now;
        }
        self.last_seen = now;
        self.messages += 1;
        self.add_verdict(verdict);
    }

    /// A verdict that arrives apart from a message (operator, feedback loop).
    pub fn add_verdict(&mut self, verdict: Option<Verdict>) {
        match verdict {
            Some(Verdict::Ham) => {
                self.ham += 1;
                self.ham_at_level += 1;
            }
            Some(Verdict::Spam) => {
                self.spam += 1;
                self.spam_at_level += 1;
            }
            None => {}
        }
    }

    /// The level these counts earn, if it differs from the current one.
    /// Promotion needs `promote_after` ham at the level with little spam;
    /// demotion needs enough verdicts with much spam. The band between the
    /// two thresholds is where a sender stays put (hysteresis).
    pub fn decide(&self, rules: &ReputationRules) -> Option<LevelChange> {
        let top = (rules.levels.len() as u32).saturating_sub(1);
        let level = self.level.min(top);
        let verdicts = self.ham_at_level + self.spam_at_level;
        let spam_pct = (self.spam_at_level * 100)
            .checked_div(verdicts)
            .unwrap_or(0);
        if verdicts >= u64::from(rules.demote_min_verdicts.max(1))
            && spam_pct >= u64::from(rules.demote_spam_percent)
            && level > 0
        {
            return Some(LevelChange::Demoted {
                from: level,
                to: level - 1,
            });
        }
        if self.ham_at_level >= u64::from(rules.promote_after)
            && spam_pct <= u64::from(rules.promote_max_spam_percent)
            && level < top
        {
            return Some(LevelChange::Promoted {
                from: level,
                to: level + 1,
            });
        }
        None
    }

    /// Move to a new level and start counting there afresh.
    pub fn apply(&mut self, change: &LevelChange, now: u64) {
        let (LevelChange::Promoted { to, .. } | LevelChange::Demoted { to, .. }) = change;
        self.level = *to;
        self.ham_at_level = 0;
        self.spam_at_level = 0;
        self.last_change = now;
    }

    /// Record, decide and apply in one step: what both backends do.
    pub fn update(
        &mut self,
        verdict: Option<Verdict>,
        counts_message: bool,
        rules: &ReputationRules,
        now: u64,
    ) -> Option<LevelChange> {
        if counts_message {
            self.record(verdict, now);
        } else {
            self.add_verdict(verdict);
            self.last_seen = now;
        }
        let change = self.decide(rules)?;
        self.apply(&change, now);
        Some(change)
    }
}
