//! The router's choices, with a table for DNS and real Maildirs.

use super::*;
use std::path::PathBuf;

/// Routes from a table; a domain not in it does not exist.
struct Table(Vec<(&'static str, Route)>);

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

fn router(name: &str, table: Table) -> (Router, PathBuf) {
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
