//! SMTP TLS Reporting (RFC 8460) at the edge: the router tells us each
//! session held to an MTA-STS or DANE policy; we count it for `/metrics`
//! (`portcullis_tls_sessions_total{policy_domain,result}`) and for the
//! period's report, and every `[delivery] tls_rpt_interval_secs` (a day)
//! send each policy domain we delivered to its report: JSON, gzip,
//! DKIM-signed, to the `mailto:` of its `_smtp._tls` record (§5.3).
//! Domains we never delivered to get nothing; a domain without a record
//! gets nothing.

use crate::Context;
use crate::report_mail::ReportMail;
use portcullis_config::clock::now_secs;
use portcullis_metrics::{Counter, Metrics};
use portcullis_tlsrpt::{Counts, Failure, PolicyKey, Reporter};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{info, warn};

pub(crate) struct TlsReports {
    counts: Mutex<(u64, Counts)>,
    metrics: Arc<Metrics>,
}

impl TlsReports {
    pub(crate) fn new(metrics: Arc<Metrics>) -> TlsReports {
        TlsReports {
            counts: Mutex::new((now_secs(), Counts::default())),
            metrics,
        }
    }

    /// This period's sessions per policy, for the dashboard.
    pub(crate) fn snapshot(&self) -> serde_json::Value {
        let g = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let rows: Vec<serde_json::Value> =
            g.1.by_policy
                .iter()
                .map(|(k, c)| {
                    serde_json::json!({
                        "policy_domain": k.policy_domain,
                        "policy_type": k.policy_type,
                        "successful": c.successful,
                        "failed": c.failed,
                        "failures": c.failures.iter().map(|((why, mx), n)| serde_json::json!({
                            "result_type": why.name(), "mx": mx, "sessions": n,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
        serde_json::json!({ "since": g.0, "policies": rows })
    }

    /// The period so far, and a fresh one begun.
    fn take(&self) -> (u64, Counts) {
        let mut g = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *g, (now_secs(), Counts::default()))
    }
}

impl portcullis_delivery::TlsOutcomes for TlsReports {
    fn record(&self, policy: PolicyKey, mx: &str, outcome: Result<(), Failure>) {
        let result = match outcome {
            Ok(()) => "success",
            Err(f) => f.name(),
        };
        self.metrics.inc(
            Counter::TlsSessions,
            &[
                ("policy_domain", policy.policy_domain.as_str()),
                ("result", result),
            ],
        );
        let mut g = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(()) => g.1.success(policy, mx),
            Err(f) => g.1.failure(policy, mx, f),
        }
    }
}

/// Send the period's reports every `tls_rpt_interval_secs` (0: never).
pub(crate) async fn run(ctx: Arc<Context>) {
    let every = ctx.config().delivery.tls_rpt_interval_secs;
    let Some(resolver) = crate::periodic_resolver(&ctx, every, "tls reports") else {
        return;
    };
    loop {
        tokio::time::sleep(Duration::from_secs(every)).await;
        let (start, counts) = ctx.tls_reports.take();
        for domain in counts.domains() {
            if let Err(e) = send(&ctx, &resolver, &counts, &domain, start).await {
                warn!(event = "tls_report_failed", domain = %domain, error = %e);
            }
        }
    }
}

async fn send(
    ctx: &Context,
    resolver: &portcullis_dns::hickory_resolver::TokioResolver,
    counts: &Counts,
    domain: &str,
    start: u64,
) -> Result<(), String> {
    let rua = rua(resolver, domain)
        .await
        .ok_or("no TLS-RPT record with a mailto: rua")?;
    let config = ctx.config();
    let from = config.delivery.tls_rpt_from.clone().unwrap_or_else(|| {
        format!(
            "postmaster@{}",
            config
                .local_domains
                .first()
                .map_or("localhost", String::as_str)
        )
    });
    let id = ctx.queue.new_id();
    let (begin, end) = (
        portcullis_pipeline::trace::iso8601(start),
        portcullis_pipeline::trace::iso8601(now_secs()),
    );
    let who = Reporter {
        organization: &config.hostname,
        contact: &from,
        report_id: &id,
        start: &begin,
        end: &end,
    };
    let json = portcullis_tlsrpt::report_json(&who, counts, domain);
    let submitter = &config.hostname;
    // §5.3: multipart/report; report-type="tlsrpt", the JSON gzip'd in an
    // application/tlsrpt+gzip part named submitter!domain!begin!end!id,
    // DKIM-signed by the reporting domain.
    ReportMail {
        id: &id,
        from: &from,
        to: &rua,
        subject: format!(
            "Report Domain: {domain} Submitter: {submitter} Report-ID: <{id}@{submitter}>"
        ),
        extra_headers: format!(
            "TLS-Report-Domain: {domain}\r\nTLS-Report-Submitter: {submitter}\r\n"
        ),
        content_type: "multipart/report; report-type=\"tlsrpt\"",
        text: format!(
            "SMTP TLS report (RFC 8460) for {domain} from {submitter}, {begin} to {end}."
        ),
        attachment_type: "application/tlsrpt+gzip",
        filename: format!("{submitter}!{domain}!{begin}!{end}!{id}.json.gz"),
        payload: json.as_bytes(),
    }
    .send(ctx)
    .await?;
    info!(event = "tls_report_queued", id = %id, domain = %domain, to = %rua.join(","));
    Ok(())
}

/// The `mailto:` addresses of `_smtp._tls.DOMAIN`.
async fn rua(
    resolver: &portcullis_dns::hickory_resolver::TokioResolver,
    domain: &str,
) -> Option<Vec<String>> {
    let texts = portcullis_dns::txt_records(resolver, &format!("_smtp._tls.{domain}.")).await;
    texts
        .iter()
        .find_map(|t| portcullis_tlsrpt::mailto_rua(t).filter(|r| !r.is_empty()))
}
