//! The suppression list's decisions: which failed recipient is put on it
//! (a permanent "no such mailbox" from another server, RFC 3463 X.1.1 or
//! X.1.10, or an answer the table marks `suppress`), for how long, and
//! what a later RCPT to it is told. Where the list is kept (embedded or
//! Redis) is the state crate's business, behind [`SuppressionStore`].

use crate::classify::{Action, ReplyClass};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;

/// One suppressed address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppression {
    /// The address, lower-cased.
    pub address: String,
    /// When it bounced, seconds since the epoch.
    pub since: u64,
    /// Until when it stays suppressed.
    pub until: u64,
    /// The remote answer, `550 5.1.1 ... does not exist`.
    pub reply: String,
    pub class: ReplyClass,
    /// The queue id of the message that bounced.
    pub queue_id: String,
}

impl Suppression {
    pub fn active(&self, now: u64) -> bool {
        now < self.until
    }

    /// The RCPT reply's text (after `550 5.1.1 `).
    pub fn refusal(&self) -> String {
        let reply: String = self.reply.chars().take(200).collect();
        format!(
            "<{}> is suppressed: it bounced on {} ({}); no mail goes to it until {}",
            self.address,
            date_time(self.since),
            reply,
            date_time(self.until)
        )
    }
}

/// The entry for a recipient that ended permanently with this class and
/// action at another server, if it is one to suppress.
pub fn suppression_for(
    address: &str,
    class: ReplyClass,
    action: Action,
    remote_reply: Option<&str>,
    now: u64,
    days: u32,
    queue_id: &str,
) -> Option<Suppression> {
    let reply = remote_reply?;
    (days > 0 && action == Action::Suppress).then(|| Suppression {
        address: address.to_ascii_lowercase(),
        since: now,
        until: now + u64::from(days) * 86_400,
        reply: reply.to_owned(),
        class,
        queue_id: queue_id.to_owned(),
    })
}

/// A boxed future, for the store's methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the list is kept.
pub trait SuppressionStore: Send + Sync {
    fn suppress(&self, entry: Suppression) -> BoxFuture<'_, ()>;
}

/// `2026-12-07 12:04 UTC` of seconds since the epoch.
pub fn date_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let s = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        s / 3600,
        s / 60 % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_796_644_800; // 2026-12-07 12:00 UTC

    #[test]
    fn a_remote_unknown_mailbox_is_suppressed_for_the_configured_days() {
        let s = suppression_for(
            "Bob@Example.test",
            ReplyClass::MailboxUnknown,
            Action::Suppress,
            Some("550 5.1.1 no such user"),
            NOW,
            30,
            "q1",
        )
        .expect("suppressed");
        assert_eq!(s.address, "bob@example.test");
        assert_eq!(s.until, NOW + 30 * 86_400);
        assert!(s.active(NOW + 29 * 86_400) && !s.active(NOW + 30 * 86_400));
    }

    #[test]
    fn a_local_failure_or_another_class_is_not_suppressed() {
        let f = |action, reply| {
            suppression_for(
                "a@b.test",
                ReplyClass::MailboxUnknown,
                action,
                reply,
                NOW,
                30,
                "q",
            )
        };
        assert!(f(Action::Suppress, None).is_none());
        assert!(f(Action::Nothing, Some("550 5.7.1 no")).is_none());
        let off = suppression_for(
            "a@b.test",
            ReplyClass::MailboxUnknown,
            Action::Suppress,
            Some("550 5.1.1"),
            NOW,
            0,
            "q",
        );
        assert!(off.is_none());
    }

    #[test]
    fn the_refusal_says_when_and_why() {
        let s = suppression_for(
            "a@b.test",
            ReplyClass::MailboxUnknown,
            Action::Suppress,
            Some("550 5.1.1 no such user"),
            NOW,
            1,
            "q",
        )
        .expect("entry");
        assert_eq!(
            s.refusal(),
            "<a@b.test> is suppressed: it bounced on 2026-12-07 12:00 UTC (550 5.1.1 no such user); no mail goes to it until 2026-12-08 12:00 UTC"
        );
    }
}
