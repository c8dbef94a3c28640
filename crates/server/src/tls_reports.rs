//! SMTP TLS Reporting (RFC 8460) at the edge: the router tells us each
//! session held to an MTA-STS or DANE policy; we count it for `/metrics`
//! (`portcullis_tls_sessions_total{policy_domain,result}`) and for the
//! period's report, and every `[delivery] tls_rpt_interval_secs` (a day)
//! send each policy domain we delivered to its report: JSON, gzip,
//! DKIM-signed, to the `mailto:` of its `_smtp._tls` record (§5.3).
//! Domains we never delivered to get nothing; a domain without a record
//! gets nothing.

use crate::Context;
use base64::Engine as _;
use portcullis_config::clock::now_secs;
use portcullis_metrics::{Counter, Metrics};
use portcullis_queue::{Envelope, QueuedRecipient};
use portcullis_tlsrpt::{Counts, Failure, PolicyKey, Reporter};
use std::io::Write as _;
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
    let from_domain = from.rsplit_once('@').map_or("", |(_, d)| d).to_owned();
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
    let message = compose(
        &config.hostname,
        &from,
        &rua,
        domain,
        &id,
        &begin,
        &end,
        &json,
    )?;
    // §5.3: the report is DKIM-signed by the reporting domain.
    let keys = ctx.inbound.submission.dkim_keys();
    let signature = keys
        .sign(&from_domain, &message)
        .map_err(|e| e.to_string())?;
    if signature.is_empty() {
        return Err(format!(
            "no DKIM key for {from_domain} to sign the report with (dkim keygen --domain {from_domain})"
        ));
    }
    let mut data = signature.into_bytes();
    data.extend_from_slice(&message);
    let envelope = Envelope {
        id: id.clone(),
        sender: from.clone(),
        recipients: rua
            .iter()
            .map(|a| QueuedRecipient {
                address: a.clone(),
                ..Default::default()
            })
            .collect(),
        received_at: now_secs(),
        client_ip: "127.0.0.1".into(),
        helo: config.hostname.clone(),
        ..Default::default()
    };
    ctx.queue
        .enqueue(envelope, Arc::new(data))
        .await
        .map_err(|e| e.to_string())?;
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

/// §5.3: multipart/report; report-type="tlsrpt", the JSON gzip'd in an
/// application/tlsrpt+gzip part named submitter!domain!begin!end!id.
#[allow(clippy::too_many_arguments)]
fn compose(
    submitter: &str,
    from: &str,
    rua: &[String],
    domain: &str,
    id: &str,
    begin: &str,
    end: &str,
    json: &str,
) -> Result<Vec<u8>, String> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(json.as_bytes()).map_err(|e| e.to_string())?;
    let gz = gz.finish().map_err(|e| e.to_string())?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(gz);
    let body: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    let boundary = format!("tlsrpt-{id}");
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let text = format!(
        "From: <{from}>\r\nTo: {to}\r\nSubject: Report Domain: {domain} Submitter: {submitter} Report-ID: <{id}@{submitter}>\r\n\
         Date: {date}\r\nMessage-ID: <{id}.tlsrpt@{submitter}>\r\nTLS-Report-Domain: {domain}\r\n\
         TLS-Report-Submitter: {submitter}\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=\"tlsrpt\"; boundary=\"{boundary}\"\r\n\r\n\
         --{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         SMTP TLS report (RFC 8460) for {domain} from {submitter}, {begin} to {end}.\r\n\r\n\
         --{boundary}\r\nContent-Type: application/tlsrpt+gzip\r\nContent-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"{submitter}!{domain}!{begin}!{end}!{id}.json.gz\"\r\n\r\n\
         {body}\r\n--{boundary}--\r\n",
        to = rua
            .iter()
            .map(|a| format!("<{a}>"))
            .collect::<Vec<_>>()
            .join(", "),
        body = body.join("\r\n"),
    );
    Ok(text.into_bytes())
}
