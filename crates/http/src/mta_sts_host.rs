//! The MTA-STS policy host (RFC 8461 §3.3): HTTPS on `[http]
//! mta_sts_bind` with the server's certificate (with `[acme]`, also the
//! TLS-ALPN-01 answers of RFC 8737 while an order is validated), answering `GET
//! /.well-known/mta-sts.txt` for `mta-sts.DOMAIN` of each local domain
//! that has `[[domain]] mta_sts`, 404 for anything else. Only that: the
//! dashboard and the admin API never listen on this public port.

use crate::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

/// A client gets this long for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(ctx: Arc<Context>, sock: TcpListener) {
    let app = Router::new()
        .route("/.well-known/mta-sts.txt", get(policy))
        .with_state(ctx.clone());
    let listener = TlsListener::start(ctx, sock);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(event = "mta_sts_host_error", error = %e);
    }
}

async fn policy(State(ctx): State<Arc<Context>>, headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let domain = policy_domain(host);
    match domain.and_then(|d| ctx.config().mta_sts.get(&d).cloned()) {
        Some(p) => ([(header::CONTENT_TYPE, "text/plain")], p.to_text()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `mta-sts.example.org[:443]` → `example.org`.
fn policy_domain(host: &str) -> Option<String> {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name.strip_prefix("mta-sts.").map(str::to_owned)
}

/// TLS connections, handshaken off the accept loop (a slow client holds
/// only its own task), handed to axum.
struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    fn start(ctx: Arc<Context>, sock: TcpListener) -> TlsListener {
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        let local = sock
            .local_addr()
            .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = sock.accept().await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let (acceptor, tx) = (ctx.https(), tx.clone());
                tokio::spawn(async move {
                    if let Ok(Ok(tls)) =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                    {
                        let _ = tx.send((tls, peer)).await;
                    }
                });
            }
        });
        TlsListener { ready, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task never ends while the server runs.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::policy_domain;

    #[test]
    fn the_policy_domain_is_the_host_minus_mta_sts() {
        assert_eq!(
            policy_domain("mta-sts.Example.org:443").as_deref(),
            Some("example.org")
        );
        assert_eq!(
            policy_domain("mta-sts.example.org.").as_deref(),
            Some("example.org")
        );
        assert_eq!(policy_domain("www.example.org"), None);
    }
}
