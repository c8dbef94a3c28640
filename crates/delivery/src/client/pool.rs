//! Outbound SMTP sessions carried from one transaction to the next (the
//! rules in `cache.rs`): a transaction takes an idle session made under
//! the same key, proves it alive with RSET (RFC 5321 §4.1.1.5), and gives
//! it back when it ended healthy; a session that turns out stale is
//! dropped and the transaction goes on over a new one, so that a message
//! never fails for a connection the server closed while it was idle. One
//! task closes idle sessions with QUIT when their time is up.
//!
//! This does not decide whether a transaction may start: the site's gate
//! does that before the pool is asked.

use super::cache::{CacheSettings, ConnectionCache, Put, Used};
use super::{Outgoing, SmtpSession, establish};
use crate::outcome::{HostFailure, RcptOutcome};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::info;

/// The TLS rules a session was opened under. A session is reused only
/// for a transaction held to the same rules, so a connection made under
/// weaker ones (opportunistic, or no TLS at all) never carries mail that
/// DANE, MTA-STS or REQUIRETLS holds to more.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum TlsRules {
    /// STARTTLS when offered, the certificate not checked (RFC 7435).
    Opportunistic,
    /// The certificate verified for the host's name (MTA-STS, RFC 8461).
    Verified,
    /// The certificate one of these TLSA records names (RFC 7672).
    Dane(Vec<String>),
    /// The smarthost's login connector (pinned or verified).
    Login,
}

/// What makes two connections equivalent.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ConnKey {
    addr: SocketAddr,
    source: Option<IpAddr>,
    helo: String,
    /// The name TLS was started for (SNI, and what a verified
    /// certificate must carry).
    tls_name: String,
    tls: TlsRules,
    /// TLS was mandatory: a session that went on in clear never has it.
    require_tls: bool,
    /// The smarthost account logged in with.
    login: Option<String>,
}

impl ConnKey {
    /// The key of a session to `addr` for `msg`, TLS started for
    /// `tls_name` under `tls`.
    pub fn of(addr: SocketAddr, msg: &Outgoing<'_>, tls_name: &str, tls: TlsRules) -> ConnKey {
        ConnKey {
            addr,
            source: msg.source,
            helo: msg.helo.to_owned(),
            tls_name: tls_name.to_owned(),
            tls,
            require_tls: msg.require_tls,
            login: msg.auth.map(|(user, _)| user.to_owned()),
        }
    }
}

/// One transaction carried, and how.
pub(crate) struct Carried {
    pub result: Result<Vec<RcptOutcome>, HostFailure>,
    /// Over a session that carried an earlier transaction.
    pub reused: bool,
    /// A new session was opened for it.
    pub opened: bool,
    /// Cached sessions found closed or failing RSET on the way.
    pub stale: u32,
}

struct Shared {
    cache: Mutex<ConnectionCache<ConnKey, SmtpSession>>,
    /// Wakes the closer when a session was given back.
    given_back: Notify,
    start: Instant,
}

impl Shared {
    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, ConnectionCache<ConnKey, SmtpSession>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The idle sessions of this node.
pub(crate) struct Pool {
    shared: Arc<Shared>,
    closer: Mutex<Option<JoinHandle<()>>>,
}

impl Pool {
    pub fn new(settings: CacheSettings) -> Pool {
        Pool {
            shared: Arc::new(Shared {
                cache: Mutex::new(ConnectionCache::new(settings)),
                given_back: Notify::new(),
                start: Instant::now(),
            }),
            closer: Mutex::new(None),
        }
    }

    /// Carry one transaction: over an idle session made under `key`
    /// (which [`ConnKey::of`] made from `msg`), else over a new one once
    /// `may_open` allows it (the site's connection rate; its refusal is
    /// returned as is). `per_connection` is the site's
    /// `messages_per_connection` (0: no limit).
    pub async fn carry<E>(
        &self,
        key: &ConnKey,
        msg: &Outgoing<'_>,
        tls: &tokio_rustls::TlsConnector,
        per_connection: u32,
        may_open: impl Future<Output = Result<(), E>>,
    ) -> Result<Carried, E> {
        let mut stale = 0;
        loop {
            let taken = self.shared.cache().take(key, self.shared.now());
            let Some(mut used) = taken else { break };
            let s = &mut used.conn;
            if s.peer_gone().await {
                stale += 1;
                info!(event = "cached_session_stale", host = %key.addr, reason = "closed by the server");
                continue;
            }
            if let Err(f) = s.reset().await {
                stale += 1;
                info!(event = "cached_session_stale", host = %key.addr, reason = %f.reason);
                continue;
            }
            let result = s.transaction(msg).await;
            // Broken before the server could have taken the message: the
            // session was stale, not the message at fault.
            if let Err(f) = &result
                && !f.permanent
                && f.code.is_none()
                && !s.data_sent()
            {
                stale += 1;
                info!(event = "cached_session_stale", host = %key.addr, reason = %f.reason);
                continue;
            }
            used.transactions += 1;
            self.give_back(key, used, result.is_ok(), per_connection)
                .await;
            return Ok(Carried {
                result,
                reused: true,
                opened: false,
                stale,
            });
        }
        may_open.await?;
        let mut session = match establish(key.addr, msg, tls, &key.tls_name).await {
            Ok(s) => s,
            Err(f) => {
                return Ok(Carried {
                    result: Err(f),
                    reused: false,
                    opened: false,
                    stale,
                });
            }
        };
        let opened = self.shared.now();
        let result = session.transaction(msg).await;
        let used = Used {
            conn: session,
            opened,
            transactions: 1,
        };
        self.give_back(key, used, result.is_ok(), per_connection)
            .await;
        Ok(Carried {
            result,
            reused: false,
            opened: true,
            stale,
        })
    }

    /// After a transaction: keep the session for the next one, or close
    /// it. `answered`: the transaction ended with replies rather than a
    /// failure (a failed one is dropped without QUIT, as it was before
    /// sessions were kept).
    async fn give_back(
        &self,
        key: &ConnKey,
        used: Used<SmtpSession>,
        answered: bool,
        per_connection: u32,
    ) {
        if !answered {
            return;
        }
        if !used.conn.reusable() {
            used.conn.quit().await;
            return;
        }
        let put = self
            .shared
            .cache()
            .put(key.clone(), used, per_connection, self.shared.now());
        match put {
            Put::Kept { evicted } => {
                self.start_closer();
                self.shared.given_back.notify_one();
                if let Some(s) = evicted {
                    s.quit().await;
                }
            }
            Put::Refused { conn, .. } => conn.quit().await,
        }
    }

    /// The task that closes idle sessions, started with the first one.
    fn start_closer(&self) {
        let mut closer = self.closer.lock().unwrap_or_else(|e| e.into_inner());
        if closer.is_none() {
            *closer = Some(tokio::spawn(close_idle(self.shared.clone())));
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Some(task) = self.closer.lock().ok().and_then(|mut c| c.take()) {
            task.abort();
        }
        // Whatever is still idle is closed with the socket.
        drop(self.shared.cache().drain());
    }
}

/// Close each idle session with QUIT when its time is up; sleep until the
/// next one's or until a session is given back.
async fn close_idle(shared: Arc<Shared>) {
    loop {
        let now = shared.now();
        let (expired, next) = {
            let mut cache = shared.cache();
            (cache.expired(now), cache.next_expiry())
        };
        let mut quits = JoinSet::new();
        for s in expired {
            quits.spawn(s.quit());
        }
        while quits.join_next().await.is_some() {}
        match next {
            Some(at) => {
                let wait = Duration::from_millis(at.saturating_sub(shared.now()));
                let _ = tokio::time::timeout(wait, shared.given_back.notified()).await;
            }
            None => shared.given_back.notified().await,
        }
    }
}
