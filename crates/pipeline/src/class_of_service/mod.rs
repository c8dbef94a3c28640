//! The class-of-service gate of a port-25 connection: the edge between a
//! session and the admission policy. At connect it identifies the client
//! as far as the address allows (known senders, allocation data, domain
//! ranges), checks the blocklist and takes concurrency slots; at MAIL FROM
//! an SPF pass moves it to its domain's class; each stage then draws on
//! its class's budget. After the data, verdicts feed reputation.

use portcullis_admission::{
    Allocations, Charge, Deferral, Identity, LevelChange, Policy, SenderClass, Slot, Stage,
    StateCommand, Verdict,
};
use portcullis_config::{Cidr, Config};
use portcullis_metrics::{Counter, Metrics};
use portcullis_smtp::{Reply, Status};
use portcullis_state::Store;
use std::sync::Arc;
use tracing::{info, warn};

mod connect;
mod escalate;
mod greylist;
mod refusals;
mod repeat;

pub use connect::{Refusal, RefusalCause};
pub use refusals::RefusalLog;

/// What all connections share.
pub struct ClassOfService {
    /// SIGHUP swaps it; a connection keeps the class it was given.
    policy: std::sync::RwLock<Arc<Policy>>,
    pub state: Store,
    /// Live connections per class name (no limit: a census).
    pub by_class: portcullis_admission::Concurrency,
    pub allocations: Allocations,
    pub metrics: Arc<Metrics>,
    /// Child ranges counted toward blocking their wider prefix.
    escalation: std::sync::Mutex<portcullis_admission::Escalation>,
    /// Ranges refused again and again, for a short block (`repeat.rs`).
    repeat: std::sync::Mutex<portcullis_admission::RepeatOffenders>,
}

/// One connection's place in the class of service.
pub struct Gate {
    pub class: SenderClass,
    pub range: Cidr,
    /// Domains whose ranges admitted this client at connect: its mail
    /// must then authenticate for one of them (the paper: "aggressive
    /// action ... if it is subsequently determined that the message is
    /// not signed").
    pub vouching_domains: Vec<String>,
    /// Recent "user unknown" answers to this range: the greeting waits.
    pub unknown_users: u32,
    _range_slot: Option<portcullis_state::Slot>,
    /// None in policy mode (Postfix sends no disconnect to give it back).
    class_slot: Option<portcullis_state::Slot>,
    census: Option<Slot>,
}

pub fn reply(d: &Deferral) -> Reply {
    let (a, b, c) = d.status;
    Reply::new(d.code, Status(a, b, c), d.text.clone())
}

impl ClassOfService {
    pub fn new(
        config: &Config,
        state: Store,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<ClassOfService> {
        let id = &config.identity;
        let allocations = match &id.allocations {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                Allocations::parse(&text, id.allocation_min_ipv4, id.allocation_min_ipv6)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
            None => Allocations::default(),
        };
        Ok(ClassOfService {
            policy: std::sync::RwLock::new(Arc::new(Policy::from_config(config))),
            state,
            by_class: Default::default(),
            allocations,
            metrics,
            escalation: Default::default(),
            repeat: Default::default(),
        })
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_policy(&self, p: Policy) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(p);
    }

    fn deferred(&self, stage: Stage, d: &Deferral) -> Reply {
        let stage = match stage {
            Stage::Connect => "connect",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
        };
        self.metrics.inc(
            Counter::Deferrals,
            &[("class", &d.class), ("limit", d.limit), ("stage", stage)],
        );
        reply(d)
    }

    /// Draw on every bucket of a stage, or answer with the deferral for
    /// the first one that is full.
    async fn charge(
        &self,
        stage: Stage,
        class: &SenderClass,
        charges: &[Charge],
    ) -> Result<(), Reply> {
        self.state.charge(charges).await.map_err(|(i, retry)| {
            self.deferred(
                stage,
                &self.policy().deferral(stage, class, &charges[i], retry),
            )
        })
    }

    async fn class_of(&self, identity: Identity) -> SenderClass {
        let rep = match identity {
            Identity::Unknown => None,
            ref id => self.state.reputation(&id.key()).await,
        };
        self.policy().class_for(&identity, rep.as_ref())
    }

    async fn class_slot(
        &self,
        stage: Stage,
        class: &SenderClass,
    ) -> Result<portcullis_state::Slot, Reply> {
        let max = class.limits.max_connections.unwrap_or(0);
        self.state
            .slot(&class.budget(), max)
            .await
            .ok_or_else(|| self.deferred(stage, &self.policy().busy(stage, class, false, max)))
    }

    /// MAIL FROM: an SPF-authenticated domain is the strongest identity
    /// (the paper's first choice) and moves the connection to its class;
    /// then one message is drawn from the class's budget.
    pub async fn mail(&self, gate: &mut Gate, spf_pass: Option<&str>) -> Result<(), Reply> {
        if let Some(domain) = spf_pass {
            let id = Identity::Domain(domain.to_ascii_lowercase());
            if gate.class.identity != id {
                let class = self.class_of(id).await;
                if gate.class_slot.is_some() {
                    gate.class_slot = Some(self.class_slot(Stage::Mail, &class).await?);
                }
                gate.census = Some(self.by_class.count(&class.class));
                gate.class = class;
            }
        }
        let charges = self.policy().message_charges(&gate.class);
        self.charge(Stage::Mail, &gate.class, &charges).await
    }

    /// RCPT: the per-message count, then the per-minute budget.
    pub async fn rcpt(&self, gate: &Gate, accepted_so_far: usize) -> Result<(), Reply> {
        if let Some(d) = self
            .policy()
            .recipients_exceeded(&gate.class, accepted_so_far)
        {
            return Err(self.deferred(Stage::Rcpt, &d));
        }
        let charges = self.policy().recipient_charges(&gate.class);
        self.charge(Stage::Rcpt, &gate.class, &charges).await
    }

    /// End of data, before the message is accepted: bytes, and the
    /// domain-range rule. Mail from a range that vouches for domains must
    /// authenticate for one of them (the paper's "aggressive action"),
    /// but only the recipient domains' policy stage may refuse mail:
    /// `refusing` says one of them does (reject-both-fail, dmarc). Under
    /// `label` (the default) the message is accepted, labelled, and drawn
    /// from the default pool instead of the range's class. Delivery status
    /// notifications (null sender) are let through: a host that forwards
    /// for a domain also returns bounces that are rarely signed.
    /// Ok holds the header line to add, if any.
    pub async fn data(
        &self,
        gate: &Gate,
        bytes: u64,
        authenticated: &[String],
        null_sender: bool,
        refusing: bool,
    ) -> Result<Option<String>, Reply> {
        let vouched_for = !gate.vouching_domains.is_empty()
            && !gate
                .vouching_domains
                .iter()
                .any(|d| authenticated.contains(d));
        if null_sender || !self.policy().admission.enforce_domain_ranges || !vouched_for {
            let charges = self.policy().data_charges(&gate.class, bytes);
            return self
                .charge(Stage::Data, &gate.class, &charges)
                .await
                .map(|()| None);
        }
        let why = format!(
            "{} sends for {} only with SPF or DKIM authentication; this message has neither",
            gate.range,
            gate.vouching_domains.join(", ")
        );
        let labels = [
            ("class", gate.class.class.as_str()),
            ("limit", "domain_range"),
            ("stage", "data"),
        ];
        self.metrics.inc(Counter::Deferrals, &labels);
        if refusing {
            return Err(Reply::new(550, Status(5, 7, 1), why));
        }
        let default = self.policy().class_for(&Identity::Unknown, None);
        let mut charges = self.policy().message_charges(&default);
        charges.extend(self.policy().data_charges(&default, bytes));
        self.charge(Stage::Data, &default, &charges).await?;
        Ok(Some(format!("X-Portcullis-Class: default; {why}\r\n")))
    }

    /// After a message was judged (accepted, or refused as spam): remember the ranges that delivered
    /// authenticated mail, and count volume and quality for the sender's
    /// strongest identity. Unidentified ranges that keep sending spam go
    /// on the temporal blocklist.
    pub async fn judged(&self, gate: &Gate, authenticated: &[String], verdict: Option<Verdict>) {
        for d in authenticated {
            self.state.remember_range(gate.range, d).await;
        }
        let identity = authenticated
            .first()
            .map_or(gate.class.identity.clone(), |d| {
                gate.class
                    .identity
                    .clone()
                    .stronger(Identity::Domain(d.clone()))
            });
        if let Some(v) = verdict {
            self.metrics
                .inc(Counter::Verdicts, &[("verdict", v.as_str())]);
        }
        let key = match &identity {
            Identity::Unknown => format!("range:{}", gate.range),
            id => id.key(),
        };
        if let Some(change) = self.state.record(&key, verdict, true).await {
            self.level_changed(&key, &change);
        }
        if identity == Identity::Unknown && verdict == Some(Verdict::Spam) {
            self.strike(gate.range, &key).await;
        }
    }

    fn level_changed(&self, key: &str, change: &LevelChange) {
        let (kind, from, to) = match change {
            LevelChange::Promoted { from, to } => ("promoted", from, to),
            LevelChange::Demoted { from, to } => ("demoted", from, to),
        };
        let name = |l: &u32| {
            self.policy()
                .rules
                .levels
                .get(*l as usize)
                .cloned()
                .unwrap_or_default()
        };
        info!(event = "reputation", identity = %key, change = kind, from = %name(from), to = %name(to));
        self.metrics
            .inc(Counter::ReputationChanges, &[("change", kind)]);
    }

    async fn strike(&self, range: Cidr, key: &str) {
        let a = &self.policy().admission;
        if a.spam_strikes == 0 || a.block_secs == 0 {
            return;
        }
        let spam = self.state.reputation(key).await.map_or(0, |r| r.spam);
        if spam >= u64::from(a.spam_strikes) {
            let cmd = StateCommand::Block {
                range,
                secs: a.block_secs,
                reason: format!("{spam} spam messages from this range without identification"),
            };
            match self.state.apply(&cmd).await {
                Ok(()) => {
                    info!(event = "blocked", range = %range, secs = a.block_secs, spam);
                    self.escalate(range).await;
                }
                Err(e) => warn!(event = "block_failed", range = %range, error = %e),
            }
        }
    }
}
