//! Every stage of the way in, driven in-process: DNS answered from a table
//! (`TableChecks`), the queue in memory (`MemoryIntake`), admission state
//! in memory, accounts and aliases in a temporary directory. Each test is
//! one behaviour, in milliseconds.

mod connect;
mod data;
mod mail_rcpt;

use crate::{Checks, ClassOfService, Connection, Forwarding, Inbound, Intake, Submission};
use portcullis_authn::{
    AuthResult, DkimKeys, DmarcPolicy, Listing, MessageResults, RatingAnswer, SpfCheck, SpfOutput,
};
use portcullis_config::{Config, ListenerRole};
use portcullis_delivery::BoxFuture;
use portcullis_queue::{Bounce, Envelope, SpoolError, StoredMessage};
use portcullis_smtp::{Mailbox, Peer, Recipient, Transaction};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// DNS answers from a table.
#[derive(Default)]
pub(crate) struct TableChecks {
    pub iprev: Option<(AuthResult, Option<String>)>,
    /// Query names (RFC 5782) that are listed.
    pub listed: HashSet<String>,
    /// SPF result per MAIL FROM domain (none when absent).
    pub spf: HashMap<String, AuthResult>,
    /// What check_message answers.
    pub message: Option<MessageResults>,
}

impl Checks for TableChecks {
    fn iprev(&self, _: IpAddr) -> BoxFuture<'_, (AuthResult, Option<String>)> {
        let r = self
            .iprev
            .clone()
            .unwrap_or((AuthResult::Pass, Some("client.test".into())));
        Box::pin(async move { r })
    }

    fn dns_list<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Listing> {
        let listed = self.listed.contains(name.trim_end_matches('.'));
        Box::pin(async move {
            if listed {
                Listing::Listed
            } else {
                Listing::NotListed
            }
        })
    }

    fn domain_rating<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, RatingAnswer> {
        Box::pin(async { RatingAnswer::Unrated })
    }

    fn spf<'a>(
        &'a self,
        ip: IpAddr,
        helo: &'a str,
        sender: Option<&'a str>,
        _: u64,
    ) -> BoxFuture<'a, SpfCheck> {
        let domain = sender
            .and_then(|s| s.rsplit_once('@'))
            .map_or(helo, |(_, d)| d);
        let r = self.spf.get(domain).copied().unwrap_or(AuthResult::None);
        let check = SpfCheck {
            output: r.spf_output(domain),
            explanation: None,
            reason: String::new(),
            helo_result: None,
            identity: sender.unwrap_or_default().to_owned(),
            helo: helo.to_owned(),
            ip,
        };
        Box::pin(async move { check })
    }

    fn helo_check<'a>(&'a self, _: IpAddr, _: &'a str, _: u64) -> BoxFuture<'a, Option<SpfOutput>> {
        Box::pin(async { None })
    }

    fn check_message<'a>(
        &'a self,
        _: &'a [u8],
        spf: &'a SpfCheck,
    ) -> BoxFuture<'a, MessageResults> {
        let r = self
            .message
            .clone()
            .unwrap_or_else(|| results(spf.result(), AuthResult::None, AuthResult::None));
        Box::pin(async move { r })
    }

    fn arc_seal<'a>(
        &'a self,
        _: &'a [u8],
        _: &'a SpfCheck,
        _: &'a DkimKeys,
        domain: &'a str,
    ) -> BoxFuture<'a, Result<String, String>> {
        let seal = format!("ARC-Seal: i=1; d={domain}\r\n");
        Box::pin(async move { Ok(seal) })
    }
}

/// Message results with an Authentication-Results header.
pub(crate) fn results(spf: AuthResult, dkim: AuthResult, dmarc: AuthResult) -> MessageResults {
    MessageResults {
        spf,
        dkim,
        dkim_domains: Vec::new(),
        arc: AuthResult::None,
        arc_sealer: None,
        dmarc,
        dmarc_policy: DmarcPolicy::None,
        from_domain: "sender.test".into(),
        header: format!("Authentication-Results: mx.test; spf={}\r\n", spf.as_str()),
    }
}

/// The queue in memory.
#[derive(Default)]
pub(crate) struct MemoryIntake {
    pub queued: Mutex<Vec<(Envelope, Arc<Vec<u8>>)>>,
    pub bounced: Mutex<Vec<Bounce>>,
    pub next: Mutex<u64>,
    /// Answer every enqueue with "disk full".
    pub full: bool,
}

impl Intake for MemoryIntake {
    fn new_id(&self) -> String {
        let mut n = self.next.lock().unwrap();
        *n += 1;
        format!("ID{n:04}")
    }

    fn enqueue(
        &self,
        envelope: Envelope,
        data: Arc<Vec<u8>>,
    ) -> BoxFuture<'_, Result<(), SpoolError>> {
        let out = if self.full {
            Err(SpoolError::Io {
                path: "/spool".into(),
                source: Arc::new(std::io::Error::from_raw_os_error(28)),
            })
        } else {
            self.queued.lock().unwrap().push((envelope, data));
            Ok(())
        };
        Box::pin(async move { out })
    }

    fn bounce<'a>(&'a self, _: &'a StoredMessage, failed: &'a [Bounce]) -> BoxFuture<'a, ()> {
        self.bounced.lock().unwrap().extend(failed.iter().cloned());
        Box::pin(async {})
    }
}

/// A configured way in over the fakes.
pub(crate) struct World {
    pub config: Arc<Config>,
    pub inbound: Arc<Inbound>,
    pub intake: Arc<MemoryIntake>,
    pub dir: PathBuf,
}

fn temp_dir() -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("pc-pipeline-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A config for local.test, where every local part is a mailbox, with
/// no rate limits unless a test sets them.
pub(crate) fn config() -> Config {
    let mut c = Config::embedded_default(temp_dir(), "mx.test".into());
    c.local_domains = vec!["local.test".into()];
    c.recipient_policy
        .insert("local.test".into(), portcullis_config::RecipientPolicy::Any);
    for class in c.classes.values_mut() {
        *class = Default::default();
    }
    c.admission.per_range_max_connections = 0;
    c.admission.per_range_connections_per_minute = 0;
    c
}

pub(crate) fn world_with(config: Config, checks: TableChecks, intake: MemoryIntake) -> World {
    let metrics = Arc::new(portcullis_metrics::Metrics::default());
    let state = portcullis_state::Store::in_memory(config.reputation.clone());
    let intake = Arc::new(intake);
    let inbound = Inbound {
        checks: Arc::new(checks),
        queue: intake.clone(),
        admission: ClassOfService::new(&config, state, metrics.clone()).unwrap(),
        submission: Submission::new(&config, metrics.clone()).unwrap(),
        forwarding: Forwarding::new(&config).unwrap(),
        metrics,
    };
    World {
        dir: config.data_dir.clone(),
        config: Arc::new(config),
        inbound: Arc::new(inbound),
        intake,
    }
}

pub(crate) fn world(checks: TableChecks) -> World {
    world_with(config(), checks, MemoryIntake::default())
}

pub(crate) const CLIENT: &str = "192.0.2.10:40000";

impl World {
    /// A port-25 connection from `CLIENT`, admitted by the class of service.
    pub async fn mx(&self) -> Connection {
        self.mx_from(CLIENT).await
    }

    pub async fn mx_from(&self, peer: &str) -> Connection {
        let peer: SocketAddr = peer.parse().unwrap();
        let gate = self
            .inbound
            .admit(ListenerRole::Mx, peer.ip())
            .await
            .expect("admitted");
        Connection::new(
            self.inbound.clone(),
            self.config.clone(),
            "s1".into(),
            ListenerRole::Mx,
            peer,
            gate,
        )
    }

    pub fn submission(&self) -> Connection {
        let peer: SocketAddr = CLIENT.parse().unwrap();
        Connection::new(
            self.inbound.clone(),
            self.config.clone(),
            "s2".into(),
            ListenerRole::Submission,
            peer,
            None,
        )
    }

    pub fn queued(&self) -> Vec<(Envelope, String)> {
        let q = self.intake.queued.lock().unwrap();
        q.iter()
            .map(|(e, d)| (e.clone(), String::from_utf8_lossy(d).into_owned()))
            .collect()
    }

    /// An account that owns its address, in the accounts file.
    pub fn account(&self, address: &str) {
        let path = self.dir.join("accounts.json");
        let mut store = portcullis_accounts::AccountStore::load(&path).unwrap();
        store.add(address, "a long password").unwrap();
        store.save().unwrap();
    }
}

pub(crate) fn mailbox(address: &str) -> Mailbox {
    let (local, domain) = address.rsplit_once('@').unwrap();
    Mailbox {
        local: local.into(),
        domain: domain.into(),
    }
}

/// A finished transaction, as the session hands it over at end of data.
pub(crate) fn transaction(from: Option<&str>, to: &[&str], body: &str) -> Transaction {
    Transaction {
        peer: Peer {
            addr: CLIENT.parse().unwrap(),
            ptr: None,
        },
        helo: "client.test".into(),
        esmtp: true,
        tls: None,
        auth: None,
        mail_from: from.map(mailbox),
        mail_params: Default::default(),
        recipients: to
            .iter()
            .map(|a| Recipient {
                mailbox: mailbox(a),
                params: Default::default(),
            })
            .collect(),
        body: body.replace('\n', "\r\n").into_bytes(),
    }
}

/// MAIL, each RCPT, then the end of data, as the driver calls them.
pub(crate) async fn send(
    c: &mut Connection,
    from: Option<&str>,
    to: &[&str],
    body: &str,
) -> portcullis_smtp::Reply {
    let verdict = c
        .mail(None, "client.test", from.map(mailbox).as_ref())
        .await;
    assert_eq!(
        verdict,
        portcullis_smtp::Verdict::Accept,
        "MAIL FROM {from:?}"
    );
    for (i, rcpt) in to.iter().enumerate() {
        let v = c.rcpt(None, &mailbox(rcpt), i).await;
        assert_eq!(v, portcullis_smtp::Verdict::Accept, "RCPT TO {rcpt}");
    }
    c.data(transaction(from, to, body)).await
}

pub(crate) const BODY: &str = "From: <a@sender.test>\nSubject: hi\n\nhello\n";
