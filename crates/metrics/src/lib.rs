//! Counters in the Prometheus text exposition format, served at
//! `/metrics`. A small registry of named counters with labels: enough for
//! what the server counts (connections, messages, authentication, quotas,
//! authentication results, admission, delivery) without pulling in a
//! metrics framework.
//!
//! One `Metrics` is made by `serve` and handed to every room that counts;
//! this crate does no I/O and reads no clock (callers pass `now`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Name, help text and labels of every counter, so `/metrics` documents
/// itself and a typo in a name is a compile error at the call site.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Counter {
    Connections,
    MessagesAccepted,
    MessagesRejected,
    AuthAttempts,
    QuotaDeferrals,
    AuthResults,
    Admissions,
    Deferrals,
    ReputationChanges,
    Verdicts,
    DnsChecks,
    DnsCheckMicros,
    DeliveryAttempts,
    Escalations,
    Greylisted,
    PolicyRequests,
    TlsSessions,
    ReportsReceived,
    AcmeOrders,
    RepeatBlocks,
    KernelDrops,
    ContainmentSignals,
    ContainmentActions,
    MilterRequests,
    MilterAnswers,
    MilterFailures,
    MilterMessages,
    DeliveryReplies,
    DeliveryConnectionsOpened,
    DeliveryConnectionsReused,
    DeliveryConnectionsStale,
    SiteLedgerFallbacks,
}

impl Counter {
    fn name(self) -> &'static str {
        match self {
            Counter::Connections => "portcullis_connections_total",
            Counter::MessagesAccepted => "portcullis_messages_accepted_total",
            Counter::MessagesRejected => "portcullis_messages_rejected_total",
            Counter::AuthAttempts => "portcullis_auth_attempts_total",
            Counter::QuotaDeferrals => "portcullis_quota_deferrals_total",
            Counter::AuthResults => "portcullis_authentication_results_total",
            Counter::Admissions => "portcullis_class_admissions_total",
            Counter::Deferrals => "portcullis_class_deferrals_total",
            Counter::ReputationChanges => "portcullis_reputation_changes_total",
            Counter::Verdicts => "portcullis_verdicts_total",
            Counter::DnsChecks => "portcullis_dns_checks_total",
            Counter::DeliveryAttempts => "portcullis_delivery_attempts_total",
            Counter::DnsCheckMicros => "portcullis_dns_check_microseconds_total",
            Counter::Escalations => "portcullis_escalations_total",
            Counter::Greylisted => "portcullis_greylisted_total",
            Counter::PolicyRequests => "portcullis_policy_requests_total",
            Counter::TlsSessions => "portcullis_tls_sessions_total",
            Counter::ReportsReceived => "portcullis_reports_received_total",
            Counter::AcmeOrders => "portcullis_acme_orders_total",
            Counter::RepeatBlocks => "portcullis_repeat_blocks_total",
            Counter::KernelDrops => "portcullis_kernel_dropped_packets_total",
            Counter::ContainmentSignals => "portcullis_containment_signals_total",
            Counter::ContainmentActions => "portcullis_containment_actions_total",
            Counter::MilterRequests => "portcullis_milter_requests_total",
            Counter::MilterAnswers => "portcullis_milter_answers_total",
            Counter::MilterFailures => "portcullis_milter_failures_total",
            Counter::MilterMessages => "portcullis_milter_messages_total",
            Counter::DeliveryReplies => "portcullis_delivery_replies_total",
            Counter::DeliveryConnectionsOpened => "portcullis_delivery_connections_opened_total",
            Counter::DeliveryConnectionsReused => "portcullis_delivery_connections_reused_total",
            Counter::DeliveryConnectionsStale => "portcullis_delivery_connections_stale_total",
            Counter::SiteLedgerFallbacks => "portcullis_site_ledger_fallbacks_total",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Counter::Connections => "SMTP connections by listener and outcome.",
            Counter::MessagesAccepted => "Messages answered 250 after DATA, by listener.",
            Counter::MessagesRejected => {
                "Replies refusing a command or message, by listener and enhanced code."
            }
            Counter::AuthAttempts => {
                "SMTP AUTH attempts by result (ok, failed, locked, too_many_sessions)."
            }
            Counter::QuotaDeferrals => "Submission quota deferrals by kind (recipients, messages).",
            Counter::AuthResults => "SPF/DKIM/DMARC results of inbound mail.",
            Counter::Admissions => "Port-25 connections admitted, by class of service.",
            Counter::Deferrals => {
                "Class-of-service deferrals and refusals, by class, limit and stage."
            }
            Counter::ReputationChanges => "Reputation level changes (promoted, demoted).",
            Counter::Verdicts => "Spam verdicts counted into reputation, by source and verdict.",
            Counter::DeliveryAttempts => {
                "Delivery outcomes per recipient (delivered, bounced) and deferred attempts."
            }
            Counter::DnsChecks => {
                "DNS-backed checks made (iprev, spf, message: DKIM/ARC/DMARC, lists)."
            }
            Counter::DnsCheckMicros => {
                "Time spent in DNS-backed checks, microseconds; divide by the count for the mean."
            }
            Counter::Greylisted => "Recipients deferred by greylisting (the default pool only).",
            Counter::TlsSessions => {
                "Outbound sessions held to an MTA-STS or DANE policy, by policy domain and result (RFC 8460 result types; success)."
            }
            Counter::ReportsReceived => {
                "Messages to [dmarc] report_mailbox, by kind (dmarc, tls, unknown) and result (stored, malformed)."
            }
            Counter::AcmeOrders => {
                "ACME certificate orders by result (issued, failed); a failed one keeps the certificate in use."
            }
            Counter::PolicyRequests => {
                "Postfix policy requests by protocol state and answer (dunno, defer, reject, prepend, malformed, timeout)."
            }
            Counter::Escalations => {
                "Escalation decisions on a wider prefix whose ranges were blocked or refused, by result (blocked, exempt_known, exempt_allocation, exempt_domain, exempt_authenticated) and prefix length."
            }
            Counter::RepeatBlocks => {
                "Ranges blocked briefly for coming back at once, again and again, while their pool was full."
            }
            Counter::KernelDrops => {
                "Packets from blocked ranges the kernel dropped before accept (the nftables table's counters, read every 10 s), by family."
            }
            Counter::ContainmentSignals => {
                "Abuse signals observed for submitting accounts, by signal (unknown_recipient, unknown_remote, bounce, spam_strike, spam_trap, complaint)."
            }
            Counter::ContainmentActions => {
                "Containment of accounts, by action (throttle, hold, release, deferred) and signal."
            }
            Counter::MilterRequests => {
                "Milter commands that wait for an answer, by milter and step."
            }
            Counter::MilterAnswers => {
                "Milter answers by milter and kind (continue, accept, reject, tempfail, discard, replycode, quarantine, progress, skip and each modification)."
            }
            Counter::MilterMessages => {
                "Messages accepted but not delivered because a milter said so, by outcome (discarded, quarantined: held in the queue)."
            }
            Counter::MilterFailures => {
                "Milters that could not be used, by milter and reason (connect, timeout, protocol, busy)."
            }
            Counter::DeliveryConnectionsOpened => {
                "Outbound SMTP sessions opened for a transaction (after TLS and EHLO)."
            }
            Counter::DeliveryConnectionsReused => {
                "Outbound transactions carried over a session kept from an earlier one ([delivery] connection_cache_secs)."
            }
            Counter::DeliveryConnectionsStale => {
                "Kept outbound sessions found closed by the receiver or refusing RSET, replaced by a new connection."
            }
            Counter::DeliveryReplies => {
                "Recipients not delivered in an attempt, by reply class (rate_limited, reputation_block, auth_required, tls_required, mailbox_unknown, mailbox_full, spam_refused, network, other) and result (deferred, failed)."
            }
            Counter::SiteLedgerFallbacks => {
                "Outbound site decisions taken on this node's state alone because the ledger shared with the other nodes (Redis) did not answer, by operation (take, pause)."
            }
        }
    }
}

/// A counter and its label values.
type Series = (Counter, Vec<(&'static str, String)>);

/// Latency histograms, one per name and label set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Histogram {
    MilterLatency,
}

impl Histogram {
    fn name(self) -> &'static str {
        match self {
            Histogram::MilterLatency => "portcullis_milter_latency_seconds",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Histogram::MilterLatency => {
                "Time from a milter command to its final answer, by milter."
            }
        }
    }

    /// Upper bounds of the buckets, in seconds.
    const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0];
}

/// One histogram's counts: per bucket (not cumulative), the sum, the count.
#[derive(Default)]
struct Buckets {
    counts: [u64; Histogram::BUCKETS.len()],
    sum: f64,
    count: u64,
}

type HistogramSeries = (Histogram, Vec<(&'static str, String)>);

#[derive(Default)]
pub struct Metrics {
    values: Mutex<BTreeMap<Series, u64>>,
    histograms: Mutex<BTreeMap<HistogramSeries, Buckets>>,
    /// Per-minute outcomes for the dashboard's chart (the last hour).
    minutes: Mutex<std::collections::VecDeque<Minute>>,
    /// The latest failed AUTH attempts, for the dashboard.
    auth_failures: Mutex<std::collections::VecDeque<AuthFailure>>,
    /// The latest escalation decisions, for the dashboard.
    escalations: Mutex<std::collections::VecDeque<EscalationDecision>>,
}

/// What one minute brought: messages accepted, deliveries deferred (to be
/// retried), and replies refusing a command or message (4xx and 5xx).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Minute {
    pub at: u64,
    pub accepted: u64,
    pub deferred: u64,
    pub rejected: u64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct AuthFailure {
    pub at: u64,
    pub client: String,
    pub account: String,
}

/// One escalation decision: a prefix blocked, or left alone and why.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EscalationDecision {
    pub at: u64,
    pub prefix: String,
    /// `blocked` or `exempt_…` (the counter's `result` label).
    pub result: &'static str,
    /// Distinct ranges inside it that were blocked or refused.
    pub children: usize,
}

#[derive(Clone, Copy)]
pub enum Outcome {
    Accepted,
    Deferred,
    Rejected,
}

const MINUTES_KEPT: usize = 60;
const AUTH_FAILURES_KEPT: usize = 50;
const ESCALATIONS_KEPT: usize = 50;

impl Metrics {
    /// Count an outcome in the current minute (`now` in seconds).
    pub fn outcome(&self, o: Outcome, now: u64) {
        let Ok(mut m) = self.minutes.lock() else {
            return;
        };
        let at = now - now % 60;
        if m.back().is_none_or(|b| b.at != at) {
            m.push_back(Minute {
                at,
                ..Minute::default()
            });
            while m.len() > MINUTES_KEPT {
                m.pop_front();
            }
        }
        if let Some(b) = m.back_mut() {
            match o {
                Outcome::Accepted => b.accepted += 1,
                Outcome::Deferred => b.deferred += 1,
                Outcome::Rejected => b.rejected += 1,
            }
        }
    }

    /// The last hour, one entry per minute, minutes without traffic too.
    pub fn minutes(&self, now: u64) -> Vec<Minute> {
        let held: Vec<Minute> = self
            .minutes
            .lock()
            .map(|m| m.iter().copied().collect())
            .unwrap_or_default();
        let last = now - now % 60;
        (0..MINUTES_KEPT as u64)
            .rev()
            .map(|i| last.saturating_sub(i * 60))
            .map(|at| {
                held.iter().find(|m| m.at == at).copied().unwrap_or(Minute {
                    at,
                    ..Minute::default()
                })
            })
            .collect()
    }

    pub fn auth_failure(&self, client: String, account: String, now: u64) {
        if let Ok(mut f) = self.auth_failures.lock() {
            f.push_back(AuthFailure {
                at: now,
                client,
                account,
            });
            while f.len() > AUTH_FAILURES_KEPT {
                f.pop_front();
            }
        }
    }

    pub fn auth_failures(&self) -> Vec<AuthFailure> {
        self.auth_failures
            .lock()
            .map(|f| f.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    /// An escalation decision: counted by result and prefix length, and
    /// kept among the latest for the dashboard.
    pub fn escalation(&self, d: EscalationDecision) {
        let len = d.prefix.rsplit('/').next().unwrap_or("").to_owned();
        self.inc(
            Counter::Escalations,
            &[("prefix", &len), ("result", d.result)],
        );
        if let Ok(mut e) = self.escalations.lock() {
            e.push_back(d);
            while e.len() > ESCALATIONS_KEPT {
                e.pop_front();
            }
        }
    }

    /// The latest escalation decisions, newest first.
    pub fn escalations(&self) -> Vec<EscalationDecision> {
        self.escalations
            .lock()
            .map(|e| e.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    /// Escalation decisions since start, by result.
    pub fn escalation_counts(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        if let Ok(m) = self.values.lock() {
            for ((c, labels), v) in m.iter() {
                if *c != Counter::Escalations {
                    continue;
                }
                if let Some((_, r)) = labels.iter().find(|(k, _)| *k == "result") {
                    *out.entry(r.clone()).or_insert(0) += v;
                }
            }
        }
        out
    }

    pub fn inc(&self, c: Counter, labels: &[(&'static str, &str)]) {
        self.add(c, labels, 1);
    }

    pub fn add(&self, c: Counter, labels: &[(&'static str, &str)], v: u64) {
        let key = (
            c,
            labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        );
        if let Ok(mut m) = self.values.lock() {
            *m.entry(key).or_insert(0) += v;
        }
    }

    /// How long a DNS-backed check took: a count and a sum, so that
    /// `rate(sum) / rate(count)` is the mean latency.
    pub fn dns_check(&self, check: &'static str, took: std::time::Duration) {
        self.inc(Counter::DnsChecks, &[("check", check)]);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.add(Counter::DnsCheckMicros, &[("check", check)], micros);
    }

    /// One observation of a histogram.
    pub fn observe(
        &self,
        h: Histogram,
        labels: &[(&'static str, &str)],
        took: std::time::Duration,
    ) {
        let key = (
            h,
            labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        );
        let secs = took.as_secs_f64();
        if let Ok(mut m) = self.histograms.lock() {
            let b = m.entry(key).or_default();
            if let Some(i) = Histogram::BUCKETS.iter().position(|le| secs <= *le) {
                b.counts[i] += 1;
            }
            b.sum += secs;
            b.count += 1;
        }
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self, gauges: &[(&str, &str, u64)]) -> String {
        let mut out = String::new();
        self.render_histograms(&mut out);
        let Ok(m) = self.values.lock() else {
            return out;
        };
        let mut last = None;
        for ((c, labels), v) in m.iter() {
            if last != Some(*c) {
                let _ = writeln!(
                    out,
                    "# HELP {} {}\n# TYPE {} counter",
                    c.name(),
                    c.help(),
                    c.name()
                );
                last = Some(*c);
            }
            let l: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = writeln!(out, "{}{{{}}} {v}", c.name(), l.join(","));
        }
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}

/// One milter's figures since start, for the dashboard.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct MilterSummary {
    pub requests: u64,
    /// Answers by kind (continue, accept, reject, ...).
    pub answers: BTreeMap<String, u64>,
    pub failures: u64,
    /// Mean time to a final answer, milliseconds.
    pub mean_latency_ms: f64,
}

impl Metrics {
    /// Per milter: requests, answers by kind, failures, mean latency.
    pub fn milter_summary(&self) -> BTreeMap<String, MilterSummary> {
        let mut out: BTreeMap<String, MilterSummary> = BTreeMap::new();
        let label = |labels: &[(&'static str, String)], k: &str| {
            labels
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        if let Ok(m) = self.values.lock() {
            for ((c, labels), v) in m.iter() {
                let entry = || label(labels, "milter");
                match c {
                    Counter::MilterRequests => out.entry(entry()).or_default().requests += v,
                    Counter::MilterFailures => out.entry(entry()).or_default().failures += v,
                    Counter::MilterAnswers => {
                        let s = out.entry(entry()).or_default();
                        *s.answers.entry(label(labels, "kind")).or_default() += v;
                    }
                    _ => {}
                }
            }
        }
        if let Ok(h) = self.histograms.lock() {
            for ((kind, labels), b) in h.iter() {
                if *kind == Histogram::MilterLatency && b.count > 0 {
                    let s = out.entry(label(labels, "milter")).or_default();
                    s.mean_latency_ms = b.sum * 1000.0 / b.count as f64;
                }
            }
        }
        out
    }

    fn render_histograms(&self, out: &mut String) {
        let Ok(m) = self.histograms.lock() else {
            return;
        };
        let mut last = None;
        for ((h, labels), b) in m.iter() {
            if last != Some(*h) {
                let name = h.name();
                let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} histogram", h.help());
                last = Some(*h);
            }
            let l: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\",", escape(v)))
                .collect();
            let l = l.concat();
            let mut cumulative = 0;
            for (le, n) in Histogram::BUCKETS.iter().zip(b.counts) {
                cumulative += n;
                let _ = writeln!(out, "{}_bucket{{{l}le=\"{le}\"}} {cumulative}", h.name());
            }
            let _ = writeln!(out, "{}_bucket{{{l}le=\"+Inf\"}} {}", h.name(), b.count);
            let bare = l.trim_end_matches(',');
            let _ = writeln!(out, "{}_sum{{{bare}}} {}", h.name(), b.sum);
            let _ = writeln!(out, "{}_count{{{bare}}} {}", h.name(), b.count);
        }
    }
}

/// One gauge with labels, one line per series, in the exposition format
/// (for values another room keeps, such as the outbound sites').
pub fn labeled_gauge(name: &str, help: &str, series: &[(Vec<(&str, String)>, u64)]) -> String {
    let mut out = format!("# HELP {name} {help}\n# TYPE {name} gauge\n");
    for (labels, v) in series {
        let l: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let _ = writeln!(out, "{name}{{{}}} {v}", l.join(","));
    }
    out
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests;
