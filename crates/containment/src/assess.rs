//! What an account's facts mean: each signal against its threshold
//! (one key per signal in `[containment]`), the strongest action any of
//! them calls for, and the reply a contained account's client gets.

use crate::record::{Counter, Tally};
use portcullis_config::Containment as Rules;
use serde::{Deserialize, Serialize};

/// Actions in order of severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The hourly budget drops to `throttle_messages_per_hour`.
    Throttle,
    /// New submissions are deferred; queued messages stay held.
    Hold,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Throttle => "throttle",
            Action::Hold => "hold",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    UnknownRecipients,
    HardBounceRatio,
    SpamStrikes,
    SpamTraps,
    ClientNetworks,
    VolumeMessages,
    VolumeRecipients,
    Complaints,
    /// The operator held the account by hand.
    Operator,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::UnknownRecipients => "unknown_recipients",
            Signal::HardBounceRatio => "hard_bounce_ratio",
            Signal::SpamStrikes => "spam_strikes",
            Signal::SpamTraps => "spam_traps",
            Signal::ClientNetworks => "client_networks",
            Signal::VolumeMessages => "volume_messages",
            Signal::VolumeRecipients => "volume_recipients",
            Signal::Complaints => "complaints",
            Signal::Operator => "operator",
        }
    }

    /// The reason in plain words, for the user's 451.
    fn words(self) -> &'static str {
        match self {
            Signal::UnknownRecipients => "too many recipients that do not exist",
            Signal::HardBounceRatio => "too many of its messages bounced",
            Signal::SpamStrikes => "its messages looked like spam",
            Signal::SpamTraps => "it wrote to a spam trap",
            Signal::ClientNetworks => "logins from too many different networks",
            Signal::VolumeMessages => "far more messages than it usually sends",
            Signal::VolumeRecipients => "far more recipients than it usually writes to",
            Signal::Complaints => "recipients reported its messages as spam",
            Signal::Operator => "the postmaster held it",
        }
    }
}

/// One signal at or over its threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub signal: Signal,
    /// What was measured (a count, or a ratio for `hard_bounce_ratio`).
    pub value: f64,
    /// The threshold it met.
    pub limit: f64,
    pub action: Action,
}

/// Every signal over its threshold, at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Assessment {
    pub findings: Vec<Finding>,
}

impl Assessment {
    /// The strongest action any finding calls for.
    pub fn action(&self) -> Option<Action> {
        self.findings.iter().map(|f| f.action).max()
    }

    /// The finding behind the action (the first of the strongest).
    pub fn reason(&self) -> Option<&Finding> {
        let a = self.action()?;
        self.findings.iter().find(|f| f.action == a)
    }
}

/// A containment in force, with the evidence that put it there.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Contained {
    pub action: Action,
    /// When it started (seconds since the epoch).
    pub since: u64,
    /// A throttle ends by itself then; a hold waits for the operator.
    pub until: Option<u64>,
    /// The signal behind it, first; then every other finding.
    pub findings: Vec<Finding>,
    /// The client networks of the last hour.
    pub networks: Vec<String>,
    /// Some of the account's queue ids.
    pub samples: Vec<String>,
}

impl Contained {
    /// Whether it still applies at `now`.
    pub fn in_force(&self, now: u64) -> bool {
        self.until.is_none_or(|u| now < u)
    }

    pub fn reason(&self) -> Option<Signal> {
        self.findings.first().map(|f| f.signal)
    }

    /// A hold the operator puts on by hand.
    pub fn by_operator(now: u64) -> Contained {
        Contained {
            action: Action::Hold,
            since: now,
            until: None,
            findings: vec![Finding {
                signal: Signal::Operator,
                value: 1.0,
                limit: 1.0,
                action: Action::Hold,
            }],
            networks: Vec::new(),
            samples: Vec::new(),
        }
    }
}

/// The 99th percentile of `values` (0 for none).
pub(crate) fn p99(values: &[u64]) -> u64 {
    if values.is_empty() {
        return 0;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = (v.len() * 99).div_ceil(100).max(1);
    v[rank - 1]
}

/// Every signal of `t` against `rules` at `now`.
pub fn assess(t: &Tally, rules: &Rules) -> Assessment {
    let sum = |c| t.sum(c);
    let mut findings = Vec::new();
    let mut check = |signal, value: f64, limit: f64, action| {
        if limit > 0.0 && value >= limit {
            findings.push(Finding {
                signal,
                value,
                limit,
                action,
            });
        }
    };
    let (usual_messages, usual_recipients) = (t.usual_messages, t.usual_recipients);

    // Unknown recipients: an absolute number a person never reaches,
    // or, for an account that writes to many every hour, its share.
    let unknown = sum(Counter::UnknownLocal) + sum(Counter::UnknownRemote);
    let allowed = f64::from(rules.unknown_recipients_per_hour)
        .max((rules.hard_bounce_ratio * usual_recipients as f64).ceil());
    check(
        Signal::UnknownRecipients,
        unknown as f64,
        allowed,
        Action::Hold,
    );

    let (delivered, bounced) = (sum(Counter::Delivered), sum(Counter::Bounced));
    let outcomes = delivered + bounced;
    if outcomes >= u64::from(rules.hard_bounce_min_recipients) && outcomes > 0 {
        let ratio = bounced as f64 / outcomes as f64;
        check(
            Signal::HardBounceRatio,
            ratio,
            rules.hard_bounce_ratio,
            Action::Hold,
        );
    }
    check(
        Signal::SpamStrikes,
        sum(Counter::Strikes) as f64,
        f64::from(rules.spam_strikes_per_day),
        Action::Hold,
    );
    check(
        Signal::SpamTraps,
        sum(Counter::Traps) as f64,
        f64::from(rules.spam_trap_hits_per_day),
        Action::Hold,
    );
    check(
        Signal::ClientNetworks,
        t.networks.len() as f64,
        f64::from(rules.client_networks_per_hour),
        Action::Hold,
    );
    check(
        Signal::Complaints,
        sum(Counter::Complaints) as f64,
        f64::from(rules.complaints_per_day),
        Action::Hold,
    );
    // Volume against the account's own hours, never below the floor:
    // a new account is not judged on nothing. Strictly above: the
    // limit is what the account may do.
    let over =
        |floor: u32, usual: u64| (f64::from(floor)).max(rules.volume_factor * usual as f64) + 1.0;
    check(
        Signal::VolumeMessages,
        sum(Counter::Messages) as f64,
        over(rules.volume_floor_messages_per_hour, usual_messages),
        Action::Throttle,
    );
    check(
        Signal::VolumeRecipients,
        t.distinct_recipients as f64,
        over(rules.volume_floor_recipients_per_hour, usual_recipients),
        Action::Throttle,
    );
    Assessment { findings }
}

impl Tally {
    /// The containment to put in force now, if the facts call for more
    /// than what is in force (a throttle past its end counts as none).
    /// A hold only ever ends by the operator's hand.
    pub fn escalation(&self, rules: &Rules, now: u64) -> Option<Contained> {
        let current = self
            .contained
            .as_ref()
            .filter(|c| c.in_force(now))
            .map(|c| c.action);
        let a = assess(self, rules);
        let action = a.action()?;
        if current.is_some_and(|c| c >= action) {
            return None;
        }
        let mut findings = a.findings.clone();
        if let Some(i) = findings.iter().position(|f| f.action == action) {
            findings.swap(0, i);
        }
        Some(Contained {
            action,
            since: now,
            until: (action == Action::Throttle).then(|| now + rules.throttle_secs),
            findings,
            networks: self.networks.clone(),
            samples: self.samples.clone(),
        })
    }

    /// Whether a new message from the account may go now: Err is why not.
    pub fn admit(&self, rules: &Rules, account: &str, now: u64) -> Result<(), String> {
        let Some(c) = self.contained.as_ref().filter(|c| c.in_force(now)) else {
            return Ok(());
        };
        match c.action {
            Action::Hold => Err(refusal_text(c, rules, account)),
            Action::Throttle => {
                let sent = self.sum(Counter::Messages);
                if sent >= u64::from(rules.throttle_messages_per_hour) {
                    Err(refusal_text(c, rules, account))
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// The text of the `451 4.7.1` a contained account's client gets: what
/// happened, why in plain words, and where to ask.
pub fn refusal_text(c: &Contained, rules: &Rules, account: &str) -> String {
    let why = c.reason().map_or("unusual activity", Signal::words);
    let what = match c.action {
        Action::Hold => format!("Sending from {account} is on hold ({why})"),
        Action::Throttle => format!(
            "Sending from {account} is limited to {} messages an hour ({why})",
            rules.throttle_messages_per_hour
        ),
    };
    if rules.remediation_url.is_empty() {
        format!("{what}; please contact the postmaster")
    } else {
        format!("{what}; see {}", rules.remediation_url)
    }
}
