//! DMARC aggregate reports (RFC 7489 §7.2): each accepted message's
//! observation is counted into the period (`period.rs`, saved in
//! `DATA/dmarc/`); every `[dmarc]
//! report_interval_secs` (a day), or when the operator runs `portcullis
//! dmarc-reports send`, the period ends and each domain
//! `portcullis_dmarcrpt::plan` allows gets its report: XML, gzip'd,
//! DKIM-signed, to the `rua` destinations that pass the §7.1 check.
//! Which domains get one, and how often, is the plain logic's decision.
//! The ledger of reports sent (`ledger.json`) outlives restarts.

use crate::mail::ReportMail;
use crate::period::{Answer, RunRequests, SavedPeriod, gather, run_periods};
use crate::{Outbox, periodic_resolver};
use portcullis_config::clock::now_secs;
use portcullis_dmarcrpt::{Destination, DomainPeriod, Ledger, Period, Reporter};
use portcullis_dns::hickory_resolver::TokioResolver;
use std::path::Path;
use std::sync::Arc;
use tracing::{info, warn};

/// The period's observations, and the ledger of reports sent.
pub struct DmarcReports {
    period: SavedPeriod<Period>,
}

impl DmarcReports {
    /// The store with the period saved last in `DATA/dmarc`.
    pub fn open(data_dir: &Path) -> std::io::Result<DmarcReports> {
        Ok(DmarcReports {
            period: SavedPeriod::open(&data_dir.join("dmarc"))?,
        })
    }

    /// Write the period so far (at stop, and every minute).
    pub fn save(&self) -> std::io::Result<()> {
        self.period.save()
    }

    fn ledger(&self) -> Ledger {
        std::fs::read(self.period.dir().join("ledger.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save_ledger(&self, ledger: &Ledger) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(ledger).map_err(std::io::Error::other)?;
        portcullis_state::write_atomically(&self.period.dir().join("ledger.json"), &bytes)
    }

    /// End a period every `report_interval_secs`, or when asked
    /// (`Job::DmarcReports`).
    pub async fn run(self: Arc<Self>, outbox: Outbox, asked: RunRequests) {
        let config = outbox.config.get();
        let every = config.dmarc.report_interval_secs;
        let resolver = periodic_resolver(&config, every, "dmarc reports");
        let (Some(resolver), true) = (resolver, config.dmarc.send_reports) else {
            return;
        };
        let psl = match portcullis_authn::SuffixList::for_config(&config) {
            Ok(p) => p,
            Err(e) => return warn!(event = "periodic_task_off", task = "dmarc reports", error = %e),
        };
        let save = || self.save();
        run_periods(every, asked, save, "dmarc", |boundary| {
            send_period(&self, &outbox, &resolver, &psl, boundary)
        })
        .await;
    }
}

impl portcullis_pipeline::DmarcObservations for DmarcReports {
    fn observe(&self, o: &portcullis_dmarcrpt::Observation) {
        self.period.update(|p| p.add(o));
    }
}

/// End the period and send what the plan allows; the answer lists what
/// was sent and what was not, and why.
async fn send_period(
    store: &DmarcReports,
    outbox: &Outbox,
    resolver: &TokioResolver,
    psl: &portcullis_authn::SuffixList,
    boundary: Option<u64>,
) -> Answer {
    let (begin, period) = store.period.take().map_err(|e| e.to_string())?;
    let Some((begin, period)) = gather(&outbox.state, "dmarc", boundary, begin, period).await
    else {
        return Ok(serde_json::json!({ "begin": begin, "sent_by": "another node" }));
    };
    let config = outbox.config.get();
    let day = now_secs() / 86_400;
    let mut ledger = store.ledger();
    let s = &config.dmarc;
    let plan =
        portcullis_dmarcrpt::plan(&period, &s.report_exclude, s.report_daily_cap, &ledger, day);
    let mut skipped: Vec<serde_json::Value> = plan
        .skipped
        .iter()
        .map(|(domain, why)| serde_json::json!({ "domain": domain, "reason": why }))
        .collect();
    let mut sent = Vec::new();
    for domain in &plan.send {
        let org = |d: &str| psl.organizational_domain(d).unwrap_or_else(|| d.to_owned());
        match send_one(
            outbox,
            resolver,
            domain,
            &period.domains[domain],
            begin,
            org,
        )
        .await
        {
            Ok(to) => {
                info!(event = "dmarc_report_queued", domain = %domain, to = %to.join(","));
                ledger.sent(domain, day);
                sent.push(serde_json::json!({ "domain": domain, "to": to }));
            }
            Err(why) => {
                warn!(event = "dmarc_report_not_sent", domain = %domain, reason = %why);
                skipped.push(serde_json::json!({ "domain": domain, "reason": why }));
            }
        }
    }
    store.save_ledger(&ledger).map_err(|e| e.to_string())?;
    Ok(serde_json::json!({
        "begin": begin,
        "sent": sent,
        "skipped": skipped,
        "dropped_observations": period.dropped,
    }))
}

/// One domain's report to the destinations that take it; the addresses
/// it went to.
async fn send_one(
    outbox: &Outbox,
    resolver: &TokioResolver,
    domain: &str,
    period: &DomainPeriod,
    begin: u64,
    org: impl Fn(&str) -> String,
) -> Result<Vec<String>, String> {
    let config = outbox.config.get();
    let from = report_from(&config);
    let org_name = config
        .dmarc
        .report_org_name
        .as_deref()
        .unwrap_or(&config.hostname);
    let id = outbox.queue.new_id();
    let end = now_secs();
    let who = Reporter {
        org_name,
        email: &from,
        report_id: &id,
        begin,
        end,
    };
    let xml = portcullis_dmarcrpt::xml(&who, period);
    let rua = period
        .published
        .as_ref()
        .map(|p| p.rua.as_slice())
        .unwrap_or_default();
    let mut to = Vec::new();
    for dest in rua.iter().filter_map(|u| Destination::parse(u)) {
        if accepts(resolver, &dest, domain, &org, xml.len()).await {
            to.push(dest.address);
        }
    }
    if to.is_empty() {
        return Err(
            "no rua destination accepts the report (RFC 7489 §7.1 check or size limit)".into(),
        );
    }
    let receiver = &config.hostname;
    ReportMail {
        id: &id,
        from: &from,
        to: &to,
        subject: format!("Report Domain: {domain} Submitter: {org_name} Report-ID: <{id}>"),
        extra_headers: String::new(),
        content_type: "multipart/mixed",
        text: format!("DMARC aggregate report (RFC 7489) for {domain} from {org_name}."),
        attachment_type: "application/gzip",
        // §7.2.1.1: receiver "!" policy-domain "!" begin "!" end.
        filename: format!("{receiver}!{domain}!{begin}!{end}.xml.gz"),
        payload: xml.as_bytes(),
    }
    .send(outbox)
    .await?;
    Ok(to)
}

/// §7.1: a destination outside the domain must say it takes reports for
/// it; §6.2: a size limit the report exceeds (compressed, it is smaller
/// still, so the XML length errs on the safe side) rules it out.
async fn accepts(
    resolver: &TokioResolver,
    dest: &Destination,
    domain: &str,
    org: &impl Fn(&str) -> String,
    size: usize,
) -> bool {
    if dest.max_size.is_some_and(|max| max < size as u64) {
        info!(event = "dmarc_rua_too_small", domain = %domain, to = %dest.address);
        return false;
    }
    let Some(name) = dest.external_check(domain, org) else {
        return true;
    };
    let txts = portcullis_dns::txt_records(resolver, &format!("{name}.")).await;
    let ok = portcullis_dmarcrpt::confirms_external(&txts);
    if !ok {
        info!(event = "dmarc_rua_unconfirmed", domain = %domain, to = %dest.address, check = %name);
    }
    ok
}

/// `[dmarc] report_from`, else `noreply-dmarc@` the first local domain.
fn report_from(config: &portcullis_config::Config) -> String {
    config.dmarc.report_from.clone().unwrap_or_else(|| {
        let domain = config.local_domains.first().unwrap_or(&config.hostname);
        format!("noreply-dmarc@{domain}")
    })
}
