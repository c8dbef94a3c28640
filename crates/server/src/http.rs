//! The HTTP listener. For now: a health check that also tells whether the
//! spool is keeping up.

use crate::Context;
use axum::{Json, Router, extract::State, routing::get};
use std::sync::Arc;
use tokio::net::TcpListener;

pub(crate) async fn serve(ctx: Arc<Context>, sock: TcpListener) {
    let app = Router::new().route("/healthz", get(health)).with_state(ctx);
    if let Err(e) = axum::serve(sock, app).await {
        tracing::error!(event = "http_error", error = %e);
    }
}

async fn health(State(ctx): State<Arc<Context>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "status": "ok",
        "queued": ctx.spool.live_count(),
        "sessions": ctx.config.limits.max_sessions - ctx.sessions.available_permits(),
    }))
}
