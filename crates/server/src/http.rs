//! The HTTP listener: health, and mail-client auto-configuration so users
//! do not mistype ports (Thunderbird's autoconfig, Outlook's autodiscover
//! POX), both pointing at 587/STARTTLS and 465/SSL with password auth.

use crate::Context;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use portcullis_config::ListenerRole;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::net::TcpListener;

pub(crate) async fn serve(ctx: Arc<Context>, sock: TcpListener) {
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
    let now = portcullis_config::clock::now_secs();
    let spool_dir = ctx.config().data_dir.join("spool");
    let oldest = portcullis_queue::inspect(&spool_dir)
        .unwrap_or_default()
        .iter()
        .map(|m| m.envelope.received_at)
        .min()
        .map_or(0, |t| now.saturating_sub(t));
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
    let body = ctx.metrics.render(&gauges);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

fn port(ctx: &Context, role: ListenerRole) -> Option<u16> {
    ctx.config()
        .listeners
        .iter()
        .find(|l| l.role == role)
        .and_then(|l| l.bind.first())
        .map(|a| a.port())
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// Thunderbird's format: https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat
async fn autoconfig(
    State(ctx): State<Arc<Context>>,
    Query(q): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    let email = q.get("emailaddress").map(String::as_str).unwrap_or("");
    let domain = email
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .or_else(|| ctx.config().local_domains.first().cloned())
        .unwrap_or_default();
    let host = xml_escape(&ctx.config().hostname);
    let mut servers = String::new();
    // Implicit TLS first (RFC 8314 §3.3 prefers it), then STARTTLS.
    for (role, socket) in [
        (ListenerRole::Submissions, "SSL"),
        (ListenerRole::Submission, "STARTTLS"),
    ] {
        if let Some(p) = port(&ctx, role) {
            servers.push_str(&format!(
                "    <outgoingServer type=\"smtp\">\n      <hostname>{host}</hostname>\n      <port>{p}</port>\n      <socketType>{socket}</socketType>\n      <authentication>password-cleartext</authentication>\n      <username>%EMAILADDRESS%</username>\n    </outgoingServer>\n"
            ));
        }
    }
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<clientConfig version=\"1.1\">\n  <emailProvider id=\"{d}\">\n    <domain>{d}</domain>\n    <displayName>{d} mail</displayName>\n    <displayShortName>{d}</displayShortName>\n{servers}  </emailProvider>\n</clientConfig>\n",
        d = xml_escape(&domain)
    );
    (
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        body,
    )
}

/// Outlook's POX autodiscover: the request names the address; the answer
/// lists the SMTP endpoints.
async fn autodiscover(State(ctx): State<Arc<Context>>, body: String) -> impl IntoResponse {
    let email = body
        .split("<EMailAddress>")
        .nth(1)
        .and_then(|r| r.split("</EMailAddress>").next())
        .map(str::trim)
        .unwrap_or("");
    if email.len() > 320 || !email.contains('@') {
        return (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "text/plain")],
            "EMailAddress missing\n".to_owned(),
        );
    }
    let host = xml_escape(&ctx.config().hostname);
    let mut protocols = String::new();
    for (role, ssl, enc) in [
        (ListenerRole::Submissions, "on", "SSL"),
        (ListenerRole::Submission, "on", "TLS"),
    ] {
        if let Some(p) = port(&ctx, role) {
            protocols.push_str(&format!(
                "      <Protocol>\n        <Type>SMTP</Type>\n        <Server>{host}</Server>\n        <Port>{p}</Port>\n        <SSL>{ssl}</SSL>\n        <Encryption>{enc}</Encryption>\n        <SPA>off</SPA>\n        <AuthRequired>on</AuthRequired>\n        <LoginName>{}</LoginName>\n      </Protocol>\n",
                xml_escape(email)
            ));
        }
    }
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006\">\n  <Response xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a\">\n    <Account>\n      <AccountType>email</AccountType>\n      <Action>settings</Action>\n{protocols}    </Account>\n  </Response>\n</Autodiscover>\n"
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        body,
    )
}
