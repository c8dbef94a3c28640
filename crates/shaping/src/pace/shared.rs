//! One site's state beside the ledger every node shares (see
//! [`crate::ledger`]): what a start asks of it, what its answer makes of
//! a start this node admitted, and the pause this node hands on. Pure,
//! like the rest of the pace: `now` is passed in.

use super::{Admit, MINUTE, SiteState};
use crate::ledger::{LedgerAnswer, LedgerClaim, SharedPause, Taken};

impl SiteState {
    /// What a start this node admitted at `at` asks of the ledger.
    pub fn claim(&self, at: u64) -> LedgerClaim {
        LedgerClaim {
            max_connections: self.limits.max_connections.max(1),
            interval_ms: self.interval(),
            max_wait_ms: self.settings.max_wait_ms,
            not_before: at,
        }
    }

    /// A start this node admitted ([`Admit::Go`] at `at`) once the
    /// ledger answered: it goes at the time the ledger reserved, or it is
    /// undone and waits for a connection on any node to be given back,
    /// or comes back when the site's pace or pause across nodes lets it.
    pub fn after_ledger(&mut self, now: u64, at: u64, answer: &LedgerAnswer) -> Admit {
        if let Some(p) = &answer.pause {
            self.adopt(p);
        }
        match answer.taken {
            Taken::Granted { at: reserved, .. } => Admit::Go {
                at: at.max(reserved),
            },
            Taken::Full => {
                self.undo(at);
                Admit::Full
            }
            Taken::Busy { at: next } => {
                self.undo(at);
                // Until then this node need not ask again.
                self.next_start = self.next_start.max(next);
                let until = self.spread(next, now);
                Admit::Defer {
                    until,
                    reason: format!(
                        "site {} at its rate of {}/min across nodes",
                        self.name,
                        self.rate()
                    ),
                }
            }
            Taken::Paused => {
                self.undo(at);
                self.paused_deferral(now)
            }
        }
    }

    /// Take on a pause another node was given (or this node, before a
    /// restart), with its cut rate and recovery; an older one than the
    /// pause in force changes nothing.
    pub fn adopt(&mut self, p: &SharedPause) {
        if p.until <= self.paused_until {
            return;
        }
        self.paused_until = p.until;
        self.pause_reason = p.reason.clone();
        self.pauses = self.pauses.max(p.pauses);
        self.rate = p.rate;
        self.refused_at = p.refused_at;
        self.step = p.step.max(1);
        self.last_step = p.until;
        self.next_start = self.next_start.max(p.until);
        self.horizon = self.horizon.max(p.until);
    }

    /// The pause in force (the last one), as the other nodes take it on.
    pub fn shared_pause(&self) -> SharedPause {
        SharedPause {
            until: self.paused_until,
            reason: self.pause_reason.clone(),
            pauses: self.pauses,
            rate: self.rate,
            refused_at: self.refused_at,
            step: self.step,
            keep_until: self.paused_until + self.settings.max_pause_ms.max(MINUTE),
        }
    }

    /// A start admitted at `at` that did not happen.
    fn undo(&mut self, at: u64) {
        self.in_use = self.in_use.saturating_sub(1);
        if at / MINUTE == self.window.0 {
            self.window.1 = self.window.1.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{Action, ReplyClass};
    use crate::pace::PaceSettings;
    use crate::site::SiteLimits;

    const T0: u64 = 1_800_000_000_000;

    fn site(conns: u32, per_minute: u32) -> SiteState {
        let limits = SiteLimits {
            max_connections: conns,
            messages_per_connection: 0,
            messages_per_minute: per_minute,
            connections_per_minute: 0,
        };
        SiteState::new("google", limits, PaceSettings::default())
    }

    fn answer(taken: Taken, pause: Option<SharedPause>) -> LedgerAnswer {
        LedgerAnswer { taken, pause }
    }

    fn granted(at: u64) -> Taken {
        Taken::Granted {
            at,
            hold: Box::new(()),
        }
    }

    fn go_at(s: &mut SiteState, now: u64) -> u64 {
        match s.admit(now) {
            Admit::Go { at } => at,
            other => panic!("{other:?}"),
        }
    }

    fn paused_by_another_node(until: u64) -> SharedPause {
        SharedPause {
            until,
            reason: "421 4.7.28".into(),
            pauses: 1,
            rate: Some(10),
            refused_at: Some(20),
            step: 2,
            keep_until: until + 3_600_000,
        }
    }

    #[test]
    fn a_start_asks_the_ledger_for_the_sites_pace_and_connections() {
        let s = site(3, 20);
        assert_eq!(
            s.claim(T0 + 5),
            LedgerClaim {
                max_connections: 3,
                interval_ms: 3_000,
                max_wait_ms: 2_000,
                not_before: T0 + 5,
            }
        );
    }

    #[test]
    fn a_granted_start_goes_at_the_time_the_ledger_reserved() {
        let mut s = site(10, 20);
        let at = go_at(&mut s, T0);
        let a = answer(granted(T0 + 1_500), None);
        assert_eq!(s.after_ledger(T0, at, &a), Admit::Go { at: T0 + 1_500 });
        assert_eq!(s.view(T0).connections, 1);
    }

    #[test]
    fn connections_open_on_other_nodes_make_the_site_full_here() {
        let mut s = site(2, 0);
        let at = go_at(&mut s, T0);
        assert_eq!(
            s.after_ledger(T0, at, &answer(Taken::Full, None)),
            Admit::Full
        );
        assert_eq!(s.view(T0).connections, 0, "the local start is undone");
    }

    #[test]
    fn a_pace_taken_by_other_nodes_sends_the_message_back_until_the_next_start() {
        let mut s = site(10, 20);
        let at = go_at(&mut s, T0);
        let a = answer(Taken::Busy { at: T0 + 9_000 }, None);
        let Admit::Defer { until, reason } = s.after_ledger(T0, at, &a) else {
            panic!("not deferred");
        };
        assert!(until >= T0 + 9_000, "{until}");
        assert_eq!(reason, "site google at its rate of 20/min across nodes");
        assert_eq!(s.view(T0).connections, 0);
        // This node does not ask again before then.
        assert!(matches!(s.admit(T0 + 100), Admit::Defer { .. }));
    }

    #[test]
    fn a_pause_another_node_was_given_pauses_the_site_here() {
        let mut s = site(10, 20);
        let at = go_at(&mut s, T0);
        let p = paused_by_another_node(T0 + 60_000);
        let Admit::Defer { until, reason } =
            s.after_ledger(T0, at, &answer(Taken::Paused, Some(p)))
        else {
            panic!("not deferred");
        };
        assert!(until >= T0 + 60_000);
        assert!(reason.ends_with("after 421 4.7.28"), "{reason}");
        assert_eq!(s.paused(T0).map(|p| p.0), Some(T0 + 60_000));
        assert_eq!(s.rate(), 10, "the cut rate comes with the pause");
    }

    #[test]
    fn an_ended_pause_brings_its_cut_rate_recovering_on_the_same_schedule() {
        let mut s = site(10, 20);
        let at = go_at(&mut s, T0 + 120_000);
        let p = paused_by_another_node(T0);
        let a = answer(granted(at), Some(p));
        assert!(matches!(
            s.after_ledger(T0 + 120_000, at, &a),
            Admit::Go { .. }
        ));
        s.done(T0 + 120_000, &[]);
        // Two minutes after the pause: two steps of 2 above the cut.
        assert!(matches!(s.admit(T0 + 130_000), Admit::Go { .. }));
        assert_eq!(s.rate(), 14);
        // Holding below the rate the site refused, as the node it refused.
        s.done(T0 + 130_000, &[]);
        assert!(matches!(s.admit(T0 + 600_000), Admit::Go { .. }));
        assert_eq!(s.rate(), 18, "nine tenths of the refused 20");
    }

    #[test]
    fn an_older_pause_than_the_one_in_force_changes_nothing() {
        let mut s = site(10, 0);
        go_at(&mut s, T0);
        s.done(
            T0,
            &[(ReplyClass::RateLimited, Action::Pause, "421 4.7.0".into())],
        );
        s.adopt(&paused_by_another_node(T0 + 1));
        assert_eq!(s.paused(T0).map(|p| p.1), Some("421 4.7.0"));
    }

    #[test]
    fn the_pause_this_node_begins_is_handed_on_with_its_cut_rate() {
        let mut s = site(10, 40);
        go_at(&mut s, T0);
        let shared = s.done(
            T0 + 10,
            &[(ReplyClass::RateLimited, Action::Pause, "421 4.7.28".into())],
        );
        let p = shared.expect("a pause to hand on");
        assert_eq!(p.until, T0 + 10 + 60_000);
        assert_eq!((p.rate, p.refused_at), (Some(20), Some(40)));
        assert_eq!(p.step, 4);
        assert_eq!(p.keep_until, p.until + 3_600_000);
        // A second answer from before the pause hands nothing on.
        let again = s.done(
            T0 + 20,
            &[(ReplyClass::RateLimited, Action::Pause, "421 4.7.28".into())],
        );
        assert_eq!(again, None);
    }
}
