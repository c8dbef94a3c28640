//! SMTP TLS Reporting (RFC 8460): the router tells us each session held
//! to an MTA-STS or DANE policy; we count it for `/metrics`
//! (`portcullis_tls_sessions_total{policy_domain,result}`) and for the
//! period's report (`period.rs`, saved in `DATA/tlsrpt/`), and every
//! `[delivery] tls_rpt_interval_secs` (a day, ending at 00:00 UTC) or on
//! `portcullis tls-reports send`, each policy domain we delivered to gets
//! its report: JSON, gzip, DKIM-signed, to the `mailto:` of its `_smtp._tls` record (§5.3).
//! Domains we never delivered to get nothing; a domain without a record
//! gets nothing.

use crate::mail::ReportMail;
use crate::period::{Answer, RunRequests, SavedPeriod, gather, run_periods};
use crate::{Outbox, periodic_resolver};
use portcullis_config::clock::{iso8601, now_secs};
use portcullis_dns::hickory_resolver::TokioResolver;
use portcullis_metrics::{Counter, Metrics};
use portcullis_tlsrpt::{Counts, Failure, PolicyKey, Reporter};
use std::path::Path;
use std::sync::Arc;
use tracing::{info, warn};

/// Sessions held to MTA-STS or DANE this period, saved in `DATA/tlsrpt`.
pub struct TlsReports {
    period: SavedPeriod<Counts>,
    metrics: Arc<Metrics>,
}

impl TlsReports {
    /// The store with the period saved last in `DATA/tlsrpt`.
    pub fn open(data_dir: &Path, metrics: Arc<Metrics>) -> std::io::Result<TlsReports> {
        Ok(TlsReports {
            period: SavedPeriod::open(&data_dir.join("tlsrpt"))?,
            metrics,
        })
    }

    /// Write the period so far (at stop, and every minute).
    pub fn save(&self) -> std::io::Result<()> {
        self.period.save()
    }

    /// This period's sessions per policy, for the dashboard.
    pub fn snapshot(&self) -> serde_json::Value {
        self.period.read(|since, counts| {
            let rows: Vec<serde_json::Value> = counts
                .by_policy
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
            serde_json::json!({ "since": since, "policies": rows })
        })
    }

    /// End a period every `[delivery] tls_rpt_interval_secs` on the
    /// boundary (0: never), or when asked (`Job::TlsReports`).
    pub async fn run(self: Arc<Self>, outbox: Outbox, asked: RunRequests) {
        let config = outbox.config.get();
        let every = config.delivery.tls_rpt_interval_secs;
        let Some(resolver) = periodic_resolver(&config, every, "tls reports") else {
            return;
        };
        let save = || self.save();
        run_periods(every, asked, save, "tlsrpt", |boundary| {
            send_period(&self, &outbox, &resolver, boundary)
        })
        .await;
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
        self.period.update(|c| match outcome {
            Ok(()) => c.success(policy, mx),
            Err(f) => c.failure(policy, mx, f),
        });
    }
}

/// End the period and send each policy domain its report; the answer
/// lists what was sent and what was not, and why.
async fn send_period(
    store: &TlsReports,
    outbox: &Outbox,
    resolver: &TokioResolver,
    boundary: Option<u64>,
) -> Answer {
    let (start, counts) = store.period.take().map_err(|e| e.to_string())?;
    let Some((start, counts)) = gather(&outbox.state, "tlsrpt", boundary, start, counts).await
    else {
        return Ok(serde_json::json!({ "begin": start, "sent_by": "another node" }));
    };
    let mut sent = Vec::new();
    let mut skipped = Vec::new();
    for domain in counts.domains() {
        match send(outbox, resolver, &counts, &domain, start).await {
            Ok(to) => sent.push(serde_json::json!({ "domain": domain, "to": to })),
            Err(why) => {
                warn!(event = "tls_report_failed", domain = %domain, error = %why);
                skipped.push(serde_json::json!({ "domain": domain, "reason": why }));
            }
        }
    }
    Ok(serde_json::json!({ "begin": start, "sent": sent, "skipped": skipped }))
}

async fn send(
    outbox: &Outbox,
    resolver: &TokioResolver,
    counts: &Counts,
    domain: &str,
    start: u64,
) -> Result<Vec<String>, String> {
    let rua = rua(resolver, domain)
        .await
        .ok_or("no TLS-RPT record with a mailto: rua")?;
    let config = outbox.config.get();
    let from = config.delivery.tls_rpt_from.clone().unwrap_or_else(|| {
        format!(
            "postmaster@{}",
            config
                .local_domains
                .first()
                .map_or("localhost", String::as_str)
        )
    });
    let id = outbox.queue.new_id();
    let (begin, end) = (iso8601(start), iso8601(now_secs()));
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
    .send(outbox)
    .await?;
    info!(event = "tls_report_queued", id = %id, domain = %domain, to = %rua.join(","));
    Ok(rua)
}

/// The `mailto:` addresses of `_smtp._tls.DOMAIN`.
async fn rua(resolver: &TokioResolver, domain: &str) -> Option<Vec<String>> {
    let texts = portcullis_dns::txt_records(resolver, &format!("_smtp._tls.{domain}.")).await;
    texts
        .iter()
        .find_map(|t| portcullis_tlsrpt::mailto_rua(t).filter(|r| !r.is_empty()))
}
