//! The scenarios of issue 29, driven with the clock passed in: what the
//! way in and the queue would record for each event, applied to one
//! embedded record, and the decision after each.

use crate::observe;
use crate::{Action, Contained, Counter, Record, Signal, Tally, sign};
use portcullis_config::Containment as Rules;
use std::net::IpAddr;

const T0: u64 = 1_800_000_000;

fn rules() -> Rules {
    Rules {
        remediation_url: "https://help.example.test/held".into(),
        ..Rules::default()
    }
}

/// One account as the way in sees it, with the embedded record.
struct Account {
    record: Record,
    rules: Rules,
    held_at: Option<u64>,
    /// Recipients outside our domains in messages that were queued
    /// while the account was not held (so they left).
    delivered_external: usize,
    queued_held: usize,
}

/// A recipient of a test message.
#[derive(Clone)]
enum To {
    External(String),
    LocalUnknown,
}

impl Account {
    fn new(rules: Rules) -> Account {
        Account {
            record: Record::default(),
            rules,
            held_at: None,
            delivered_external: 0,
            queued_held: 0,
        }
    }

    fn tally(&self, now: u64) -> Tally {
        self.record.tally(now, self.rules.history_days)
    }

    /// Apply, then put in force whatever the facts now call for.
    fn record(&mut self, changes: Vec<crate::Change>, now: u64) {
        self.record.apply(&changes);
        self.decide(now);
    }

    fn decide(&mut self, now: u64) {
        if let Some(c) = self.tally(now).escalation(&self.rules, now) {
            if c.action == Action::Hold && self.held_at.is_none() {
                self.held_at = Some(now);
            }
            self.record.contained = Some(c);
        }
    }

    fn held(&self) -> bool {
        self.record
            .contained
            .as_ref()
            .is_some_and(|c| c.action == Action::Hold)
    }

    /// One submission session: login, MAIL, each RCPT, DATA; as the
    /// pipeline does it.
    fn submit(&mut self, now: u64, ip: IpAddr, to: &[To]) -> Result<(), String> {
        self.record(observe::login(ip, now), now);
        self.tally(now)
            .admit(&self.rules, "alice@example.test", now)?;
        let mut accepted = Vec::new();
        for t in to {
            if self.held() {
                break; // 451 4.7.1 to every further RCPT
            }
            match t {
                To::LocalUnknown => self.record(observe::unknown_recipient(now), now),
                To::External(a) => accepted.push(a.clone()),
            }
        }
        if accepted.is_empty() {
            return Ok(());
        }
        self.record(observe::queued(&format!("q{now}"), &accepted, now), now);
        if self.held() {
            self.queued_held += 1;
        } else {
            self.delivered_external += accepted.len();
        }
        Ok(())
    }
}

fn v6(net: u16) -> IpAddr {
    format!("2001:db8:{net:x}::25").parse().unwrap()
}

fn bot_recipients(msg: usize, per_message: usize) -> Vec<To> {
    (0..per_message)
        .map(|i| {
            if i % 3 == 2 {
                To::LocalUnknown
            } else {
                To::External(format!("victim{msg}-{i}@elsewhere.test"))
            }
        })
        .collect()
}

#[test]
fn fast_bot_on_twenty_networks_is_held_before_twenty_outside_recipients_get_mail() {
    let mut a = Account::new(rules());
    for msg in 0..200 {
        let now = T0 + msg as u64;
        let _ = a.submit(now, v6((msg % 20) as u16), &bot_recipients(msg, 50));
    }
    assert!(a.held(), "the bot is held");
    assert!(
        a.delivered_external <= 20,
        "{} outside recipients got mail before the hold",
        a.delivered_external
    );
    let c = a.record.contained.clone().unwrap();
    assert_eq!(c.reason(), Some(Signal::UnknownRecipients));
    assert!(c.until.is_none(), "a hold waits for the operator");
}

#[test]
fn slow_bot_is_held_within_an_hour_by_unknown_recipients_and_spread() {
    let mut a = Account::new(rules());
    for msg in 0..120 {
        let now = T0 + 60 * msg as u64;
        let _ = a.submit(now, v6((msg % 20) as u16), &bot_recipients(msg, 5));
    }
    let held_at = a.held_at.expect("the slow bot is held");
    assert!(held_at - T0 <= 3600, "held after {} s", held_at - T0);
    let c = a.record.contained.clone().unwrap();
    assert!(
        matches!(
            c.reason(),
            Some(Signal::UnknownRecipients | Signal::ClientNetworks)
        ),
        "{c:?}"
    );
}

#[test]
fn slow_bot_from_one_network_is_held_within_an_hour_by_unknown_recipients_alone() {
    let mut a = Account::new(rules());
    for msg in 0..120 {
        let now = T0 + 60 * msg as u64;
        let _ = a.submit(now, v6(1), &bot_recipients(msg, 5));
    }
    let held_at = a.held_at.expect("the slow bot is held");
    assert!(held_at - T0 <= 3600, "held after {} s", held_at - T0);
    let c = a.record.contained.clone().unwrap();
    assert_eq!(c.reason(), Some(Signal::UnknownRecipients));
}

#[test]
fn slow_bot_writing_only_to_real_addresses_is_held_by_spread_alone() {
    let mut a = Account::new(rules());
    for msg in 0..60 {
        let now = T0 + 60 * msg as u64;
        let to: Vec<To> = (0..5)
            .map(|i| To::External(format!("v{msg}-{i}@elsewhere.test")))
            .collect();
        let _ = a.submit(now, v6((msg % 20) as u16), &to);
    }
    let c = a.record.contained.clone().expect("held");
    assert_eq!(c.reason(), Some(Signal::ClientNetworks));
    assert_eq!(c.networks.len(), 10);
}

/// A pseudo-random spread of ±10 % around `base`, the same each run.
fn jitter(base: u64, hour: u64) -> u64 {
    let x = hour.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    base * 9 / 10 + x % (base / 5 + 1)
}

#[test]
fn bulk_account_with_history_is_never_contained_over_a_week() {
    let rules = rules();
    let mut a = Account::new(rules.clone());
    let start = T0 - 14 * 24 * 3600;
    // Fourteen days of history at about 2,000 messages an hour.
    let mut history = Vec::new();
    for h in 0..14 * 24u64 {
        let at = start + h * 3600;
        let n = jitter(2000, h);
        history.push(crate::Change::Count {
            counter: Counter::HistoryMessages,
            n,
            at,
        });
        history.push(crate::Change::Count {
            counter: Counter::HistoryRecipients,
            n,
            at,
        });
    }
    a.record.apply(&history);
    let office: IpAddr = "192.0.2.10".parse().unwrap();
    let mut next_rcpt = 0u64;
    for minute in 0..7 * 24 * 60u64 {
        let now = T0 + minute * 60;
        let hour = minute / 60;
        let per_minute = jitter(2000, hour + 10_000) / 60;
        let mut changes = observe::login(office, now);
        for m in 0..per_minute {
            next_rcpt += 1;
            let to = vec![format!("subscriber{}@list.test", next_rcpt % 50_000)];
            changes.extend(observe::queued(&format!("q{minute}-{m}"), &to, now));
            // One in two hundred recipients is gone (a stale list).
            let failed = next_rcpt.is_multiple_of(200).then_some((5, 1, 1));
            changes.extend(observe::outcome(failed, now));
        }
        a.record(changes, now);
        assert!(
            a.record.contained.is_none(),
            "contained at minute {minute}: {:?}",
            a.record.contained
        );
        if minute % 60 == 0 {
            a.record.prune(now, rules.history_days);
        }
    }
}

#[test]
fn new_account_sending_its_first_thirty_messages_is_never_contained() {
    let mut a = Account::new(rules());
    let home: IpAddr = "198.51.100.7".parse().unwrap();
    let phone = v6(7);
    for msg in 0..30u64 {
        // Thirty messages in the first two hours, then a week of quiet.
        let now = T0 + msg * 240;
        let ip = if msg % 2 == 0 { home } else { phone };
        let mut to: Vec<To> = (0..3)
            .map(|i| To::External(format!("friend{}@elsewhere.test", (msg + i) % 12)))
            .collect();
        if msg == 4 {
            to.push(To::LocalUnknown); // one mistyped colleague
        }
        a.submit(now, ip, &to).expect("never deferred");
    }
    for day in 0..7 {
        a.decide(T0 + day * 24 * 3600);
    }
    assert!(a.record.contained.is_none(), "{:?}", a.record.contained);
    assert_eq!(a.delivered_external, 90);
}

#[test]
fn third_spam_strike_in_a_day_holds() {
    let mut a = Account::new(rules());
    a.record(observe::spam_strike("q1", T0), T0);
    a.record(observe::spam_strike("q2", T0 + 3000), T0 + 3000);
    assert!(a.record.contained.is_none(), "two strikes are not enough");
    a.record(observe::spam_strike("q3", T0 + 6000), T0 + 6000);
    let c = a.record.contained.clone().expect("held");
    assert_eq!(
        (c.action, c.reason()),
        (Action::Hold, Some(Signal::SpamStrikes))
    );
    assert_eq!(c.samples, ["q3", "q2", "q1"]);
}

#[test]
fn strikes_a_day_apart_do_not_add_up() {
    let mut a = Account::new(rules());
    for day in 0..5 {
        let now = T0 + day * 25 * 3600;
        a.record(observe::spam_strike("q", now), now);
    }
    assert!(a.record.contained.is_none());
}

#[test]
fn one_spam_trap_hit_holds() {
    let mut a = Account::new(rules());
    a.record(observe::trap_hit(T0), T0);
    assert_eq!(
        a.record.contained.and_then(|c| c.reason()),
        Some(Signal::SpamTraps)
    );
}

#[test]
fn complaints_hold_at_their_daily_threshold() {
    let mut a = Account::new(rules());
    for i in 0..9 {
        a.record(observe::complaint(T0 + i), T0 + i);
    }
    assert!(a.record.contained.is_none());
    a.record(observe::complaint(T0 + 9), T0 + 9);
    assert_eq!(
        a.record.contained.and_then(|c| c.reason()),
        Some(Signal::Complaints)
    );
}

#[test]
fn hard_bounce_ratio_counts_only_after_its_minimum() {
    let mut a = Account::new(rules());
    // 30 of 40 bounced (not 5.1.x): over the ratio, under the minimum.
    for i in 0..40 {
        let failed = (i < 30).then_some((5, 7, 1));
        a.record(observe::outcome(failed, T0 + i), T0 + i);
    }
    assert!(a.record.contained.is_none());
    for i in 40..50 {
        a.record(observe::outcome(None, T0 + i), T0 + i);
    }
    assert_eq!(
        a.record.contained.and_then(|c| c.reason()),
        Some(Signal::HardBounceRatio)
    );
}

#[test]
fn remote_unknown_answers_count_with_local_ones() {
    let mut a = Account::new(rules());
    for i in 0..5 {
        a.record(observe::unknown_recipient(T0 + i), T0 + i);
        a.record(observe::outcome(Some((5, 1, 1)), T0 + i), T0 + i);
    }
    assert_eq!(
        a.record.contained.and_then(|c| c.reason()),
        Some(Signal::UnknownRecipients)
    );
}

#[test]
fn unknown_recipients_an_hour_apart_do_not_add_up() {
    let mut a = Account::new(rules());
    for i in 0..30 {
        let now = T0 + i * 400;
        a.record(observe::unknown_recipient(now), now);
    }
    assert!(a.record.contained.is_none());
}

#[test]
fn volume_beyond_the_floor_throttles_a_new_account() {
    let r = rules();
    let mut a = Account::new(r.clone());
    let office: IpAddr = "192.0.2.1".parse().unwrap();
    for m in 0..101u64 {
        let to = [format!("r{m}@elsewhere.test")];
        a.submit(
            T0 + m,
            office,
            &to.iter().cloned().map(To::External).collect::<Vec<_>>(),
        )
        .expect("accepted until the throttle's budget is spent");
    }
    let c = a.record.contained.clone().expect("throttled");
    assert_eq!(
        (c.action, c.reason()),
        (Action::Throttle, Some(Signal::VolumeMessages))
    );
    let err = a
        .tally(T0 + 200)
        .admit(&r, "alice@example.test", T0 + 200)
        .expect_err("over the throttle's budget");
    assert!(err.contains("limited to 10 messages an hour"), "{err}");
    assert!(err.contains("https://help.example.test/held"), "{err}");
    // The throttle ends by itself; the volume has left the window.
    let later = T0 + r.throttle_secs + 3600;
    assert!(
        a.tally(later)
            .admit(&r, "alice@example.test", later)
            .is_ok()
    );
}

#[test]
fn an_account_usual_volume_sets_its_own_limit() {
    let r = rules();
    let mut t = Record::default();
    let hist: Vec<_> = (1..=48u64)
        .map(|h| crate::Change::Count {
            counter: Counter::HistoryMessages,
            n: 500,
            at: T0 - h * 3600,
        })
        .collect();
    t.apply(&hist);
    for m in 0..1000u64 {
        t.apply(&observe::queued("q", &[format!("r{m}@x.test")], T0 + m));
    }
    let a = crate::assess(&t.tally(T0 + 1000, 14), &r);
    assert!(
        !a.findings
            .iter()
            .any(|f| f.signal == Signal::VolumeMessages),
        "1,000 is within three times its usual 500: {a:?}"
    );
    for m in 0..600u64 {
        t.apply(&observe::queued(
            "q",
            &[format!("s{m}@x.test")],
            T0 + 1000 + m,
        ));
    }
    let a = crate::assess(&t.tally(T0 + 1600, 14), &r);
    assert!(
        a.findings
            .iter()
            .any(|f| f.signal == Signal::VolumeMessages)
    );
}

#[test]
fn a_hold_never_ends_by_itself_and_a_throttle_never_replaces_it() {
    let r = rules();
    let mut a = Account::new(r.clone());
    a.record(observe::trap_hit(T0), T0);
    let later = T0 + 30 * 24 * 3600;
    let t = a.tally(later);
    assert!(t.admit(&r, "alice@example.test", later).is_err());
    assert_eq!(t.escalation(&r, later), None);
}

#[test]
fn the_refusal_names_the_reason_and_where_to_ask() {
    let r = rules();
    let c = Contained::by_operator(T0);
    let text = crate::refusal_text(&c, &r, "alice@example.test");
    assert_eq!(
        text,
        "Sending from alice@example.test is on hold (the postmaster held it); see https://help.example.test/held"
    );
}

#[test]
fn spam_traps_match_addresses_and_whole_domains() {
    let traps = vec!["trap@bait.test".to_owned(), "@honeypot.test".to_owned()];
    assert!(crate::is_spam_trap(&traps, "TRAP@bait.test"));
    assert!(crate::is_spam_trap(&traps, "anyone@honeypot.test"));
    assert!(!crate::is_spam_trap(&traps, "other@bait.test"));
    assert!(!crate::is_spam_trap(&traps, "x@nothoneypot.test"));
}

#[test]
fn client_networks_are_slash_64_and_slash_24() {
    assert_eq!(
        crate::client_network("2001:db8:1:2:3::4".parse().unwrap()).to_string(),
        "2001:db8:1:2::/64"
    );
    assert_eq!(
        crate::client_network("192.0.2.77".parse().unwrap()).to_string(),
        "192.0.2.0/24"
    );
}

#[test]
fn pruning_keeps_what_some_window_still_reads() {
    let mut r = Record::default();
    r.apply(&observe::unknown_recipient(T0));
    r.apply(&observe::spam_strike("q", T0));
    r.apply(&observe::queued("q", &["a@x.test".into()], T0));
    r.prune(T0 + 2 * 3600, 14);
    let t = r.tally(T0 + 2 * 3600, 14);
    assert_eq!(t.sum(Counter::UnknownLocal), 0);
    assert_eq!(t.sum(Counter::Strikes), 1);
    assert_eq!(t.usual_messages, 1, "the history keeps its hour");
    assert_eq!(t.distinct_recipients, 0);
}

#[test]
fn p99_of_hours() {
    assert_eq!(crate::assess::p99(&[]), 0);
    let v: Vec<u64> = (1..=100).collect();
    assert_eq!(crate::assess::p99(&v), 99);
    assert_eq!(crate::assess::p99(&[5]), 5);
}

#[test]
fn webhook_signature_is_hmac_sha256_of_the_body() {
    // RFC 4231 test case 2.
    assert_eq!(
        sign(b"Jefe", b"what do ya want for nothing?"),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn alert_retries_back_off_to_five_minutes() {
    let d: Vec<u64> = (1..=10).map(|n| crate::retry_delay(n).as_secs()).collect();
    assert_eq!(d, [1, 2, 4, 8, 16, 32, 64, 128, 150, 150]);
}
