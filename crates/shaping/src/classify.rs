//! What a remote reply means: a table of rules (basic reply code,
//! enhanced status code, a piece of the text) giving a [`ReplyClass`] and
//! an [`Action`]. The operator's rules come first, then the built-in
//! ones for the large providers' documented replies, then a fallback by
//! the enhanced code's subject (RFC 3463 §3). The first rule that
//! matches decides.
//!
//! The code is never read from the text: the client parsed it once and
//! passes it in; only the rule's `text` looks at the words.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What kind of answer a receiver gave, whatever its wording.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyClass {
    /// Slow down: too much mail, too many connections, unusual rate.
    RateLimited,
    /// Refused for the sending address's or domain's reputation.
    ReputationBlock,
    /// The sender must authenticate (SPF, DKIM, a PTR record).
    AuthRequired,
    /// Only over TLS.
    TlsRequired,
    /// No such mailbox.
    MailboxUnknown,
    /// The mailbox is over its quota.
    MailboxFull,
    /// The message was judged spam.
    SpamRefused,
    /// No answer, a broken connection, a DNS failure.
    Network,
    #[default]
    Other,
}

impl ReplyClass {
    pub const ALL: [ReplyClass; 9] = [
        ReplyClass::RateLimited,
        ReplyClass::ReputationBlock,
        ReplyClass::AuthRequired,
        ReplyClass::TlsRequired,
        ReplyClass::MailboxUnknown,
        ReplyClass::MailboxFull,
        ReplyClass::SpamRefused,
        ReplyClass::Network,
        ReplyClass::Other,
    ];

    /// The snake_case name used in config, logs, metrics and DSNs.
    pub fn name(self) -> &'static str {
        match self {
            ReplyClass::RateLimited => "rate_limited",
            ReplyClass::ReputationBlock => "reputation_block",
            ReplyClass::AuthRequired => "auth_required",
            ReplyClass::TlsRequired => "tls_required",
            ReplyClass::MailboxUnknown => "mailbox_unknown",
            ReplyClass::MailboxFull => "mailbox_full",
            ReplyClass::SpamRefused => "spam_refused",
            ReplyClass::Network => "network",
            ReplyClass::Other => "other",
        }
    }
}

impl fmt::Display for ReplyClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the answer asks of us beyond the recipient's own outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Nothing beyond the recipient's outcome.
    #[default]
    #[serde(rename = "none")]
    Nothing,
    /// Pause the whole site, then resume at a cut rate.
    Pause,
    /// The receiver refuses our IPv6 address (no PTR, not
    /// authenticated): try its IPv4 addresses in the same attempt.
    RetryIpv4,
    /// A permanent "no such mailbox": suppress the address.
    Suppress,
}

/// One reply as the client read it.
#[derive(Clone, Copy, Debug)]
pub struct Reply<'a> {
    /// The basic code (`421`); `None` for a failure of our own (no
    /// connection, a timeout).
    pub code: Option<u16>,
    /// The enhanced status code (class, subject, detail).
    pub status: (u8, u16, u16),
    pub text: &'a str,
}

/// One row of the table. Every field given must match; a rule with none
/// matches everything.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The basic code, `x` for any digit: `421`, `4xx`.
    #[serde(default)]
    pub code: Option<String>,
    /// The enhanced code, a trailing `*` for any rest: `4.7.28`, `5.7.6*`.
    #[serde(default)]
    pub enhanced: Option<String>,
    /// A piece of the reply's text, compared without regard to case.
    #[serde(default)]
    pub text: Option<String>,
    pub class: ReplyClass,
    #[serde(default)]
    pub action: Action,
}

/// A rule the table cannot use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    #[error("code {0:?} is not three digits or x")]
    Code(String),
    #[error("enhanced {0:?} is not a status code like 4.7.28 or 5.7.*")]
    Enhanced(String),
}

impl Rule {
    fn new(
        code: Option<&str>,
        enhanced: Option<&str>,
        text: Option<&str>,
        class: ReplyClass,
        action: Action,
    ) -> Rule {
        Rule {
            code: code.map(str::to_owned),
            enhanced: enhanced.map(str::to_owned),
            text: text.map(str::to_ascii_lowercase),
            class,
            action,
        }
    }

    /// Whether the rule's patterns are well formed.
    pub fn check(&self) -> Result<(), RuleError> {
        if let Some(c) = &self.code
            && (c.len() != 3
                || !c
                    .chars()
                    .all(|ch| ch.is_ascii_digit() || ch == 'x' || ch == 'X'))
        {
            return Err(RuleError::Code(c.clone()));
        }
        if let Some(e) = &self.enhanced {
            let body = e.strip_suffix('*').unwrap_or(e);
            if body.is_empty()
                || !body.chars().all(|ch| ch.is_ascii_digit() || ch == '.')
                || e.matches('*').count() > 1
            {
                return Err(RuleError::Enhanced(e.clone()));
            }
        }
        Ok(())
    }

    fn matches(&self, r: &Reply<'_>, status: &str, lower: &str) -> bool {
        let code_ok = match (&self.code, r.code) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(p), Some(c)) => {
                let c = format!("{c:03}");
                p.len() == 3
                    && p.chars()
                        .zip(c.chars())
                        .all(|(p, c)| p.eq_ignore_ascii_case(&'x') || p == c)
            }
        };
        let enhanced_ok = match &self.enhanced {
            None => true,
            Some(p) => match p.strip_suffix('*') {
                Some(prefix) => status.starts_with(prefix),
                None => status == p,
            },
        };
        let text_ok = self
            .text
            .as_ref()
            .is_none_or(|t| lower.contains(&t.to_ascii_lowercase()));
        code_ok && enhanced_ok && text_ok
    }
}

/// The whole table: the operator's rules, then the built-in ones.
#[derive(Clone, Debug)]
pub struct Classifier {
    rules: Vec<Rule>,
}

impl Default for Classifier {
    fn default() -> Self {
        Classifier::new(&[])
    }
}

impl Classifier {
    /// The operator's `rules` before the built-in ones.
    pub fn new(operator: &[Rule]) -> Classifier {
        let mut rules = operator.to_vec();
        rules.extend(builtin());
        Classifier { rules }
    }

    /// The class and action of one reply.
    pub fn classify(&self, r: &Reply<'_>) -> (ReplyClass, Action) {
        let (c, s, d) = r.status;
        let status = format!("{c}.{s}.{d}");
        let lower = r.text.to_ascii_lowercase();
        if let Some(rule) = self
            .rules
            .iter()
            .find(|rule| rule.matches(r, &status, &lower))
        {
            return (rule.class, rule.action);
        }
        by_subject(r.status)
    }
}

/// RFC 3463's subjects, when no rule knows the reply.
fn by_subject((class, subject, detail): (u8, u16, u16)) -> (ReplyClass, Action) {
    use ReplyClass::*;
    let permanent = class == 5;
    match (subject, detail) {
        (1, 1) | (1, 10) if permanent => (MailboxUnknown, Action::Suppress),
        (1, 1) | (1, 6) | (1, 10) => (MailboxUnknown, Action::Nothing),
        (2, 2) => (MailboxFull, Action::Nothing),
        (4, _) | (3, 2) => (Network, Action::Nothing),
        (7, 10) | (7, 11) | (7, 30) => (TlsRequired, Action::Nothing),
        (7, 25) | (7, 26) => (AuthRequired, Action::RetryIpv4),
        (7, 23) | (7, 27) => (AuthRequired, Action::Nothing),
        (7, 28) => (RateLimited, Action::Pause),
        _ => (Other, Action::Nothing),
    }
}

/// The large providers' documented replies (their postmaster pages) and
/// Postfix's anvil limits, most specific first.
fn builtin() -> Vec<Rule> {
    use Action::*;
    use ReplyClass::*;
    let r = Rule::new;
    vec![
        // Every provider: a hard "no such mailbox" (RFC 3463 X.1.1, X.1.10).
        r(Some("5xx"), Some("5.1.1"), None, MailboxUnknown, Suppress),
        r(Some("5xx"), Some("5.1.10"), None, MailboxUnknown, Suppress),
        // Gmail.
        r(None, Some("4.7.28"), None, RateLimited, Pause),
        r(
            None,
            Some("4.2.1"),
            Some("receiving mail at a rate"),
            RateLimited,
            Nothing,
        ),
        r(None, Some("5.7.25"), None, AuthRequired, RetryIpv4),
        r(None, Some("5.7.26"), None, AuthRequired, RetryIpv4),
        r(None, Some("4.7.26"), None, AuthRequired, Nothing),
        r(None, Some("4.7.27"), None, AuthRequired, Nothing),
        r(
            None,
            Some("5.7.1"),
            Some("very low reputation"),
            ReputationBlock,
            Nothing,
        ),
        r(
            None,
            Some("4.7.0"),
            Some("very low reputation"),
            ReputationBlock,
            Pause,
        ),
        r(
            None,
            Some("5.7.1"),
            Some("likely unsolicited mail"),
            SpamRefused,
            Nothing,
        ),
        r(None, None, Some("does not exist"), MailboxUnknown, Nothing),
        r(None, None, Some("over quota"), MailboxFull, Nothing),
        // Microsoft (Exchange Online, Outlook.com).
        r(None, Some("4.7.650"), None, RateLimited, Pause),
        r(None, Some("4.7.651"), None, RateLimited, Pause),
        r(None, Some("4.7.500"), None, RateLimited, Pause),
        r(
            Some("421"),
            Some("4.3.2"),
            Some("concurrent"),
            RateLimited,
            Pause,
        ),
        r(None, Some("5.7.515"), None, AuthRequired, Nothing),
        r(
            None,
            Some("5.7.6*"),
            Some("banned sending ip"),
            ReputationBlock,
            Nothing,
        ),
        r(
            None,
            Some("5.7.1"),
            Some("blocked using"),
            ReputationBlock,
            Nothing,
        ),
        r(
            None,
            Some("5.7.1"),
            Some("part of their network is on our block list"),
            ReputationBlock,
            Nothing,
        ),
        r(
            None,
            Some("5.4.1"),
            Some("access denied"),
            MailboxUnknown,
            Nothing,
        ),
        // Yahoo.
        r(Some("421"), None, Some("[tss04]"), RateLimited, Pause),
        r(Some("421"), None, Some("[ts01]"), RateLimited, Pause),
        r(Some("421"), None, Some("[ts02]"), RateLimited, Pause),
        r(None, None, Some("[ts03]"), ReputationBlock, Nothing),
        r(None, None, Some("[bl21]"), ReputationBlock, Nothing),
        r(None, None, Some("[bl23]"), ReputationBlock, Nothing),
        r(
            Some("5xx"),
            None,
            Some("doesn't have a"),
            MailboxUnknown,
            Suppress,
        ),
        r(Some("554"), Some("5.7.9"), None, SpamRefused, Nothing),
        // Apple iCloud.
        r(None, None, Some("[cs01]"), SpamRefused, Nothing),
        r(None, None, Some("[hm08]"), SpamRefused, Nothing),
        // Postfix's anvil and the common wordings of a rate limit.
        r(
            Some("4xx"),
            None,
            Some("too much mail from"),
            RateLimited,
            Pause,
        ),
        r(
            Some("4xx"),
            None,
            Some("too many connections"),
            RateLimited,
            Pause,
        ),
        r(Some("4xx"), None, Some("rate limit"), RateLimited, Pause),
        r(
            Some("4xx"),
            None,
            Some("temporarily deferred"),
            RateLimited,
            Pause,
        ),
        r(
            Some("5xx"),
            None,
            Some("must issue a starttls"),
            TlsRequired,
            Nothing,
        ),
        r(
            Some("5xx"),
            None,
            Some("spamhaus"),
            ReputationBlock,
            Nothing,
        ),
        r(Some("5xx"), None, Some("spam"), SpamRefused, Nothing),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(code: u16, status: (u8, u16, u16), text: &str) -> (ReplyClass, Action) {
        Classifier::default().classify(&Reply {
            code: Some(code),
            status,
            text,
        })
    }

    #[test]
    fn gmail_unusual_rate_pauses_the_site() {
        let t = "421-4.7.28 [2001:db8::1] Our system has detected an unusual rate of unsolicited mail originating from your IP address.";
        assert_eq!(
            classify(421, (4, 7, 28), t),
            (ReplyClass::RateLimited, Action::Pause)
        );
    }

    #[test]
    fn gmail_missing_ptr_retries_over_ipv4() {
        let t = "550-5.7.25 [2001:db8::1] The IP address sending this message does not have a PTR record setup";
        assert_eq!(
            classify(550, (5, 7, 25), t),
            (ReplyClass::AuthRequired, Action::RetryIpv4)
        );
        let t = "550-5.7.26 This mail has been blocked because the sender is unauthenticated.";
        assert_eq!(
            classify(550, (5, 7, 26), t),
            (ReplyClass::AuthRequired, Action::RetryIpv4)
        );
    }

    #[test]
    fn gmail_unknown_user_is_suppressed() {
        let t = "550-5.1.1 The email account that you tried to reach does not exist.";
        assert_eq!(
            classify(550, (5, 1, 1), t),
            (ReplyClass::MailboxUnknown, Action::Suppress)
        );
    }

    #[test]
    fn gmail_over_quota_is_mailbox_full() {
        let t = "452-4.2.2 The email account that you tried to reach is over quota.";
        assert_eq!(classify(452, (4, 2, 2), t).0, ReplyClass::MailboxFull);
    }

    #[test]
    fn gmail_spam_and_reputation_are_told_apart() {
        let spam =
            "550-5.7.1 Our system has detected that this message is likely unsolicited mail.";
        assert_eq!(classify(550, (5, 7, 1), spam).0, ReplyClass::SpamRefused);
        let rep = "550-5.7.1 This message is likely suspicious due to the very low reputation of the sending IP address.";
        assert_eq!(classify(550, (5, 7, 1), rep).0, ReplyClass::ReputationBlock);
    }

    #[test]
    fn microsoft_rate_limit_and_authentication() {
        let t = "451 4.7.650 The mail server [192.0.2.1] has been temporarily rate limited due to IP reputation.";
        assert_eq!(
            classify(451, (4, 7, 650), t),
            (ReplyClass::RateLimited, Action::Pause)
        );
        let t = "550 5.7.515 Access denied, sending domain example.test does not meet the required authentication level.";
        assert_eq!(classify(550, (5, 7, 515), t).0, ReplyClass::AuthRequired);
        let t = "550 5.7.1 Service unavailable, Client host [192.0.2.1] blocked using Spamhaus.";
        assert_eq!(classify(550, (5, 7, 1), t).0, ReplyClass::ReputationBlock);
        let t =
            "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup";
        assert_eq!(
            classify(550, (5, 1, 10), t),
            (ReplyClass::MailboxUnknown, Action::Suppress)
        );
    }

    #[test]
    fn yahoo_tss04_pauses_the_site() {
        let t = "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints";
        assert_eq!(
            classify(421, (4, 7, 0), t),
            (ReplyClass::RateLimited, Action::Pause)
        );
    }

    #[test]
    fn postfix_anvil_limit_pauses_the_site() {
        let t = "421 4.7.0 mx.example.test Error: too much mail from 127.0.0.1";
        assert_eq!(
            classify(421, (4, 7, 0), t),
            (ReplyClass::RateLimited, Action::Pause)
        );
    }

    #[test]
    fn a_local_failure_without_a_code_is_network() {
        let r = Reply {
            code: None,
            status: (4, 4, 1),
            text: "connect to SMTP 192.0.2.1:25: Connection refused",
        };
        assert_eq!(Classifier::default().classify(&r).0, ReplyClass::Network);
    }

    #[test]
    fn an_unknown_reply_is_other() {
        assert_eq!(
            classify(554, (5, 0, 0), "no thanks"),
            (ReplyClass::Other, Action::Nothing)
        );
    }

    #[test]
    fn operator_rules_come_before_the_built_in_ones() {
        let mine = Rule::new(
            Some("421"),
            Some("4.7.28"),
            None,
            ReplyClass::Other,
            Action::Nothing,
        );
        let c = Classifier::new(&[mine]);
        let r = Reply {
            code: Some(421),
            status: (4, 7, 28),
            text: "421 4.7.28 slow down",
        };
        assert_eq!(c.classify(&r), (ReplyClass::Other, Action::Nothing));
    }

    #[test]
    fn rule_patterns_match_digits_prefixes_and_text() {
        let rule = Rule::new(
            Some("4x1"),
            Some("4.7.*"),
            Some("Try Later"),
            ReplyClass::RateLimited,
            Action::Pause,
        );
        let c = Classifier::new(&[rule]);
        let r = |code, status, text| Reply {
            code: Some(code),
            status,
            text,
        };
        assert_eq!(
            c.classify(&r(451, (4, 7, 9), "please TRY LATER")).1,
            Action::Pause
        );
        assert_eq!(
            c.classify(&r(450, (4, 7, 9), "please try later")).1,
            Action::Nothing
        );
        assert_eq!(
            c.classify(&r(451, (4, 2, 9), "please try later")).1,
            Action::Nothing
        );
    }

    #[test]
    fn malformed_patterns_are_refused() {
        let bad = Rule::new(Some("42"), None, None, ReplyClass::Other, Action::Nothing);
        assert_eq!(bad.check(), Err(RuleError::Code("42".into())));
        let bad = Rule::new(
            None,
            Some("4.x.1"),
            None,
            ReplyClass::Other,
            Action::Nothing,
        );
        assert!(bad.check().is_err());
        assert!(builtin().iter().all(|r| r.check().is_ok()));
    }
}
