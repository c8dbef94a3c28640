//! Every stage of the way in, driven in-process: DNS answered from a table
//! (`TableChecks`), the queue in memory (`MemoryIntake`), admission state
//! in memory, accounts and aliases in a temporary directory. Each test is
//! one behaviour, in milliseconds.

mod connect;
mod containment;
mod data;
mod mail_rcpt;

pub(crate) use crate::fakes::{MemoryIntake, TableChecks, results};
use crate::{ClassOfService, Connection, Forwarding, Inbound, StageResult, Submission};
use portcullis_authn::{AuthResult, DmarcPolicy};
use portcullis_config::{Config, ListenerRole};
use portcullis_queue::Envelope;
use portcullis_smtp::reply::canned;
use portcullis_smtp::{Mailbox, Peer, Recipient, Reply};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

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
/// A domain list (`dbl.test`) whose listings only label the message.
pub(crate) fn labelling_domain_list() -> portcullis_config::DnsList {
    portcullis_config::DnsList {
        zone: "dbl.test".into(),
        name: None,
        kind: portcullis_config::ListKind::Domain,
        action: portcullis_config::ListAction::Label,
        dynamic: false,
        min_rating: None,
    }
}

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
    let containment = crate::Containment::new(state.clone(), intake.clone(), metrics.clone());
    let inbound = Inbound {
        containment: Arc::new(containment),
        checks: Arc::new(checks),
        queue: intake.clone(),
        admission: ClassOfService::new(&config, state, metrics.clone()).unwrap(),
        submission: Submission::new(&config, metrics.clone()).unwrap(),
        forwarding: Forwarding::new(&config).unwrap(),
        milters: portcullis_milter::Milters::new(&config.milters, metrics.clone()),
        metrics,
        dmarc_observations: Some(intake.clone()),
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
        self.submission_from(CLIENT)
    }

    pub fn submission_from(&self, peer: &str) -> Connection {
        let peer: SocketAddr = peer.parse().unwrap();
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
pub(crate) fn transaction(from: Option<&str>, to: &[&str], body: &str) -> crate::Transaction {
    crate::Transaction {
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
        findings: Default::default(),
    }
}

/// MAIL FROM, and the session's transaction it opens when accepted,
/// carrying what the way in found.
pub(crate) async fn open(
    c: &mut Connection,
    account: Option<&str>,
    from: Option<&str>,
) -> StageResult<crate::Transaction> {
    let mut txn = transaction(from, &[], "");
    txn.findings = c
        .mail(
            account,
            &txn.helo,
            from.map(mailbox).as_ref(),
            &Default::default(),
            None,
        )
        .await?;
    txn.auth = account.map(str::to_owned);
    Ok(txn)
}

/// RCPT TO, the recipient added to the transaction when accepted.
pub(crate) async fn add(
    c: &mut Connection,
    txn: &mut crate::Transaction,
    to: &str,
) -> StageResult<()> {
    let to = mailbox(to);
    c.rcpt(txn, &to).await?;
    txn.recipients.push(Recipient {
        mailbox: to,
        params: Default::default(),
    });
    Ok(())
}

/// The reply the session gives for a stage's result at the end of data.
pub(crate) fn reply(queued: StageResult<String>) -> Reply {
    queued.map_or_else(|r| r, |id| canned::queued(&id))
}

/// MAIL, each RCPT, then the end of data, as the driver calls them; the
/// reply the client gets.
pub(crate) async fn send(c: &mut Connection, from: Option<&str>, to: &[&str], body: &str) -> Reply {
    let mut txn = open(c, None, from).await.expect("MAIL FROM accepted");
    for rcpt in to {
        add(c, &mut txn, rcpt).await.expect("RCPT TO accepted");
    }
    txn.body = body.replace('\n', "\r\n").into_bytes();
    reply(c.data(txn).await)
}

pub(crate) const BODY: &str = "From: <a@sender.test>\nSubject: hi\n\nhello\n";
