//! One way to reach a running server. The operator's operations on live
//! state (flush, hold, release and delete a queued message; block, list
//! and report in the admission state) are methods of one [`Control`]
//! handle, which the admin API calls in-process and the control socket
//! (`DATA/control.sock`, mode 0600) serves to the CLI, one JSON request
//! and answer per line. When no server answers, the CLI takes its offline
//! path (the spool and the state on disk, or Redis) instead.
//!
//! This crate decides nothing about mail: it forwards the operator's
//! request to the queue or the state, and says what came of it.

mod client;
mod owner;
mod socket;

pub use client::{Client, ClientError};
pub use owner::{Ownership, OwnershipError, claim, give_to_owner, lock_path, server_running};
pub use socket::{SocketError, bind, socket_path};

use portcullis_admission::{BlockEntry, Reputation, StateCommand};
use portcullis_config::Cidr;
use portcullis_queue::Queue;
use portcullis_state::Store;
use serde::{Deserialize, Serialize};

/// What an operator asks of a running server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The live queue, one entry per message ([`queue_entry`]).
    QueueList,
    QueueFlush,
    QueueHold {
        id: String,
    },
    QueueRelease {
        id: String,
    },
    QueueDelete {
        id: String,
    },
    StateApply {
        command: StateCommand,
    },
    StateBlocklist,
    StateKnown,
    StateReputations,
    StateReputation {
        key: String,
    },
    /// The CLI wrote a file the server reads: can the server load it?
    FileCheck {
        file: LiveFile,
    },
    /// Run one of the server's periodic jobs now.
    Run {
        job: Job,
    },
    /// Every suppressed address.
    SuppressionList,
    SuppressionShow {
        address: String,
    },
    /// Take an address off the suppression list.
    SuppressionDel {
        address: String,
    },
    /// The outbound sites: limits, rate in force, pauses, last answers.
    Sites,
    /// Containment of one submitting account (issue 29).
    Account {
        action: AccountAction,
        account: String,
    },
    /// Every account contained now, with the evidence.
    Contained,
}

/// What the operator does to a submitting account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountAction {
    /// Its state, signals and queued messages.
    Show,
    /// New submissions deferred, queued messages held.
    Hold,
    /// Held mail leaves, counters start again.
    Release,
}

/// A boxed future, as the doors below answer.
pub type Pending<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// The containment room, as the operator reaches it (its decisions are
/// its own; this crate only forwards).
pub trait AccountDoor: Send + Sync {
    fn account<'a>(
        &'a self,
        action: AccountAction,
        account: &'a str,
    ) -> Pending<'a, Result<serde_json::Value, String>>;
    fn contained(&self) -> Pending<'_, serde_json::Value>;
}

/// The server's periodic jobs an operator may run at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Job {
    /// End the DMARC aggregate report period and send its reports.
    DmarcReports,
    /// End the TLS-RPT period (RFC 8460) and send its reports.
    TlsReports,
    /// Order a certificate from the ACME CA now (`portcullis acme
    /// renew`), answered once the order has succeeded or failed.
    AcmeRenew,
}

impl Job {
    /// Why a server without this job's task refuses it.
    fn not_running(self) -> &'static str {
        match self {
            Job::DmarcReports => {
                "this server sends no DMARC reports ([dmarc] send_reports = false)"
            }
            Job::AcmeRenew => "this server has no [acme] section: its certificate is not from ACME",
            Job::TlsReports => {
                "this server sends no TLS reports ([delivery] tls_rpt_interval_secs = 0)"
            }
        }
    }
}

/// One message of the live queue as the admin API and the CLI show it.
pub fn queue_entry(m: &portcullis_queue::QueuedMessage, now: u64) -> serde_json::Value {
    let e = &m.message.envelope;
    serde_json::json!({
        "id": e.id,
        "size": m.message.data.len(),
        "sender": e.sender,
        "recipients": e.recipients.iter().map(|r| r.address.clone()).collect::<Vec<_>>(),
        "received_at": e.received_at,
        "held": m.state == portcullis_queue::QueueState::Held,
        "state": m.state,
        "attempts": m.attempts,
        "next_attempt": m.next_attempt_in.map(|d| now + d.as_secs()),
        "waiting_because": m.reason,
    })
}

/// How a [`Request::Run`] reaches the task that does the job: it sends
/// where the answer goes, and the task answers when the job is done.
pub type JobDoor =
    tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<Result<serde_json::Value, String>>>;

/// A door and the task's end of it.
pub fn job_door() -> (
    JobDoor,
    tokio::sync::mpsc::Receiver<tokio::sync::oneshot::Sender<Result<serde_json::Value, String>>>,
) {
    tokio::sync::mpsc::channel(4)
}

/// Files the CLI writes and the running server reads (again whenever
/// they change): a change the server cannot load must fail loudly, not
/// sit on disk while the server keeps the old content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LiveFile {
    Accounts,
    DkimKeys,
    Aliases,
}

impl LiveFile {
    pub fn name(self) -> &'static str {
        match self {
            LiveFile::Accounts => "the accounts (accounts.json)",
            LiveFile::DkimKeys => "the DKIM keys (dkim/)",
            LiveFile::Aliases => "the aliases (aliases.json)",
        }
    }
}

/// The server's side of a [`Request::FileCheck`]: load the file as the
/// server itself would (its user, its paths) and say what it holds.
pub trait FileLoader: Send + Sync {
    fn check(&self, file: LiveFile) -> Result<String, String>;
}

/// Why a request was refused: what the operator reads.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ControlError {
    #[error("no message {0} in the queue")]
    NoSuchMessage(String),
    #[error("no reputation for {0}")]
    NoReputation(String),
    #[error("{0} is not suppressed")]
    NotSuppressed(String),
    #[error("{0}")]
    Refused(String),
    #[error("the spool failed: {0}")]
    Spool(String),
    #[error("the running server cannot load {0}: {1}")]
    CannotLoad(String, String),
    #[error("no new certificate (the one in use stays): {0}")]
    NotRenewed(String),
}

/// The operations, on the live queue and state.
#[derive(Clone)]
pub struct Control {
    pub queue: Queue,
    pub state: Store,
    /// None where no file-reading rooms run (the tests of this crate).
    pub files: Option<std::sync::Arc<dyn FileLoader>>,
    /// The doors of the tasks that run [`Job`]s; a job without one is
    /// refused.
    pub jobs: std::collections::HashMap<Job, JobDoor>,
    /// Containment (None where it does not run: this crate's tests).
    pub accounts: Option<std::sync::Arc<dyn AccountDoor>>,
    /// The outbound sites' live state (None where nothing is delivered:
    /// the tests of this crate).
    pub sites: Option<std::sync::Arc<portcullis_delivery::SiteGate>>,
}

impl Control {
    /// Answer one request; the value is what the caller prints or returns.
    pub async fn handle(&self, r: Request) -> Result<serde_json::Value, ControlError> {
        use serde_json::{json, to_value};
        Ok(match r {
            Request::QueueList => {
                let now = portcullis_config::clock::now_secs();
                let list = self.queue_list().await;
                json!(list.iter().map(|m| queue_entry(m, now)).collect::<Vec<_>>())
            }
            Request::QueueFlush => {
                self.queue.flush();
                json!({ "flush": "requested" })
            }
            Request::QueueHold { id } => self.hold(&id, true).await?,
            Request::QueueRelease { id } => self.hold(&id, false).await?,
            Request::QueueDelete { id } => self.delete(&id).await?,
            Request::StateApply { command } => {
                self.apply(&command).await?;
                json!({ "applied": true })
            }
            Request::StateBlocklist => to_value(self.blocklist().await).unwrap_or_default(),
            Request::StateKnown => to_value(self.state.known().await).unwrap_or_default(),
            Request::StateReputations => {
                to_value(self.state.reputations().await).unwrap_or_default()
            }
            Request::StateReputation { key } => {
                to_value(self.reputation(&key).await?).unwrap_or_default()
            }
            Request::FileCheck { file } => {
                let loaded = match &self.files {
                    Some(f) => f.check(file),
                    None => Err("this server reads no such file".to_owned()),
                };
                let held =
                    loaded.map_err(|e| ControlError::CannotLoad(file.name().to_owned(), e))?;
                json!({ "loaded": held })
            }
            Request::Run { job } => self.run(job).await?,
            Request::SuppressionList => {
                to_value(self.state.suppressions().await).unwrap_or_default()
            }
            Request::SuppressionShow { address } => {
                to_value(self.suppression(&address).await?).unwrap_or_default()
            }
            Request::SuppressionDel { address } => {
                if !self.state.unsuppress(&address).await {
                    return Err(ControlError::NotSuppressed(address));
                }
                tracing::info!(event = "suppression_lifted", address = %address);
                json!({ "deleted": address })
            }
            Request::Sites => to_value(self.sites()).unwrap_or_default(),
            Request::Account { action, account } => self.account(action, &account).await?,
            Request::Contained => self.contained().await?,
        })
    }

    fn account_door(&self) -> Result<&dyn AccountDoor, ControlError> {
        self.accounts
            .as_deref()
            .ok_or_else(|| ControlError::Refused("containment does not run here".into()))
    }

    /// Show, hold or release one account.
    pub async fn account(
        &self,
        action: AccountAction,
        account: &str,
    ) -> Result<serde_json::Value, ControlError> {
        tracing::info!(event = "account_command", action = ?action, account = %account);
        self.account_door()?
            .account(action, account)
            .await
            .map_err(ControlError::Refused)
    }

    /// Every account contained now.
    pub async fn contained(&self) -> Result<serde_json::Value, ControlError> {
        Ok(self.account_door()?.contained().await)
    }

    /// One suppressed address.
    pub async fn suppression(
        &self,
        address: &str,
    ) -> Result<portcullis_shaping::Suppression, ControlError> {
        self.state
            .suppressed(address)
            .await
            .ok_or_else(|| ControlError::NotSuppressed(address.to_owned()))
    }

    /// Every outbound site this node knows.
    pub fn sites(&self) -> Vec<portcullis_shaping::SiteView> {
        self.sites.as_ref().map(|s| s.views()).unwrap_or_default()
    }

    /// Hand the job to its task and wait for the task's answer.
    async fn run(&self, job: Job) -> Result<serde_json::Value, ControlError> {
        let Some(door) = self.jobs.get(&job) else {
            return Err(ControlError::Refused(job.not_running().into()));
        };
        let gone = || ControlError::Refused(format!("the task for {job:?} has stopped"));
        let (reply, outcome) = tokio::sync::oneshot::channel();
        door.send(reply).await.map_err(|_| gone())?;
        outcome.await.map_err(|_| gone())?.map_err(|e| match job {
            Job::AcmeRenew => ControlError::NotRenewed(e),
            Job::DmarcReports | Job::TlsReports => ControlError::Refused(e),
        })
    }

    /// The live queue, each message where it stands (the scheduler's
    /// view, not the spool's files).
    pub async fn queue_list(&self) -> Vec<portcullis_queue::QueuedMessage> {
        self.queue.list().await
    }

    /// One message of the live queue.
    pub async fn queue_show(
        &self,
        id: &str,
    ) -> Result<portcullis_queue::QueuedMessage, ControlError> {
        self.queue
            .list()
            .await
            .into_iter()
            .find(|m| m.message.envelope.id == id)
            .ok_or_else(|| ControlError::NoSuchMessage(id.to_owned()))
    }

    pub async fn hold(&self, id: &str, held: bool) -> Result<serde_json::Value, ControlError> {
        match self.queue.set_held(id, held).await {
            Ok(true) => Ok(serde_json::json!({ "id": id, "held": held })),
            Ok(false) => Err(ControlError::NoSuchMessage(id.to_owned())),
            Err(e) => Err(ControlError::Spool(e.to_string())),
        }
    }

    pub async fn delete(&self, id: &str) -> Result<serde_json::Value, ControlError> {
        match self.queue.delete(id).await {
            Ok(true) => Ok(serde_json::json!({ "deleted": id })),
            Ok(false) => Err(ControlError::NoSuchMessage(id.to_owned())),
            Err(e) => Err(ControlError::Spool(e.to_string())),
        }
    }

    pub async fn apply(&self, command: &StateCommand) -> Result<(), ControlError> {
        tracing::info!(event = "state_command", command = ?command);
        self.state
            .apply(command)
            .await
            .map_err(ControlError::Refused)
    }

    pub async fn blocklist(&self) -> Vec<(Cidr, BlockEntry)> {
        self.state.blocklist().await
    }

    pub async fn reputation(&self, key: &str) -> Result<Reputation, ControlError> {
        self.state
            .reputation(key)
            .await
            .ok_or_else(|| ControlError::NoReputation(key.to_owned()))
    }
}

/// One answer on the socket: the value, or why not.
#[derive(Debug, Serialize, Deserialize)]
pub struct Answer {
    #[serde(default)]
    pub value: serde_json::Value,
    #[serde(default)]
    pub error: Option<ControlError>,
}
