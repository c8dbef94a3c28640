//! The HTTP room: the admin API and its OpenAPI description
//! (`admin.rs`), the dashboard, health and the metrics endpoint
//! (`site.rs`), mail-client auto-configuration (`autoconfig.rs`), and the
//! public MTA-STS policy host (`mta_sts_host.rs`).
//!
//! What this room must not do: decide anything about mail, or change
//! live state except through the handles it is given ([`HttpContext`]):
//! the operator's operations go through `portcullis-control`, as the CLI's
//! do.

mod admin;
mod autoconfig;
mod mta_sts_host;
#[cfg(test)]
mod openapi_check;
mod site;

pub use admin::admin_token;
pub use autoconfig::srv_records;

use portcullis_config::{Config, LiveConfig};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// What the HTTP listeners read and act through, made by the server.
pub struct HttpContext {
    pub config: LiveConfig,
    pub queue: portcullis_queue::Queue,
    /// The operator's operations on the live queue and state.
    pub control: portcullis_control::Control,
    pub inbound: Arc<portcullis_pipeline::Inbound>,
    pub metrics: Arc<portcullis_metrics::Metrics>,
    pub tls_reports: Arc<portcullis_reports::TlsReports>,
    pub acme: Arc<portcullis_acme::AcmeStatus>,
    /// The SMTP sessions' permits: those taken are the sessions open.
    pub sessions: Arc<Semaphore>,
    pub admin_token: String,
    /// The HTTPS host's TLS (with the ACME TLS-ALPN-01 answers).
    pub https: tokio_rustls::TlsAcceptor,
}

impl HttpContext {
    pub(crate) fn config(&self) -> Arc<Config> {
        self.config.get()
    }

    pub(crate) fn https(&self) -> tokio_rustls::TlsAcceptor {
        self.https.clone()
    }
}

pub(crate) use HttpContext as Context;

/// Serve health, metrics, the dashboard, autoconfig and the admin API.
pub async fn serve_site(ctx: Arc<HttpContext>, sock: TcpListener) {
    site::serve(ctx, sock).await
}

/// Serve the MTA-STS policy host over HTTPS.
pub async fn serve_mta_sts(ctx: Arc<HttpContext>, sock: TcpListener) {
    mta_sts_host::serve(ctx, sock).await
}
