//! The router's choices, with a table for DNS and real Maildirs.

use super::*;
use std::path::PathBuf;
use std::sync::Mutex;

/// Routes from a table; a domain not in it does not exist.
pub(super) struct Table(pub Vec<(&'static str, Route)>);

impl MxResolver for Table {
    fn route<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Route> {
        let found = self
            .0
            .iter()
            .find(|(d, _)| *d == domain)
            .map_or(Route::NoSuchDomain, |(_, r)| r.clone());
        Box::pin(async move { found })
    }
}

fn root(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("pc-router-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

pub(super) fn router(name: &str, table: Table) -> (Router, PathBuf) {
    let root = root(name);
    let mut c = Config::embedded_default(root.clone(), "mx.local.test".into());
    c.local_domains = vec!["local.test".into(), "lmtp.test".into()];
    c.lmtp
        .insert("lmtp.test".into(), "127.0.0.1:24".parse().unwrap());
    let boxes =
        Mailboxes::start(crate::MaildirStore::new(root.join("mail"), "mx.local.test")).unwrap();
    (Router::new(&c, boxes, Arc::new(table)).unwrap(), root)
}

pub(super) fn to(addresses: &[&str]) -> Vec<Addressee> {
    addresses
        .iter()
        .map(|a| Addressee {
            address: (*a).into(),
            folder: None,
        })
        .collect()
}

pub(super) fn parcel() -> Parcel {
    Parcel {
        id: "ID1".into(),
        sender: "a@remote.test".into(),
        data: Arc::new(b"Subject: x\r\n\r\nhi\r\n".to_vec()),
        smtputf8: false,
        eight_bit: false,
        require_tls: false,
    }
}

#[test]
fn one_leg_for_local_mailboxes_and_one_per_other_domain() {
    let (r, _) = router("legs", Table(vec![]));
    let rcpts = to(&[
        "u@local.test",
        "x@b.example",
        "v@LOCAL.test",
        "y@a.example",
        "z@b.example",
        "w@lmtp.test",
        "postmaster@mx.local.test",
    ]);
    let legs = r.legs(&rcpts);
    let shape: Vec<(&str, Vec<usize>)> = legs
        .iter()
        .map(|l| (l.name.as_str(), l.members.clone()))
        .collect();
    assert_eq!(
        shape,
        vec![
            ("mailboxes", vec![0, 2, 6]),
            ("lmtp.test", vec![5]),
            ("a.example", vec![3]),
            ("b.example", vec![1, 4]),
        ]
    );
}

#[tokio::test]
async fn local_recipients_land_in_their_maildirs() {
    let (r, root) = router("local", Table(vec![]));
    let rcpts = to(&["alice@local.test", "bob@local.test"]);
    let legs = r.legs(&rcpts);
    let out = r.carry(&parcel(), &rcpts, &legs[0]).await;
    assert!(
        out.iter().all(|o| matches!(o, RcptOutcome::Delivered(_))),
        "{out:?}"
    );
    for who in ["alice", "bob"] {
        let new = root.join("mail/local.test").join(who).join("new");
        assert_eq!(std::fs::read_dir(new).unwrap().count(), 1, "{who}");
    }
}

async fn outcome_for(domain: &'static str, route: Route) -> RcptOutcome {
    let (r, _) = router(domain, Table(vec![(domain, route)]));
    let rcpts = to(&[&format!("x@{domain}")]);
    let legs = r.legs(&rcpts);
    r.carry(&parcel(), &rcpts, &legs[0]).await.remove(0)
}

#[tokio::test]
async fn a_null_mx_fails_at_once_with_5_1_10() {
    let o = outcome_for("null.example", Route::NullMx).await;
    assert!(
        matches!(&o, RcptOutcome::Permanent(a) if a.status == Status(5, 1, 10)),
        "{o:?}"
    );
}

#[tokio::test]
async fn a_domain_that_does_not_exist_fails_with_5_1_2() {
    let o = outcome_for("gone.example", Route::NoSuchDomain).await;
    assert!(
        matches!(&o, RcptOutcome::Permanent(a) if a.status == Status(5, 1, 2)),
        "{o:?}"
    );
}

#[tokio::test]
async fn a_dns_failure_defers_with_4_4_3() {
    let o = outcome_for("flaky.example", Route::TempFail("SERVFAIL".into())).await;
    assert!(
        matches!(&o, RcptOutcome::Temporary(a) if a.status == Status(4, 4, 3)),
        "{o:?}"
    );
}

#[tokio::test]
async fn an_mx_that_refuses_connections_defers_with_4_4_1() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let host = crate::MxHost {
        name: "mx.down.example".into(),
        preference: 10,
        addrs: vec![addr.ip()],
        secure: false,
    };
    let (mut r, _) = router(
        "down",
        Table(vec![("down.example", Route::Hosts(vec![host]))]),
    );
    r.config.delivery.port = addr.port();
    let rcpts = to(&["x@down.example"]);
    let legs = r.legs(&rcpts);
    let o = r.carry(&parcel(), &rcpts, &legs[0]).await.remove(0);
    assert!(
        matches!(&o, RcptOutcome::Temporary(a) if a.status == Status(4, 4, 1)),
        "{o:?}"
    );
}

// --- DANE before MTA-STS (RFC 8461 §2), DANE only from a validated MX
// RRset (RFC 7672 §2.2) -----------------------------------------------

/// An MX host that speaks SMTP without STARTTLS and takes any message;
/// counts the connections it gets.
async fn plain_mx() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                let _ = write.write_all(b"220 plain.example ESMTP\r\n").await;
                let mut in_data = false;
                while let Ok(Some(line)) = lines.next_line().await {
                    let reply: &[u8] = match (in_data, line.as_str()) {
                        (true, ".") => {
                            in_data = false;
                            b"250 2.0.0 taken\r\n"
                        }
                        (true, _) => continue,
                        (false, "DATA") => {
                            in_data = true;
                            b"354 go on\r\n"
                        }
                        (false, "QUIT") => b"221 bye\r\n",
                        (false, _) => b"250 ok\r\n",
                    };
                    if write.write_all(reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, count)
}

/// Policies from a table.
struct Policies(Vec<(&'static str, portcullis_mtasts::Policy)>);

impl StsSource for Policies {
    fn policy<'a>(
        &'a self,
        domain: &'a str,
        _: u64,
    ) -> BoxFuture<'a, Option<portcullis_mtasts::Policy>> {
        let found = self
            .0
            .iter()
            .find(|(d, _)| *d == domain)
            .map(|(_, p)| p.clone());
        Box::pin(async move { found })
    }
}

fn enforce(mx: &str) -> portcullis_mtasts::Policy {
    portcullis_mtasts::Policy {
        mode: portcullis_mtasts::Mode::Enforce,
        mx: vec![mx.into()],
        max_age: 86400,
    }
}

/// Usable TLSA records for every host asked about; keeps the names.
#[derive(Default)]
pub(super) struct AuthenticTlsa(Mutex<Vec<String>>);

impl TlsaSource for AuthenticTlsa {
    fn tlsa<'a>(&'a self, host: &'a str) -> BoxFuture<'a, crate::dane::TlsaAnswer> {
        self.0.lock().unwrap().push(host.to_owned());
        let record = crate::dane::Tlsa {
            trust_anchor: false,
            spki: true,
            matching: portcullis_dns::hickory_resolver::proto::rr::rdata::tlsa::Matching::Sha256,
            data: vec![0; 32],
        };
        Box::pin(async move { crate::dane::TlsaAnswer::Usable(vec![record]) })
    }
}

/// A router for `dane.example`, whose one MX host `mx.dane.example` is
/// `mx` (secure or not) and whose enforced MTA-STS policy lists only
/// `mx.other.example`.
fn dane_router(name: &str, mx: SocketAddr, secure: bool, tlsa: Arc<AuthenticTlsa>) -> Router {
    let host = crate::MxHost {
        name: "mx.dane.example".into(),
        preference: 10,
        addrs: vec![mx.ip()],
        secure,
    };
    let (mut r, _) = router(
        name,
        Table(vec![("dane.example", Route::Hosts(vec![host]))]),
    );
    r.config.delivery.port = mx.port();
    r.with_tlsa(tlsa).with_sts(Arc::new(Policies(vec![(
        "dane.example",
        enforce("mx.other.example"),
    )])))
}

async fn send(r: &Router, parcel: &Parcel) -> RcptOutcome {
    let rcpts = to(&["x@dane.example"]);
    let legs = r.legs(&rcpts);
    r.carry(parcel, &rcpts, &legs[0]).await.remove(0)
}

#[tokio::test]
async fn dane_host_not_in_sts_policy_is_tried() {
    let (mx, connections) = plain_mx().await;
    let tlsa = Arc::new(AuthenticTlsa::default());
    let r = dane_router("dane-first", mx, true, tlsa.clone());
    let o = send(&r, &parcel()).await;
    // Tried, under DANE's rules: TLS is mandatory, and the host offers
    // none, so the message waits (4.7.10) rather than going in clear.
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(
        matches!(&o, RcptOutcome::Temporary(a) if a.status == Status(4, 7, 10)),
        "{o:?}"
    );
    assert_eq!(*tlsa.0.lock().unwrap(), vec!["mx.dane.example".to_owned()]);
}

#[tokio::test]
async fn a_host_from_an_insecure_mx_answer_gets_no_tlsa_lookup() {
    let (mx, connections) = plain_mx().await;
    let tlsa = Arc::new(AuthenticTlsa::default());
    let r = dane_router("insecure-mx", mx, false, tlsa.clone());
    let o = send(&r, &parcel()).await;
    // No DANE: the enforced policy, which does not list the host, holds.
    assert!(tlsa.0.lock().unwrap().is_empty());
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(
        matches!(&o, RcptOutcome::Temporary(a) if a.status == Status(4, 7, 5)
            && a.text.contains("matches its MTA-STS policy")),
        "{o:?}"
    );
}

#[tokio::test]
async fn an_insecure_mx_host_with_authentic_tlsa_is_not_held_to_them() {
    let (mx, _) = plain_mx().await;
    let tlsa = Arc::new(AuthenticTlsa::default());
    // No MTA-STS policy: without DANE, opportunistic TLS, so the host
    // that offers no STARTTLS takes the message in clear.
    let host = crate::MxHost {
        name: "mx.attacker.example".into(),
        preference: 10,
        addrs: vec![mx.ip()],
        secure: false,
    };
    let (mut r, _) = router(
        "insecure-mx-plain",
        Table(vec![("dane.example", Route::Hosts(vec![host]))]),
    );
    r.config.delivery.port = mx.port();
    let r = r.with_tlsa(tlsa.clone());
    let o = send(&r, &parcel()).await;
    assert!(matches!(&o, RcptOutcome::Delivered(_)), "{o:?}");
    assert!(tlsa.0.lock().unwrap().is_empty());
}

#[tokio::test]
async fn requiretls_goes_to_a_dane_host_the_policy_does_not_list() {
    let (mx, connections) = plain_mx().await;
    let r = dane_router("dane-requiretls", mx, true, Arc::default());
    let p = Parcel {
        require_tls: true,
        ..parcel()
    };
    let o = send(&r, &p).await;
    // Not bounced for want of validation (5.7.30): tried under DANE.
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(
        matches!(&o, RcptOutcome::Temporary(a) if a.status == Status(4, 7, 10)),
        "{o:?}"
    );
}
