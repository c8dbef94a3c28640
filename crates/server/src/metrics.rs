//! Counters in the Prometheus text exposition format, served at
//! `/metrics`. A small registry of named counters with labels: enough for
//! what the server counts today (connections, messages, authentication,
//! quotas, authentication results) without pulling in a metrics framework.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Name, help text and labels of every counter, so `/metrics` documents
/// itself and a typo in a name is a compile error at the call site.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Counter {
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
        }
    }
}

/// A counter and its label values.
type Series = (Counter, Vec<(&'static str, String)>);

#[derive(Default)]
pub(crate) struct Metrics {
    values: Mutex<BTreeMap<Series, u64>>,
}

impl Metrics {
    pub(crate) fn inc(&self, c: Counter, labels: &[(&'static str, &str)]) {
        let key = (
            c,
            labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        );
        if let Ok(mut m) = self.values.lock() {
            *m.entry(key).or_insert(0) += 1;
        }
    }

    /// The text exposition format (version 0.0.4).
    pub(crate) fn render(&self, gauges: &[(&str, &str, u64)]) -> String {
        let mut out = String::new();
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

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_labels_and_gauges() {
        let m = Metrics::default();
        m.inc(Counter::AuthAttempts, &[("result", "failed")]);
        m.inc(Counter::AuthAttempts, &[("result", "failed")]);
        m.inc(Counter::AuthAttempts, &[("result", "ok")]);
        let text = m.render(&[("portcullis_queue_messages", "Messages in the spool.", 3)]);
        assert!(text.contains("# TYPE portcullis_auth_attempts_total counter\n"));
        assert!(text.contains("portcullis_auth_attempts_total{result=\"failed\"} 2\n"));
        assert!(text.contains("portcullis_auth_attempts_total{result=\"ok\"} 1\n"));
        assert!(text.contains("portcullis_queue_messages 3\n"));
        assert_eq!(
            text.matches("# HELP portcullis_auth_attempts_total")
                .count(),
            1
        );
    }
}
