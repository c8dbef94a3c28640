//! Connections kept between transactions (`client/pool.rs`), through the
//! router: against a scripted SMTP server on loopback that counts what it
//! sees.

use super::tests::{AuthenticTlsa, Table, parcel, router, to};
use super::*;
use crate::client::{CacheSettings, Pool};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// What the scripted server counts.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    messages: AtomicUsize,
    rsets: AtomicUsize,
    quits: AtomicUsize,
}

/// How the scripted server answers RSET.
#[derive(Clone, Copy)]
enum OnRset {
    Accept,
    /// `421` and close, as a server that timed the session out does.
    CloseWith421,
}

/// A plain SMTP server (no STARTTLS) that takes every message.
async fn mx(on_rset: OnRset) -> (SocketAddr, Arc<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let counts = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counts.connections.fetch_add(1, SeqCst);
            let counts = counts.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                let _ = write.write_all(b"220 mx.example ESMTP\r\n").await;
                let mut in_data = false;
                while let Ok(Some(line)) = lines.next_line().await {
                    let (reply, close): (&[u8], bool) = match (in_data, line.as_str()) {
                        (true, ".") => {
                            in_data = false;
                            counts.messages.fetch_add(1, SeqCst);
                            (b"250 2.0.0 taken\r\n", false)
                        }
                        (true, _) => continue,
                        (false, "DATA") => {
                            in_data = true;
                            (b"354 go on\r\n", false)
                        }
                        (false, "RSET") => {
                            counts.rsets.fetch_add(1, SeqCst);
                            match on_rset {
                                OnRset::Accept => (b"250 2.0.0 ok\r\n", false),
                                OnRset::CloseWith421 => (b"421 4.4.2 timeout\r\n", true),
                            }
                        }
                        (false, "QUIT") => {
                            counts.quits.fetch_add(1, SeqCst);
                            (b"221 2.0.0 bye\r\n", true)
                        }
                        (false, _) => (b"250 ok\r\n", false),
                    };
                    if write.write_all(reply).await.is_err() || close {
                        break;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// A router whose domains `open.example` and `strict.example` both have
/// `mx` as their one MX host, `mx.example`: named for `strict.example` by
/// a validated answer (DANE may apply), for `open.example` not.
fn router_to(name: &str, mx: SocketAddr) -> Router {
    let host = |secure| {
        vec![crate::MxHost {
            name: "mx.example".into(),
            preference: 10,
            addrs: vec![mx.ip()],
            secure,
        }]
    };
    let (mut r, _) = router(
        name,
        Table(vec![
            ("open.example", Route::Hosts(host(false))),
            ("strict.example", Route::Hosts(host(true))),
        ]),
    );
    r.config.delivery.port = mx.port();
    r
}

async fn send_to(r: &Router, address: &str) -> RcptOutcome {
    let rcpts = to(&[address]);
    let legs = r.legs(&rcpts);
    r.carry(&parcel(), &rcpts, &legs[0]).await.remove(0)
}

fn delivered(o: &RcptOutcome) -> bool {
    matches!(o, RcptOutcome::Delivered(_))
}

#[tokio::test]
async fn the_next_message_to_the_same_host_goes_over_the_kept_connection() {
    let (addr, seen) = mx(OnRset::Accept).await;
    let metrics = Arc::new(Metrics::default());
    let r = router_to("reuse", addr).with_metrics(metrics.clone());
    for _ in 0..3 {
        assert!(delivered(&send_to(&r, "x@open.example").await));
    }
    assert_eq!(seen.connections.load(SeqCst), 1);
    assert_eq!(seen.messages.load(SeqCst), 3);
    // RSET before each transaction on the kept connection.
    assert_eq!(seen.rsets.load(SeqCst), 2);
    let text = metrics.render(&[]);
    assert!(
        text.contains("portcullis_delivery_connections_reused_total{} 2")
            && text.contains("portcullis_delivery_connections_opened_total{} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn with_one_message_per_connection_every_message_opens_its_own_and_quits() {
    let (addr, seen) = mx(OnRset::Accept).await;
    let mut r = router_to("one-per-connection", addr);
    r.config.delivery.messages_per_connection = 1;
    r.sites = Arc::new(SiteGate::new(&r.config));
    for _ in 0..3 {
        assert!(delivered(&send_to(&r, "x@open.example").await));
    }
    assert_eq!(seen.connections.load(SeqCst), 3);
    assert_eq!(seen.quits.load(SeqCst), 3);
    assert_eq!(seen.rsets.load(SeqCst), 0);
}

/// A message to `open.example` goes in clear over a new connection; one
/// to `strict.example`, which `r` holds to TLS, must not take that
/// connection: it opens its own, finds no STARTTLS, and waits (4.7.10).
async fn assert_the_clear_connection_is_not_taken_for_tls(r: &Router, seen: &Seen) {
    assert!(delivered(&send_to(r, "x@open.example").await));
    let o = send_to(r, "y@strict.example").await;
    assert!(
        matches!(&o, RcptOutcome::Temporary(a) if a.status == Status(4, 7, 10)),
        "{o:?}"
    );
    assert_eq!(seen.connections.load(SeqCst), 2);
    assert_eq!(seen.messages.load(SeqCst), 1);
}

#[tokio::test]
async fn a_connection_kept_under_opportunistic_tls_does_not_carry_mail_that_requires_tls() {
    let (addr, seen) = mx(OnRset::Accept).await;
    let mut r = router_to("require-tls-for", addr);
    r.config.delivery.require_tls_for = vec!["strict.example".into()];
    assert_the_clear_connection_is_not_taken_for_tls(&r, &seen).await;
}

#[tokio::test]
async fn a_connection_kept_without_dane_does_not_carry_mail_dane_holds_to_tls() {
    let (addr, seen) = mx(OnRset::Accept).await;
    // mx.example has TLSA records, but only strict.example's MX answer
    // was validated: DANE holds its mail, open.example's goes as it can.
    let r = router_to("dane-after-plain", addr).with_tlsa(Arc::new(AuthenticTlsa::default()));
    assert_the_clear_connection_is_not_taken_for_tls(&r, &seen).await;
}

#[tokio::test]
async fn a_kept_connection_the_server_closes_at_rset_is_replaced_and_the_message_delivered() {
    let (addr, seen) = mx(OnRset::CloseWith421).await;
    let metrics = Arc::new(Metrics::default());
    let r = router_to("stale", addr).with_metrics(metrics.clone());
    assert!(delivered(&send_to(&r, "x@open.example").await));
    let o = send_to(&r, "y@open.example").await;
    assert!(delivered(&o), "{o:?}");
    assert_eq!(seen.connections.load(SeqCst), 2);
    assert_eq!(seen.messages.load(SeqCst), 2);
    assert!(
        metrics
            .render(&[])
            .contains("portcullis_delivery_connections_stale_total{} 1")
    );
}

#[tokio::test]
async fn an_idle_connection_is_closed_with_quit_when_its_idle_time_is_up() {
    let (addr, seen) = mx(OnRset::Accept).await;
    let mut r = router_to("idle", addr);
    r.pool = Pool::new(CacheSettings {
        idle_ms: 50,
        max_age_ms: 300_000,
        capacity: 8,
    });
    assert!(delivered(&send_to(&r, "x@open.example").await));
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while seen.quits.load(SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "no QUIT after the idle time");
    // The next message opens a new connection.
    assert!(delivered(&send_to(&r, "y@open.example").await));
    assert_eq!(seen.connections.load(SeqCst), 2);
}

#[tokio::test]
async fn transactions_over_a_kept_connection_are_not_held_by_the_connection_rate() {
    let (addr, seen) = mx(OnRset::Accept).await;
    let mut r = router_to("conn-rate", addr);
    r.config.delivery.connections_per_minute = 1;
    r.sites = Arc::new(SiteGate::new(&r.config));
    for _ in 0..3 {
        assert!(delivered(&send_to(&r, "x@open.example").await));
    }
    assert_eq!(seen.connections.load(SeqCst), 1);
    assert_eq!(seen.messages.load(SeqCst), 3);
}

#[tokio::test]
async fn a_new_connection_past_the_connection_rate_sends_the_message_back_untried() {
    let (addr, seen) = mx(OnRset::Accept).await;
    let mut r = router_to("conn-rate-new", addr);
    r.config.delivery.connections_per_minute = 1;
    r.config.delivery.messages_per_connection = 1;
    r.sites = Arc::new(SiteGate::new(&r.config));
    assert!(delivered(&send_to(&r, "x@open.example").await));
    let RcptOutcome::Temporary(a) = send_to(&r, "x@open.example").await else {
        panic!("the second connection of the minute was opened");
    };
    assert!(a.held_back(), "not tried, no attempt counted: {a:?}");
    assert!(a.text.ends_with("1 connections/min"), "{}", a.text);
    assert_eq!(seen.connections.load(SeqCst), 1);
}

#[tokio::test]
async fn a_message_the_connection_rate_sent_back_leaves_no_answer_on_the_site() {
    let (addr, _seen) = mx(OnRset::Accept).await;
    let mut r = router_to("conn-rate-view", addr);
    r.config.delivery.connections_per_minute = 1;
    r.config.delivery.messages_per_connection = 1;
    r.sites = Arc::new(SiteGate::new(&r.config));
    assert!(delivered(&send_to(&r, "x@open.example").await));
    assert!(!delivered(&send_to(&r, "x@open.example").await));
    let views = r.sites().views();
    assert_eq!(views.len(), 1);
    assert!(
        views[0].last_answers.is_empty(),
        "{:?}",
        views[0].last_answers
    );
}
