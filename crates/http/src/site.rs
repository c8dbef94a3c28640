//! The HTTP listener: health, metrics, the dashboard, and mail-client
//! auto-configuration so users do not mistype servers and ports
//! (Thunderbird's autoconfig, Outlook's autodiscover POX; the answers are
//! `autoconfig.rs`'s).

use crate::Context;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::net::TcpListener;

pub async fn serve(ctx: Arc<Context>, sock: TcpListener) {
    let app = Router::new()
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .route("/mail/config-v1.1.xml", get(autoconfig))
        .route(
            "/.well-known/autoconfig/mail/config-v1.1.xml",
            get(autoconfig),
        )
        .route("/autodiscover/autodiscover.xml", post(autodiscover))
        .route("/Autodiscover/Autodiscover.xml", post(autodiscover))
        .route("/", get(dashboard))
        .merge(crate::admin::routes())
        .with_state(ctx);
    if let Err(e) = axum::serve(sock, app).await {
        tracing::error!(event = "http_error", error = %e);
    }
}

/// The dashboard: one page, embedded in the binary, no build step. It
/// asks for the admin token and draws what `/api/stats` returns.
async fn dashboard() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("dashboard.html"),
    )
}

async fn health(State(ctx): State<Arc<Context>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "status": "ok",
        "queued": ctx.queue.spool().live_count(),
        "sessions": ctx.config().limits.max_sessions - ctx.sessions.available_permits(),
    }))
}

async fn metrics(State(ctx): State<Arc<Context>>) -> impl IntoResponse {
    let sessions = (ctx.config().limits.max_sessions - ctx.sessions.available_permits()) as u64;
    let adm = &ctx.inbound.admission;
    let blocklist = adm.state.blocklist().await.len() as u64;
    let sizes = adm.state.sizes();
    let size = |name: &str| {
        sizes
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| *v as u64)
    };
    let default_max = adm
        .policy()
        .classes
        .get("default")
        .and_then(|c| c.max_connections)
        .unwrap_or(0);
    let now = portcullis_config::clock::now_us();
    let oldest = ctx
        .queue
        .spool()
        .oldest_accepted_us()
        .map_or(0, |t| now.saturating_sub(t) / 1_000_000);
    let mut gauges = vec![
        (
            "portcullis_queue_messages",
            "Messages accepted and not yet completed.",
            ctx.queue.spool().live_count() as u64,
        ),
        (
            "portcullis_queue_oldest_seconds",
            "Age of the oldest message in the queue (0 when empty).",
            oldest,
        ),
        ("portcullis_sessions", "SMTP sessions open now.", sessions),
        (
            "portcullis_default_pool_connections",
            "Port-25 connections held in the shared default class now.",
            u64::from(adm.state.held("class:default")),
        ),
        (
            "portcullis_default_pool_connection_limit",
            "The default class's concurrent connection limit (0: none).",
            u64::from(default_max),
        ),
        (
            "portcullis_blocklist_entries",
            "Ranges on the temporal blocklist now.",
            blocklist,
        ),
        (
            "portcullis_state_buckets",
            "Rate buckets held in local state (grows with identities and ranges).",
            size("buckets"),
        ),
        (
            "portcullis_state_reputations",
            "Identities with a reputation in local state.",
            size("reputations"),
        ),
    ];
    if let Some(up) = adm.state.redis_up() {
        gauges.push((
            "portcullis_redis_up",
            "1 while Redis answers; 0 while deciding on local state.",
            u64::from(up),
        ));
        gauges.push((
            "portcullis_redis_failures",
            "Redis operations that failed since start (local state used instead).",
            adm.state.redis_errors(),
        ));
        gauges.push((
            "portcullis_cluster_nodes",
            "Nodes whose heartbeat in Redis was fresh at this node's last beat.",
            adm.state.live_nodes().unwrap_or(0),
        ));
    }
    if let Some((left, failing)) = ctx.acme.gauges(std::time::SystemTime::now()) {
        gauges.push((
            "portcullis_acme_certificate_expiry_seconds",
            "Seconds until the ACME certificate in use expires.",
            left,
        ));
        gauges.push((
            "portcullis_acme_failures_in_a_row",
            "ACME orders failed since the last success (0: the last one succeeded).",
            failing,
        ));
    }
    let mut body = ctx.metrics.render(&gauges);
    body.push_str(&site_gauges(&ctx.control.sites()));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// The outbound sites' gauges: connections, messages deferred to each,
/// the rate in force, pauses, and the class of the last answers.
fn site_gauges(sites: &[portcullis_shaping::SiteView]) -> String {
    use portcullis_metrics::labeled_gauge;
    let now = portcullis_config::clock::now_secs();
    let each =
        |f: &dyn Fn(&portcullis_shaping::SiteView) -> u64| -> Vec<(Vec<(&str, String)>, u64)> {
            sites
                .iter()
                .map(|s| (vec![("site", s.name.clone())], f(s)))
                .collect()
        };
    let mut last = Vec::new();
    for s in sites {
        let mut classes: Vec<&str> = s.last_answers.iter().map(|a| a.class.name()).collect();
        classes.sort_unstable();
        classes.dedup();
        for c in classes {
            let n = s
                .last_answers
                .iter()
                .filter(|a| a.class.name() == c)
                .count();
            last.push((
                vec![("site", s.name.clone()), ("class", c.to_owned())],
                n as u64,
            ));
        }
    }
    [
        labeled_gauge(
            "portcullis_site_connections",
            "Connections open to each outbound site (a site: the MX hosts destinations share).",
            &each(&|s| u64::from(s.connections)),
        ),
        labeled_gauge(
            "portcullis_site_deferred_messages",
            "Messages waiting in the queue for their site's pause or pace.",
            &each(&|s| u64::from(s.deferred)),
        ),
        labeled_gauge(
            "portcullis_site_rate_per_minute",
            "Messages a minute in force for each site (0: no limit).",
            &each(&|s| u64::from(s.rate_per_minute)),
        ),
        labeled_gauge(
            "portcullis_site_paused_seconds",
            "Seconds left in each site's pause after a rate answer (0: not paused).",
            &each(&|s| s.paused_until.map_or(0, |t| (t / 1000).saturating_sub(now))),
        ),
        labeled_gauge(
            "portcullis_site_pauses",
            "Pauses of each site in a row (reset after a calm hour).",
            &each(&|s| u64::from(s.pauses)),
        ),
        labeled_gauge(
            "portcullis_site_last_replies",
            "Each site's last answers that were not a delivery, by reply class.",
            &last,
        ),
    ]
    .concat()
}

/// Thunderbird's autoconfig file, for our own domains only (404 for
/// others).
async fn autoconfig(
    State(ctx): State<Arc<Context>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let config = ctx.config();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let email = q.get("emailaddress").map(String::as_str);
    crate::autoconfig::requested_domain(&config, email, host)
        .and_then(|domain| crate::autoconfig::thunderbird(&config, &domain))
        .map_or_else(
            || not_found("not a domain this server provides mail for\n"),
            |body| xml(StatusCode::OK, body),
        )
}

/// Outlook's POX autodiscover: the request names the address; the answer
/// lists its mailbox server and our submission listeners, for addresses
/// of our own domains only.
async fn autodiscover(State(ctx): State<Arc<Context>>, body: String) -> Response {
    let Some(email) = crate::autoconfig::outlook_address(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "text/plain")],
            "EMailAddress missing\n",
        )
            .into_response();
    };
    match crate::autoconfig::outlook(&ctx.config(), email) {
        Some(answer) => xml(StatusCode::OK, answer),
        None => not_found("not a domain this server provides mail for\n"),
    }
}

fn xml(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

fn not_found(why: &'static str) -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain")],
        why,
    )
        .into_response()
}
