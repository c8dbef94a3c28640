//! DMARC aggregate reports (RFC 7489 §7.2) at the edge: each accepted
//! message's observation is counted into the period in memory, saved to
//! `DATA/dmarc/period.json` every minute (a crash loses at most that
//! minute of report rows, never mail); every `[dmarc]
//! report_interval_secs` (a day), or when the operator runs `portcullis
//! dmarc-reports send`, the period ends and each domain
//! `portcullis_dmarcrpt::plan` allows gets its report: XML, gzip'd,
//! DKIM-signed, to the `rua` destinations that pass the §7.1 check.
//! Which domains get one, and how often, is the plain logic's decision.
//! The ledger of reports sent (`ledger.json`) outlives restarts.

use crate::Context;
use crate::report_mail::ReportMail;
use portcullis_config::clock::now_secs;
use portcullis_dmarcrpt::{Destination, DomainPeriod, Ledger, Period, Reporter};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

type Answer = Result<serde_json::Value, String>;

/// Requests to end the period now (`Job::DmarcReports`), each with where
/// to send the answer.
pub(crate) type RunRequests = mpsc::Receiver<oneshot::Sender<Answer>>;

/// The period so far, as saved: when it began and its rows.
#[derive(Default, Serialize, Deserialize)]
struct Saved {
    since: u64,
    period: Period,
}

/// The period's observations, and the way to end a period now.
pub(crate) struct DmarcStore {
    dir: PathBuf,
    current: Mutex<Saved>,
}

impl DmarcStore {
    /// The store with the period saved last.
    pub(crate) fn open(data_dir: &Path) -> std::io::Result<DmarcStore> {
        let dir = data_dir.join("dmarc");
        std::fs::create_dir_all(&dir)?;
        let saved = std::fs::read(dir.join("period.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Saved>(&b).ok())
            .unwrap_or(Saved {
                since: now_secs(),
                period: Period::default(),
            });
        Ok(DmarcStore {
            dir,
            current: Mutex::new(saved),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Saved> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Write the period so far (atomically: a crash leaves the old or
    /// the new file, never half of one).
    pub(crate) fn save(&self) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(&*self.lock()).map_err(std::io::Error::other)?;
        portcullis_state::write_atomically(&self.dir.join("period.json"), &bytes)
    }

    /// End the period: its start and its rows; a new one begins.
    fn take_period(&self) -> std::io::Result<(u64, Period)> {
        let fresh = Saved {
            since: now_secs(),
            period: Period::default(),
        };
        let old = std::mem::replace(&mut *self.lock(), fresh);
        self.save()?;
        Ok((old.since, old.period))
    }

    fn ledger(&self) -> Ledger {
        std::fs::read(self.dir.join("ledger.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save_ledger(&self, ledger: &Ledger) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(ledger).map_err(std::io::Error::other)?;
        portcullis_state::write_atomically(&self.dir.join("ledger.json"), &bytes)
    }
}

impl portcullis_pipeline::DmarcObservations for DmarcStore {
    fn observe(&self, o: &portcullis_dmarcrpt::Observation) {
        self.lock().period.add(o);
    }
}

/// End a period every `report_interval_secs`, or when asked.
pub(crate) async fn run(ctx: Arc<Context>, mut asked: RunRequests) {
    let every = ctx.config().dmarc.report_interval_secs;
    let sending = ctx.config().dmarc.send_reports;
    let resolver = crate::periodic_resolver(&ctx, every, "dmarc reports");
    let (Some(resolver), true) = (resolver, sending) else {
        return;
    };
    let psl = match crate::suffix_list(&ctx.config()) {
        Ok(p) => p,
        Err(e) => return warn!(event = "periodic_task_off", task = "dmarc reports", error = %e),
    };
    // §7.2: "Report generators SHOULD ... adhere to hour boundaries":
    // periods end on multiples of the interval since the epoch (a daily
    // report at 00:00 UTC).
    let to_boundary = every - now_secs() % every;
    let first = tokio::time::Instant::now() + Duration::from_secs(to_boundary);
    let mut tick = tokio::time::interval_at(first, Duration::from_secs(every));
    let mut save = tokio::time::interval(Duration::from_secs(60));
    loop {
        let reply = tokio::select! {
            _ = tick.tick() => None,
            Some(r) = asked.recv() => Some(r),
            _ = save.tick() => {
                if let Err(e) = ctx.dmarc.save() {
                    warn!(event = "dmarc_period_save_failed", error = %e);
                }
                continue;
            }
        };
        let answer = send_period(&ctx, &resolver, &psl).await;
        if let Err(e) = &answer {
            warn!(event = "dmarc_reports_failed", error = %e);
        }
        if let Some(r) = reply {
            let _ = r.send(answer);
        }
    }
}

/// End the period and send what the plan allows; the answer lists what
/// was sent and what was not, and why.
async fn send_period(
    ctx: &Context,
    resolver: &portcullis_dns::hickory_resolver::TokioResolver,
    psl: &portcullis_authn::SuffixList,
) -> Answer {
    let store = &ctx.dmarc;
    let (begin, period) = store.take_period().map_err(|e| e.to_string())?;
    let config = ctx.config();
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
        match send_one(ctx, resolver, domain, &period.domains[domain], begin, org).await {
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
    ctx: &Context,
    resolver: &portcullis_dns::hickory_resolver::TokioResolver,
    domain: &str,
    period: &DomainPeriod,
    begin: u64,
    org: impl Fn(&str) -> String,
) -> Result<Vec<String>, String> {
    let config = ctx.config();
    let from = report_from(&config);
    let org_name = config
        .dmarc
        .report_org_name
        .as_deref()
        .unwrap_or(&config.hostname);
    let id = ctx.queue.new_id();
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
    .send(ctx)
    .await?;
    Ok(to)
}

/// §7.1: a destination outside the domain must say it takes reports for
/// it; §6.2: a size limit the report exceeds (compressed, it is smaller
/// still, so the XML length errs on the safe side) rules it out.
async fn accepts(
    resolver: &portcullis_dns::hickory_resolver::TokioResolver,
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
