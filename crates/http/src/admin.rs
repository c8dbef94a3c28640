//! The admin API: JSON over the HTTP listener, the same operations as the
//! CLI (queue, accounts, reputation, blocklist, known senders, submission
//! trace), each refused without the bearer token. The token comes from
//! `[http] admin_token`, or is generated into `DATA/admin.token` (mode
//! 0600) on first start. `/api/openapi.json` describes every endpoint.

use crate::Context;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use portcullis_admission::{Identity, StateCommand};
use portcullis_config::{Cidr, Config};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

mod containment;
use containment::{containment_hold, containment_list, containment_release, containment_show};

pub(crate) const OPENAPI: &str = include_str!("openapi.json");

pub(crate) fn routes() -> Router<Arc<Context>> {
    Router::new()
        .route("/api/openapi.json", get(openapi))
        .route("/api/stats", get(stats))
        .route("/api/queue", get(queue_list))
        .route("/api/queue/flush", post(queue_flush))
        .route("/api/queue/{id}", get(queue_show).delete(queue_delete))
        .route("/api/queue/{id}/hold", post(queue_hold))
        .route("/api/queue/{id}/release", post(queue_release))
        .route("/api/accounts", get(accounts_list).post(accounts_add))
        .route(
            "/api/accounts/{address}",
            axum::routing::delete(accounts_delete),
        )
        .route("/api/reputation", get(reputation_list))
        .route("/api/reputation/{identity}", get(reputation_show))
        .route("/api/reputation/{identity}/report", post(reputation_report))
        .route(
            "/api/blocklist",
            get(blocklist_list)
                .post(blocklist_add)
                .delete(blocklist_del),
        )
        .route(
            "/api/known-senders",
            get(known_list).post(known_add).delete(known_del),
        )
        .route("/api/trace", get(trace))
        .route("/api/reports", get(reports))
        .route("/api/sites", get(sites))
        .route("/api/suppression", get(suppression_list))
        .route(
            "/api/suppression/{address}",
            get(suppression_show).delete(suppression_del),
        )
        .route("/api/containment", get(containment_list))
        .route("/api/containment/{account}", get(containment_show))
        .route("/api/containment/{account}/hold", post(containment_hold))
        .route(
            "/api/containment/{account}/release",
            post(containment_release),
        )
}

/// The token, from config or from the data dir (made on first start).
pub fn admin_token(config: &Config) -> anyhow::Result<String> {
    if let Some(t) = &config.admin_token {
        return Ok(t.clone());
    }
    let path = config.data_dir.join("admin.token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_owned();
        if t.len() >= 32 {
            return Ok(t);
        }
    }
    let mut bytes = [0u8; 24];
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    // 0600 from the start: the token is a secret.
    portcullis_state::write_atomically(&path, format!("{token}\n").as_bytes())?;
    tracing::info!(event = "admin_token_generated", path = %path.display());
    Ok(token)
}

/// Proof that the request carried the bearer token.
pub(crate) struct Admin;

/// A refusal: its status and a message a person can act on, as JSON.
pub(crate) struct ApiError {
    code: StatusCode,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.code, Json(json!({ "error": self.message }))).into_response();
        if self.code == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

fn error(code: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError {
        code,
        message: message.into(),
    }
}

impl FromRequestParts<Arc<Context>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ctx: &Arc<Context>) -> Result<Self, ApiError> {
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if constant_time_eq(given.as_bytes(), ctx.admin_token.as_bytes()) {
            Ok(Admin)
        } else {
            Err(error(
                StatusCode::UNAUTHORIZED,
                "a valid bearer token is required",
            ))
        }
    }
}

/// Equal length and content, in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() || b.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

type ApiResult = Result<Json<Value>, ApiError>;

/// A JSON request body; a malformed one is a 400 with a JSON error, like
/// every other refusal of this API.
struct Body<T>(T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(e) => Err(error(StatusCode::BAD_REQUEST, e.body_text())),
        }
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

fn spool(ctx: &Context) -> std::path::PathBuf {
    ctx.config().data_dir.join("spool")
}

async fn queue_list(_: Admin, State(ctx): State<Arc<Context>>) -> ApiResult {
    let now = portcullis_config::clock::now_secs();
    let list: Vec<Value> = ctx
        .control
        .queue_list()
        .await
        .iter()
        .map(|m| portcullis_control::queue_entry(m, now))
        .collect();
    Ok(Json(json!(list)))
}

async fn queue_show(
    _: Admin,
    State(ctx): State<Arc<Context>>,
    Path(id): Path<String>,
) -> ApiResult {
    let m = ctx.control.queue_show(&id).await.map_err(refused)?;
    // Why it waits is what its last attempt wrote beside the spool.
    let status = portcullis_queue::read_status(&spool(&ctx), &id);
    Ok(Json(json!({
        "envelope": m.message.envelope,
        "held": m.state == portcullis_queue::QueueState::Held,
        // Why, when the hold says (a milter's quarantine).
        "hold_reason": portcullis_queue::hold_reason(&spool(&ctx), &id),
        "state": m.state,
        "attempts": m.attempts,
        "waiting": status.map(|s| s.waiting).unwrap_or_default(),
        "waiting_because": m.reason,
        "message": String::from_utf8_lossy(&m.message.data),
    })))
}

/// A refusal from the control handle, as this API answers it.
fn refused(e: portcullis_control::ControlError) -> ApiError {
    use portcullis_control::ControlError as E;
    let code = match e {
        E::NoSuchMessage(_) | E::NoReputation(_) | E::NotSuppressed(_) => StatusCode::NOT_FOUND,
        E::Refused(_) => StatusCode::BAD_REQUEST,
        E::Spool(_) | E::CannotLoad(..) => StatusCode::INTERNAL_SERVER_ERROR,
        E::NotRenewed(_) => StatusCode::BAD_GATEWAY,
    };
    error(code, e.to_string())
}

/// The outbound sites: limits, rate in force, pauses, last answers.
async fn sites(_: Admin, State(ctx): State<Arc<Context>>) -> ApiResult {
    Ok(Json(json!(ctx.control.sites())))
}

async fn suppression_list(_: Admin, State(ctx): State<Arc<Context>>) -> ApiResult {
    let r = portcullis_control::Request::SuppressionList;
    ctx.control.handle(r).await.map(Json).map_err(refused)
}

async fn suppression_show(
    _: Admin,
    State(ctx): State<Arc<Context>>,
    Path(address): Path<String>,
) -> ApiResult {
    let r = portcullis_control::Request::SuppressionShow { address };
    ctx.control.handle(r).await.map(Json).map_err(refused)
}

async fn suppression_del(
    _: Admin,
    State(ctx): State<Arc<Context>>,
    Path(address): Path<String>,
) -> ApiResult {
    let r = portcullis_control::Request::SuppressionDel { address };
    ctx.control.handle(r).await.map(Json).map_err(refused)
}

async fn queue_delete(
    _: Admin,
    State(ctx): State<Arc<Context>>,
    Path(id): Path<String>,
) -> ApiResult {
    ctx.control.delete(&id).await.map(Json).map_err(refused)
}

async fn queue_flush(_: Admin, State(ctx): State<Arc<Context>>) -> ApiResult {
    let r = portcullis_control::Request::QueueFlush;
    ctx.control.handle(r).await.map(Json).map_err(refused)
}

async fn set_held(ctx: &Context, id: &str, held: bool) -> ApiResult {
    ctx.control.hold(id, held).await.map(Json).map_err(refused)
}

async fn queue_hold(
    _: Admin,
    State(ctx): State<Arc<Context>>,
    Path(id): Path<String>,
) -> ApiResult {
    set_held(&ctx, &id, true).await
}

async fn queue_release(
    _: Admin,
    State(ctx): State<Arc<Context>>,
    Path(id): Path<String>,
) -> ApiResult {
    set_held(&ctx, &id, false).await
}

fn accounts_path(ctx: &Context) -> std::path::PathBuf {
    ctx.config().data_dir.join("accounts.json")
}

async fn accounts_list(_: Admin, State(ctx): State<Arc<Context>>) -> ApiResult {
    let store = portcullis_accounts::AccountStore::load(&accounts_path(&ctx)).map_err(internal)?;
    let list: Vec<Value> = store
        .list()
        .map(|a| json!({ "address": a.address, "owns": a.owns, "any_sender": a.any_sender }))
        .collect();
    Ok(Json(json!(list)))
}

#[derive(Deserialize)]
struct NewAccount {
    address: String,
    password: String,
}

async fn accounts_add(
    _: Admin,
    State(ctx): State<Arc<Context>>,
    Body(a): Body<NewAccount>,
) -> ApiResult {
    let path = accounts_path(&ctx);
    let mut store = portcullis_accounts::AccountStore::load(&path).map_err(internal)?;
    store
        .add(&a.address, &a.password)
        .map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?;
    store.save().map_err(internal)?;
    Ok(Json(json!({ "added": a.address.to_ascii_lowercase() })))
}

async fn accounts_delete(
    _: Admin,
    State(ctx): State<Arc<Context>>,
    Path(address): Path<String>,
) -> ApiResult {
    let path = accounts_path(&ctx);
    let mut store = portcullis_accounts::AccountStore::load(&path).map_err(internal)?;
    store
        .remove(&address)
        .map_err(|e| error(StatusCode::NOT_FOUND, e.to_string()))?;
    store.save().map_err(internal)?;
    Ok(Json(json!({ "deleted": address })))
}

fn reputation_json(ctx: &Context, key: &str, r: &portcullis_admission::Reputation) -> Value {
    let class = ctx.inbound.admission.policy().class_name(key, r);
    json!({
        "identity": key,
        "class": class,
        "level": r.level,
        "messages": r.messages,
        "ham": r.ham,
        "spam": r.spam,
        "first_seen": r.first_seen,
        "last_seen": r.last_seen,
    })
}

async fn reputation_list(_: Admin, State(ctx): State<Arc<Context>>) -> ApiResult {
    let all = ctx.inbound.admission.state.reputations().await;
    Ok(Json(json!(
        all.iter()
            .map(|(k, r)| reputation_json(&ctx, k, r))
            .collect::<Vec<_>>()
    )))
}

async fn reputation_show(
    _: Admin,
    State(ctx): State<Arc<Context>>,
    Path(identity): Path<String>,
) -> ApiResult {
    let key = Identity::key_of(&identity);
    let r = ctx.control.reputation(&key).await.map_err(refused)?;
    Ok(Json(reputation_json(&ctx, &key, &r)))
}

#[derive(Deserialize)]
struct Report {
    verdict: String,
}

async fn reputation_report(
    _: Admin,
    State(ctx): State<Arc<Context>>,
    Path(identity): Path<String>,
    Body(r): Body<Report>,
) -> ApiResult {
    apply(
        &ctx,
        StateCommand::Report {
            identity: identity.clone(),
            verdict: r.verdict,
        },
    )
    .await?;
    reputation_show(Admin, State(ctx), Path(identity)).await
}

async fn apply(ctx: &Context, cmd: StateCommand) -> Result<(), ApiError> {
    ctx.control.apply(&cmd).await.map_err(refused)
}

async fn blocklist_list(_: Admin, State(ctx): State<Arc<Context>>) -> ApiResult {
    let now = portcullis_config::clock::now_secs();
    let list: Vec<Value> = ctx
        .inbound.admission
        .state
        .blocklist()
        .await
        .iter()
        .map(|(c, e)| json!({ "range": c, "until": e.until, "seconds_left": e.until.saturating_sub(now), "reason": e.reason }))
        .collect();
    Ok(Json(json!(list)))
}

#[derive(Deserialize)]
struct Block {
    range: Cidr,
    #[serde(default = "Block::default_secs")]
    secs: u64,
    #[serde(default)]
    reason: String,
}

impl Block {
    fn default_secs() -> u64 {
        3600
    }
}

async fn blocklist_add(
    _: Admin,
    State(ctx): State<Arc<Context>>,
    Body(b): Body<Block>,
) -> ApiResult {
    let reason = if b.reason.is_empty() {
        "blocked by the operator".to_owned()
    } else {
        b.reason
    };
    apply(
        &ctx,
        StateCommand::Block {
            range: b.range,
            secs: b.secs,
            reason,
        },
    )
    .await?;
    Ok(Json(json!({ "blocked": b.range, "secs": b.secs })))
}

fn range_param(q: &HashMap<String, String>) -> Result<Cidr, ApiError> {
    let r = q
        .get("range")
        .ok_or_else(|| error(StatusCode::BAD_REQUEST, "the query needs range=CIDR"))?;
    r.parse()
        .map_err(|e: String| error(StatusCode::BAD_REQUEST, e))
}

async fn blocklist_del(
    _: Admin,
    State(ctx): State<Arc<Context>>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let range = range_param(&q)?;
    apply(&ctx, StateCommand::Unblock { range }).await?;
    Ok(Json(json!({ "unblocked": range })))
}

async fn known_list(_: Admin, State(ctx): State<Arc<Context>>) -> ApiResult {
    let list: Vec<Value> = ctx
        .inbound
        .admission
        .state
        .known()
        .await
        .iter()
        .map(|(c, n)| json!({ "range": c, "name": n }))
        .collect();
    Ok(Json(json!(list)))
}

#[derive(Deserialize)]
struct Known {
    range: Cidr,
    name: String,
}

async fn known_add(_: Admin, State(ctx): State<Arc<Context>>, Body(k): Body<Known>) -> ApiResult {
    if k.name.is_empty() || k.name.contains(char::is_whitespace) {
        return Err(error(StatusCode::BAD_REQUEST, "name must be one word"));
    }
    apply(
        &ctx,
        StateCommand::KnownAdd {
            range: k.range,
            name: k.name.clone(),
        },
    )
    .await?;
    Ok(Json(json!({ "range": k.range, "name": k.name })))
}

async fn known_del(
    _: Admin,
    State(ctx): State<Arc<Context>>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let range = range_param(&q)?;
    apply(&ctx, StateCommand::KnownDel { range }).await?;
    Ok(Json(json!({ "deleted": range })))
}

async fn trace(
    _: Admin,
    State(ctx): State<Arc<Context>>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let query = q.get("q").ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            "the query needs q=QUEUE-ID|MESSAGE-ID|ACCOUNT",
        )
    })?;
    let found = ctx.inbound.submission.log.search(query).map_err(internal)?;
    Ok(Json(json!(found)))
}

/// One message in the dashboard's queue table: who it is for, and why it
/// waits (the last reply or error of its last attempt, if it had one).
fn queue_row(dir: &std::path::Path, m: &portcullis_queue::QueuedMessage) -> serde_json::Value {
    let e = &m.message.envelope;
    let status = portcullis_queue::read_status(dir, &e.id);
    let reason = status
        .as_ref()
        .and_then(|s| s.waiting.first())
        .map(|(_, why)| why.clone());
    json!({
        "id": e.id,
        "sender": e.sender,
        "recipients": e.recipients.iter().map(|r| r.address.as_str()).collect::<Vec<_>>(),
        "size": m.message.data.len(),
        "attempts": m.attempts,
        "reason": reason,
    })
}

/// DMARC aggregate and TLS-RPT reports received at `[dmarc]
/// report_mailbox`, and the messages set aside with their reasons.
async fn reports(_: Admin, State(ctx): State<Arc<Context>>) -> ApiResult {
    let dir = ctx.config().data_dir.clone();
    let listed = tokio::task::spawn_blocking(move || portcullis_reportbox::list_stored(&dir))
        .await
        .map_err(internal)?;
    listed.map(Json).map_err(internal)
}

/// What the dashboard draws.
async fn stats(_: Admin, State(ctx): State<Arc<Context>>) -> ApiResult {
    let now = portcullis_config::clock::now_secs();
    let adm = &ctx.inbound.admission;
    let mut top = adm.state.reputations().await;
    top.sort_by_key(|(_, r)| std::cmp::Reverse(r.messages));
    top.truncate(10);
    let dir = spool(&ctx);
    let queued = ctx.control.queue_list().await;
    let oldest = queued.iter().map(|m| m.message.envelope.received_at).min();
    let default_limit = adm
        .policy()
        .classes
        .get("default")
        .and_then(|c| c.max_connections)
        .unwrap_or(0);
    Ok(Json(json!({
        "now": now,
        "minutes": ctx.metrics.minutes(now),
        "connections_by_class": adm.by_class.snapshot(),
        "default_pool": { "in_use": adm.state.held("class:default"), "limit": default_limit },
        "top_senders": top.iter().map(|(k, r)| reputation_json(&ctx, k, r)).collect::<Vec<_>>(),
        "blocklist": adm.state.blocklist().await.iter().map(|(c, e)| json!({ "range": c, "seconds_left": e.until.saturating_sub(now), "reason": e.reason })).collect::<Vec<_>>(),
        "queue": {
            "messages": queued.len(),
            "oldest_age_secs": oldest.map(|o| now.saturating_sub(o)),
            "first": queued.iter().take(20).map(|m| queue_row(&dir, m)).collect::<Vec<_>>(),
        },
        "auth_failures": ctx.metrics.auth_failures(),
        "escalations": {
            "counts": ctx.metrics.escalation_counts(),
            "recent": ctx.metrics.escalations(),
        },
        "tls_sessions": ctx.tls_reports.snapshot(),
        "milters": ctx.metrics.milter_summary(),
    })))
}
