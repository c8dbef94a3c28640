//! The pace of one site, with the clock passed in.

use super::*;

const T0: u64 = 1_800_000_000_000;

fn limits(conns: u32, per_minute: u32) -> SiteLimits {
    SiteLimits {
        max_connections: conns,
        messages_per_connection: 0,
        messages_per_minute: per_minute,
        connections_per_minute: 0,
    }
}

fn site(conns: u32, per_minute: u32) -> SiteState {
    SiteState::new("google", limits(conns, per_minute), PaceSettings::default())
}

fn rate_answer() -> [(ReplyClass, Action, String); 1] {
    [(
        ReplyClass::RateLimited,
        Action::Pause,
        "421 4.7.28".to_owned(),
    )]
}

#[test]
fn starts_are_spaced_by_the_rate() {
    let mut s = site(10, 60);
    assert_eq!(s.admit(T0), Admit::Go { at: T0 });
    assert_eq!(s.admit(T0), Admit::Go { at: T0 + 1000 });
    assert_eq!(s.admit(T0), Admit::Go { at: T0 + 2000 });
    // The next would be 3 s away: more than the 2 s worth waiting.
    assert!(matches!(s.admit(T0), Admit::Defer { until, .. } if until >= T0 + 3000));
}

#[test]
fn connections_are_limited() {
    let mut s = site(2, 0);
    assert!(matches!(s.admit(T0), Admit::Go { .. }));
    assert!(matches!(s.admit(T0), Admit::Go { .. }));
    assert_eq!(s.admit(T0), Admit::Full);
    s.done(T0, &[]);
    assert!(matches!(s.admit(T0), Admit::Go { .. }));
}

#[test]
fn a_rate_answer_pauses_the_site_for_at_least_a_minute() {
    let mut s = site(10, 0);
    s.admit(T0);
    s.done(T0 + 10, &rate_answer());
    let Admit::Defer { until, reason } = s.admit(T0 + 20) else {
        panic!("not paused");
    };
    assert!(until >= T0 + 10 + 60_000);
    assert!(reason.starts_with("site google paused until "), "{reason}");
    assert!(reason.ends_with(" after 421 4.7.28"), "{reason}");
    assert!(matches!(s.admit(T0 + 10 + 60_000), Admit::Go { .. }));
}

#[test]
fn repeated_pauses_get_longer_up_to_the_limit() {
    let mut s = site(10, 0);
    let mut now = T0;
    let mut lengths = Vec::new();
    for _ in 0..9 {
        assert!(matches!(s.admit(now), Admit::Go { .. }), "at {now}");
        s.done(now, &rate_answer());
        let (until, _) = s.paused(now).expect("paused");
        lengths.push((until - now) / 60_000);
        now = until;
    }
    assert_eq!(lengths, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
}

#[test]
fn answers_from_before_the_pause_do_not_pause_again() {
    let mut s = site(10, 0);
    for _ in 0..3 {
        s.admit(T0);
    }
    s.done(T0 + 1, &rate_answer());
    s.done(T0 + 2, &rate_answer());
    s.done(T0 + 3, &rate_answer());
    assert_eq!(s.paused(T0 + 3).map(|p| p.0), Some(T0 + 1 + 60_000));
    assert_eq!(s.view(T0 + 3).pauses, 1);
}

#[test]
fn the_rate_is_cut_in_half_then_recovers_step_by_step() {
    let mut s = site(10, 100);
    s.admit(T0);
    s.done(T0, &rate_answer());
    let resume = T0 + 60_000;
    assert_eq!(s.rate(), 50);
    // A step of a tenth of the rate before the cut, each minute.
    assert!(matches!(s.admit(resume + 60_000), Admit::Go { .. }));
    assert_eq!(s.rate(), 60);
    s.done(resume + 60_000, &[]);
    assert!(matches!(s.admit(resume + 3 * 60_000), Admit::Go { .. }));
    assert_eq!(s.rate(), 80);
    s.done(resume + 3 * 60_000, &[]);
    assert!(matches!(s.admit(resume + 10 * 60_000), Admit::Go { .. }));
    assert_eq!(s.rate(), 90, "nine tenths of the refused 100, held");
}

#[test]
fn recovery_holds_below_the_rate_the_site_refused() {
    let mut s = site(100, 0);
    for i in 0..40 {
        assert!(matches!(s.admit(T0 + i), Admit::Go { .. }));
    }
    s.done(T0 + 50, &rate_answer());
    let resume = T0 + 50 + 60_000;
    for minute in 1..30 {
        s.recover(resume + minute * 60_000);
    }
    assert_eq!(s.rate(), 36, "nine tenths of the 40 it refused");
}

#[test]
fn a_calm_stretch_forgets_the_refused_rate() {
    let mut s = site(10, 100);
    s.admit(T0);
    s.done(T0, &rate_answer());
    let resume = T0 + 60_000;
    s.recover(resume + 10 * 60_000);
    assert_eq!(s.rate(), 90);
    // An hour after the pause (max_pause) without a rate answer.
    s.recover(resume + 60 * 60_000);
    s.recover(resume + 61 * 60_000);
    assert_eq!(s.rate(), 100, "back at the configured limit");
    assert!(s.rate.is_none());
}

#[test]
fn a_refusal_after_a_calm_stretch_pauses_for_the_minimum_again() {
    let mut s = site(10, 0);
    s.admit(T0);
    s.done(T0, &rate_answer());
    let resume = s.paused(T0).expect("paused").0;
    // Right after the pause: a repeat, twice as long.
    s.admit(resume);
    s.done(resume + 10, &rate_answer());
    let (until, _) = s.paused(resume + 10).expect("paused again");
    assert_eq!(until - (resume + 10), 2 * 60_000);
    // Five calm minutes later: the minimum again.
    let later = until + 5 * 60_000;
    s.admit(later);
    s.done(later, &rate_answer());
    let (until, _) = s.paused(later).expect("paused a third time");
    assert_eq!(until - later, 60_000);
}

#[test]
fn an_unlimited_site_is_cut_to_half_of_what_it_was_sending() {
    let mut s = site(100, 0);
    for i in 0..40 {
        assert!(matches!(s.admit(T0 + i), Admit::Go { .. }));
    }
    s.done(T0 + 50, &rate_answer());
    assert_eq!(s.rate(), 20);
}

#[test]
fn deferred_messages_come_back_spread_out() {
    let mut s = site(100, 0);
    for i in 0..40 {
        s.admit(T0 + i);
    }
    // Cut to 20 a minute: one every 3 s.
    s.done(T0, &rate_answer());
    let untils: Vec<u64> = (0..3)
        .map(|_| match s.admit(T0 + 1) {
            Admit::Defer { until, .. } => until,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(untils[0] < untils[1] && untils[1] < untils[2], "{untils:?}");
    assert_eq!(s.view(T0 + 1).deferred, 3);
}

#[test]
fn a_site_at_its_rate_sends_messages_back_one_interval_apart() {
    // 120 a minute: one every 500 ms; the five within 2 s go.
    let mut s = site(10, 120);
    let mut untils = Vec::new();
    for _ in 0..10 {
        match s.admit(T0) {
            Admit::Go { .. } => {}
            Admit::Defer { until, .. } => untils.push(until),
            Admit::Full => panic!("full"),
        }
    }
    let gaps: Vec<u64> = untils.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps, [500; 4]);
}

#[test]
fn no_message_is_sent_back_further_than_one_recovery_step() {
    let mut s = site(10, 0);
    for i in 0..40 {
        s.admit(T0 + i);
    }
    s.done(T0 + 50, &rate_answer());
    let resume = T0 + 50 + 60_000;
    // Cut to 20 a minute: 100 messages would take five minutes.
    let last = (0..100)
        .map(|_| match s.admit(T0 + 60) {
            Admit::Defer { until, .. } => until,
            other => panic!("{other:?}"),
        })
        .max();
    assert_eq!(
        last,
        Some(resume + 60_000),
        "back when the rate may have risen"
    );
}

#[test]
fn other_answers_are_remembered_but_change_nothing() {
    let mut s = site(10, 0);
    s.admit(T0);
    s.done(
        T0,
        &[(
            ReplyClass::MailboxUnknown,
            Action::Suppress,
            "550 5.1.1".into(),
        )],
    );
    assert_eq!(s.paused(T0), None);
    assert_eq!(s.view(T0).last_answers[0].class, ReplyClass::MailboxUnknown);
    assert!(s.idle(T0));
}

#[test]
fn clock_time_is_hours_and_minutes_utc() {
    assert_eq!(clock_time(12 * 3_600_000 + 4 * 60_000 + 59_000), "12:04");
}

#[test]
fn new_connections_are_spaced_by_their_own_rate_and_transactions_are_not() {
    let mut s = SiteState::new(
        "google",
        SiteLimits {
            max_connections: 10,
            messages_per_connection: 0,
            messages_per_minute: 0,
            connections_per_minute: 60,
        },
        PaceSettings::default(),
    );
    // Transactions over kept connections: not held by the connection rate.
    for _ in 0..5 {
        assert_eq!(s.admit(T0), Admit::Go { at: T0 });
    }
    // New connections: one a second, the ones further than 2 s sent back.
    assert_eq!(s.admit_connection(T0), Admit::Go { at: T0 });
    assert_eq!(s.admit_connection(T0), Admit::Go { at: T0 + 1000 });
    assert_eq!(s.admit_connection(T0), Admit::Go { at: T0 + 2000 });
    let Admit::Defer { until, reason } = s.admit_connection(T0) else {
        panic!("not sent back");
    };
    assert!(until >= T0 + 3000);
    assert!(reason.ends_with("60 connections/min"), "{reason}");
}
