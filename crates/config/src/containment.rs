//! `[containment]`: the thresholds at which an authenticated account's
//! abuse signals throttle or hold it (issue 29). One key per signal; the
//! reasoning behind each default is in docs/configuration.md.

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Containment {
    /// Off: no signal is kept and no account is ever contained.
    pub enabled: bool,
    /// Recipients that do not exist (local 550 5.1.1 at RCPT, remote
    /// 5.1.x answers) in the last hour that hold the account. An account
    /// whose history shows many recipients an hour is allowed
    /// `hard_bounce_ratio` of its usual hour instead, when that is more.
    pub unknown_recipients_per_hour: u32,
    /// Share of the last hour's remote outcomes that failed for good
    /// which holds the account, once `hard_bounce_min_recipients` are in.
    pub hard_bounce_ratio: f64,
    pub hard_bounce_min_recipients: u32,
    /// Outbound spam verdicts (rspamd `reject` or `add header`) in 24
    /// hours that hold the account.
    pub spam_strikes_per_day: u32,
    /// Submissions to the operator's spam traps in 24 hours that hold it.
    pub spam_trap_hits_per_day: u32,
    /// Addresses or `@domains` nobody legitimate writes to.
    pub spam_traps: Vec<String>,
    /// Distinct client /64s (IPv6) or /24s (IPv4) that logged in as the
    /// account in the last hour that hold it.
    pub client_networks_per_hour: u32,
    /// Volume against the account's own history: the last hour's
    /// messages or distinct recipients above `volume_factor` times the
    /// 99th percentile of its hours over `history_days`, and above the
    /// floors, throttle it.
    pub volume_factor: f64,
    pub volume_floor_messages_per_hour: u32,
    pub volume_floor_recipients_per_hour: u32,
    pub history_days: u32,
    /// ARF complaints (RFC 5965) about its messages in 24 hours that
    /// hold it.
    pub complaints_per_day: u32,
    /// A throttled account's budget, and how long a throttle lasts when
    /// nothing renews it.
    pub throttle_messages_per_hour: u32,
    pub throttle_secs: u64,
    /// Where the 451's text sends the user.
    pub remediation_url: String,
    /// Alerts: a signed POST (`X-Portcullis-Signature: sha256=HEX`, the
    /// HMAC-SHA256 of the body with `webhook_secret`) and/or a mail to
    /// `alert_mailbox`.
    pub webhook_url: Option<String>,
    pub webhook_secret: String,
    pub alert_mailbox: Option<String>,
    /// The address ARF feedback reports (RFC 5965) arrive at.
    pub feedback_address: Option<String>,
}

impl Default for Containment {
    fn default() -> Self {
        Containment {
            enabled: true,
            unknown_recipients_per_hour: 10,
            hard_bounce_ratio: 0.1,
            hard_bounce_min_recipients: 50,
            spam_strikes_per_day: 3,
            spam_trap_hits_per_day: 1,
            spam_traps: Vec::new(),
            client_networks_per_hour: 10,
            volume_factor: 3.0,
            volume_floor_messages_per_hour: 100,
            volume_floor_recipients_per_hour: 300,
            history_days: 14,
            complaints_per_day: 10,
            throttle_messages_per_hour: 10,
            throttle_secs: 3600,
            remediation_url: String::new(),
            webhook_url: None,
            webhook_secret: String::new(),
            alert_mailbox: None,
            feedback_address: None,
        }
    }
}

impl Containment {
    /// Why these values cannot work, if they cannot.
    pub fn problem(&self) -> Option<&'static str> {
        let rules: [(bool, &'static str); 6] = [
            (
                !(self.hard_bounce_ratio > 0.0 && self.hard_bounce_ratio <= 1.0),
                "hard_bounce_ratio must be above 0 and at most 1",
            ),
            (self.volume_factor < 1.0, "volume_factor must be at least 1"),
            (
                !(1..=60).contains(&self.history_days),
                "history_days must be between 1 and 60",
            ),
            (
                self.webhook_url.is_some() && self.webhook_secret.is_empty(),
                "webhook_url needs a webhook_secret to sign with",
            ),
            (
                self.webhook_url
                    .as_deref()
                    .is_some_and(|u| !u.starts_with("http://")),
                "webhook_url must be an http:// URL (put a TLS proxy in front for https)",
            ),
            (
                self.unknown_recipients_per_hour == 0 || self.client_networks_per_hour == 0,
                "a threshold of 0 would hold every account",
            ),
        ];
        rules.iter().find(|(bad, _)| *bad).map(|(_, why)| *why)
    }
}
