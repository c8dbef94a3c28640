use super::*;

#[test]
fn escalation_decisions_are_counted_by_result_and_kept_newest_first() {
    let m = Metrics::default();
    let d = |prefix: &str, result| EscalationDecision {
        at: 100,
        prefix: prefix.into(),
        result,
        children: 16,
    };
    m.escalation(d("2001:db8:1::/56", "blocked"));
    m.escalation(d("2001:db8:2::/56", "exempt_known"));
    m.escalation(d("192.0.2.0/24", "blocked"));
    let text = m.render(&[]);
    assert!(
        text.contains("portcullis_escalations_total{prefix=\"56\",result=\"blocked\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("portcullis_escalations_total{prefix=\"24\",result=\"blocked\"} 1\n"));
    assert_eq!(m.escalation_counts()["blocked"], 2);
    assert_eq!(m.escalation_counts()["exempt_known"], 1);
    assert_eq!(m.escalations()[0].prefix, "192.0.2.0/24");
}

#[test]
fn a_histogram_renders_cumulative_buckets_sum_and_count() {
    let m = Metrics::default();
    let l = [("milter", "clamav")];
    m.observe(
        Histogram::MilterLatency,
        &l,
        std::time::Duration::from_millis(2),
    );
    m.observe(
        Histogram::MilterLatency,
        &l,
        std::time::Duration::from_secs(9),
    );
    let text = m.render(&[]);
    let name = "portcullis_milter_latency_seconds";
    assert!(
        text.contains(&format!("# TYPE {name} histogram\n")),
        "{text}"
    );
    assert!(text.contains(&format!(
        "{name}_bucket{{milter=\"clamav\",le=\"0.001\"}} 0\n"
    )));
    assert!(text.contains(&format!(
        "{name}_bucket{{milter=\"clamav\",le=\"0.0025\"}} 1\n"
    )));
    assert!(text.contains(&format!("{name}_bucket{{milter=\"clamav\",le=\"5\"}} 1\n")));
    assert!(text.contains(&format!(
        "{name}_bucket{{milter=\"clamav\",le=\"+Inf\"}} 2\n"
    )));
    assert!(text.contains(&format!("{name}_count{{milter=\"clamav\"}} 2\n")));
}

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
