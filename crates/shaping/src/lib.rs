//! Outbound manners, as plain decisions: what a remote reply means
//! ([`classify`]: a table of reply code, enhanced code and text pattern
//! to a [`ReplyClass`] and an [`Action`]), which *site* a destination
//! belongs to (the set of MX hosts it resolves to, so every domain hosted
//! at one provider shares one set of limits: [`site`]), how fast a site
//! may be sent to now and when it is paused ([`pace`]: the limits, the
//! pause after a rate answer and the additive-increase,
//! multiplicative-decrease recovery; [`ledger`]: the same limits and
//! pauses shared by every node), and which failed recipients are
//! suppressed and how a later RCPT is answered ([`suppress`]).
//!
//! This crate never reads a clock (every decision takes `now` in
//! milliseconds since the epoch), opens no socket and stores nothing: the
//! router applies its answers, the queue records outcomes, and the state
//! crate keeps the suppression list and the sites' shared ledger.

pub mod classify;
pub mod ledger;
pub mod pace;
pub mod site;
pub mod suppress;

pub use classify::{Action, Classifier, Reply, ReplyClass, Rule, RuleError};
pub use ledger::{Hold, LedgerAnswer, LedgerClaim, SharedPause, SiteLedger, Taken};
pub use pace::{Admit, PaceSettings, SiteState, SiteView};
pub use site::{SiteLimits, SiteRule, Sites};
pub use suppress::{Suppression, SuppressionStore, suppression_for};
