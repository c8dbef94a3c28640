//! The accept path. Before any session exists, the connect stage's class
//! of service decides (the blocklist, the class's and the range's
//! concurrency and rate): a refused client costs an accept, one write of
//! the reply, and a close. An admitted one gets its session task.

use crate::Context;
use crate::driver::Driver;
use portcullis_config::{Listener, ListenerRole};
use portcullis_metrics::{Counter, Outcome};
use portcullis_pipeline::Connection;
use portcullis_smtp::Reply;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tracing::{error, info};

pub(crate) async fn accept_loop(ctx: Arc<Context>, sock: TcpListener, listener: Listener) {
    // Port 25 without a PROXY header: the peer is the client, so a
    // blocked one is answered here, before any task or permit exists.
    let screen = listener.role == ListenerRole::Mx && !listener.proxy_protocol;
    loop {
        let Some(first) = accept(&ctx, &sock, &listener).await else {
            continue;
        };
        serve_connection(&ctx, first, &listener, screen);
        // Under a flood the backlog holds more: take what is there now
        // without going back to the runtime for each.
        for _ in 0..ACCEPT_BATCH {
            let Some((stream, peer)) = accept_ready(&sock) else {
                break;
            };
            if allowed(&ctx, &listener, peer) {
                serve_connection(&ctx, (stream, peer), &listener, screen);
            }
        }
    }
}

/// Most connections taken from the backlog per wake-up of the loop.
const ACCEPT_BATCH: usize = 64;

/// A connection already waiting in the backlog, if any (never waits).
fn accept_ready(sock: &TcpListener) -> Option<(TcpStream, SocketAddr)> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match sock.poll_accept(&mut cx) {
        std::task::Poll::Ready(Ok(conn)) => Some(conn),
        _ => None,
    }
}

/// Refuse a blocked client or one past the session limit at once, or give
/// the connection its session task.
fn serve_connection(
    ctx: &Arc<Context>,
    (stream, peer): (TcpStream, SocketAddr),
    listener: &Listener,
    screen: bool,
) {
    if screen && refused_at_once(ctx, &stream, peer) {
        return;
    }
    let Ok(permit) = ctx.sessions.clone().try_acquire_owned() else {
        let r = ctx.inbound.admission.refuse_busy(peer.ip());
        count_connection(ctx, listener.role, r.cause.outcome());
        ctx.refusals.note(&r, peer.ip());
        return refuse(ctx, &stream, listener.role, &r.reply);
    };
    // Replies are small and each waits for the client: no Nagle delay.
    let _ = stream.set_nodelay(true);
    tokio::spawn(admit(ctx.clone(), stream, peer, listener.clone(), permit));
}

/// A blocked client: counted (not logged one by one: the refusal log sums
/// them up), told why in one write, and closed as the stream drops.
fn refused_at_once(ctx: &Context, stream: &TcpStream, peer: SocketAddr) -> bool {
    let Some(r) = ctx.inbound.admission.refuse_listed(peer.ip()) else {
        return false;
    };
    count_connection(ctx, ListenerRole::Mx, r.cause.outcome());
    ctx.refusals.note(&r, peer.ip());
    refuse(ctx, stream, ListenerRole::Mx, &r.reply);
    true
}

/// A policy listener: each connection is one Postfix process asking its
/// questions, served by the policy service (its own task, no session
/// permit: Postfix holds few connections, and a stuck one ends at the
/// service's idle timeout).
pub(crate) async fn policy_loop(ctx: Arc<Context>, sock: TcpListener, listener: Listener) {
    loop {
        let Some((stream, _)) = accept(&ctx, &sock, &listener).await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let policy = ctx.policy.clone();
        tokio::spawn(async move { policy.serve(stream).await });
    }
}

/// The next connection a listener may serve, or None to go round again:
/// an accept error (EMFILE and friends: back off instead of spinning), or
/// a client outside `allow_from`.
async fn accept(
    ctx: &Context,
    sock: &TcpListener,
    l: &Listener,
) -> Option<(TcpStream, SocketAddr)> {
    let (stream, peer) = match sock.accept().await {
        Ok(x) => x,
        Err(e) => {
            error!(event = "accept_error", error = %e);
            tokio::time::sleep(Duration::from_millis(100)).await;
            return None;
        }
    };
    allowed(ctx, l, peer).then_some((stream, peer))
}

/// `allow_from`: a client outside it is closed at once, logged and
/// counted.
fn allowed(ctx: &Context, l: &Listener, peer: SocketAddr) -> bool {
    if l.allow_from.is_empty() || l.allow_from.iter().any(|c| c.contains(peer.ip())) {
        return true;
    }
    count_connection(ctx, l.role, "refused_allow_from");
    info!(event = "refused", listener = l.role.name(), peer = %peer, reason = "allow_from");
    false
}

/// The class of service, then the session.
async fn admit(
    ctx: Arc<Context>,
    mut stream: TcpStream,
    peer: SocketAddr,
    l: Listener,
    permit: OwnedSemaphorePermit,
) {
    let peer = if l.proxy_protocol {
        match crate::proxied::client(&ctx, &mut stream, peer, &l).await {
            Some(client) => client,
            None => return,
        }
    } else {
        peer
    };
    let gate = match ctx.inbound.admit(l.role, peer.ip()).await {
        Ok(gate) => gate,
        Err(r) => {
            count_connection(&ctx, l.role, r.cause.outcome());
            ctx.refusals.note(&r, peer.ip());
            return refuse(&ctx, &stream, l.role, &r.reply);
        }
    };
    let config = ctx.config();
    let id = ctx.session_id();
    info!(session = %id, event = "connect", listener = l.role.name(), peer = %peer);
    let conn = Connection::new(ctx.inbound.clone(), config.clone(), id, l.role, peer, gate);
    let driver = Driver {
        session_config: Context::session_config(&config, l.role),
        shutdown: ctx.shutdown.subscribe(),
        ctx,
        conn,
        role: l.role,
        pregreet_wait: l.pregreet_wait,
    };
    driver.run(stream).await;
    drop(permit);
}

/// Answer and close at once: the reply fits the socket buffer of a fresh
/// connection, so it is written without waiting (or not at all).
fn refuse(ctx: &Context, stream: &TcpStream, role: ListenerRole, r: &Reply) {
    count_refusal(ctx, role, r);
    let mut out = Vec::with_capacity(128);
    r.write_to(&mut out);
    let _ = stream.try_write(&out);
}

pub(crate) fn count_connection(ctx: &Context, role: ListenerRole, outcome: &str) {
    let labels = [("listener", role.name()), ("outcome", outcome)];
    ctx.metrics.inc(Counter::Connections, &labels);
}

/// A 4xx/5xx reply: counted by code, and in the dashboard's minute as a
/// refusal (its "deferred" is deliveries the queue must retry, which the
/// queue counts).
pub(crate) fn count_refusal(ctx: &Context, role: ListenerRole, r: &Reply) {
    let code = r
        .status
        .map_or_else(|| r.code.to_string(), |s| s.to_string());
    let labels = [("listener", role.name()), ("code", code.as_str())];
    ctx.metrics.inc(Counter::MessagesRejected, &labels);
    ctx.metrics
        .outcome(Outcome::Rejected, portcullis_config::clock::now_secs());
}
