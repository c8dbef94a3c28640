//! A site's share across nodes (issue 30: "with Redis the limits hold
//! across all nodes"): what one node asks of the ledger every node
//! shares before a transaction starts, and what it is told. The ledger
//! (the state crate's, in Redis) keeps per site the connections open on
//! every node (leases that lapse when their node stops beating), the
//! earliest next start (so the starts of all nodes together keep the
//! site's pace), and the pause and cut rate after the last rate answer
//! any node was given (so a `421` seen by one node pauses the site on
//! every node). What the answers mean for a site is decided here, by
//! [`SiteState`](crate::SiteState), with `now` passed in.
//!
//! The pace's rule runs inside Redis as [`SITE_START_FN`], a Lua
//! function the state crate's script includes, so that it is one rule
//! whichever node asks, and atomic.

use crate::suppress::BoxFuture;
use serde::{Deserialize, Serialize};
use std::any::Any;

/// What one start asks of the ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LedgerClaim {
    /// Connections open to the site at once, across nodes (at least 1).
    pub max_connections: u32,
    /// The pace: the least time between two starts across nodes, in
    /// milliseconds (0: none).
    pub interval_ms: u64,
    /// A start further away than this from now is not reserved.
    pub max_wait_ms: u64,
    /// The start this node's own pace allows: none is reserved earlier.
    pub not_before: u64,
}

/// The pause and cut rate any node put on a site after a rate answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedPause {
    /// Paused until this time (ms since the epoch).
    pub until: u64,
    /// `421 4.7.28` (the answer that paused the site).
    pub reason: String,
    /// Pauses in a row.
    pub pauses: u32,
    /// The cut rate in force after the pause (messages a minute).
    pub rate: Option<u32>,
    /// The rate the site refused: recovery holds below it.
    pub refused_at: Option<u32>,
    /// How much the cut rate rises each recovery step.
    pub step: u32,
    /// Until when the ledger keeps the record: the pause plus the
    /// longest pause, so that a repeated answer still doubles the pause.
    pub keep_until: u64,
}

/// What a node holds while its transaction is under way: the ledger's
/// connection, given back when dropped.
pub type Hold = Box<dyn Any + Send + Sync>;

/// The ledger's answer to a start.
pub enum Taken {
    /// A connection is held and the start reserved at `at` (≥ now).
    Granted { at: u64, hold: Hold },
    /// Every connection to the site is open on some node; nothing taken.
    Full,
    /// The next start across nodes is at `at`, further than the wait
    /// asked: nothing taken.
    Busy { at: u64 },
    /// The site is paused (see the answer's pause); nothing taken.
    Paused,
}

impl std::fmt::Debug for Taken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Taken::Granted { at, .. } => write!(f, "Granted {{ at: {at} }}"),
            Taken::Full => f.write_str("Full"),
            Taken::Busy { at } => write!(f, "Busy {{ at: {at} }}"),
            Taken::Paused => f.write_str("Paused"),
        }
    }
}

/// The answer and the site's shared pause record, if there is one (also
/// when it is over: its cut rate may still be recovering).
#[derive(Debug)]
pub struct LedgerAnswer {
    pub taken: Taken,
    pub pause: Option<SharedPause>,
}

/// Where every node's share of the sites is kept. Each method answers
/// None when the ledger did not answer: the node then decides on its own
/// state (and counts that), so no mail waits on it.
pub trait SiteLedger: Send + Sync {
    /// Take a connection to `site` and reserve a start (all or nothing).
    fn take(&self, site: &str, claim: LedgerClaim, now: u64)
    -> BoxFuture<'_, Option<LedgerAnswer>>;

    /// Tell every node that `site` is paused (a later pause than the one
    /// kept wins; an earlier one changes nothing).
    fn pause(&self, site: &str, pause: SharedPause) -> BoxFuture<'_, Option<()>>;
}

/// The pace across nodes, as a Lua function for the state crate's
/// script: `site_start(key, now, not_before, interval, max_wait)` reads
/// the earliest next start kept at `key` (ms); the start is at the later
/// of that and `not_before`; one later than `now + max_wait` is refused
/// (the negated time is returned), else the next start is kept
/// `interval` after it (the same rule as
/// [`SiteState::admit`](crate::SiteState::admit)).
pub const SITE_START_FN: &str = r#"
local function site_start(key, now, not_before, interval, max_wait)
  local at = math.max(tonumber(redis.call('GET', key) or '0'), not_before, now)
  if at > now + max_wait then return -at end
  if interval > 0 then
    local nxt = at + interval
    redis.call('SET', key, string.format('%.0f', nxt), 'PX', math.floor(nxt - now) + 1000)
  end
  return at
end
"#;
