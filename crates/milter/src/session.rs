//! The stage hooks: what the milters say about one SMTP session, stage by
//! stage, in the order of the config. The way in calls [`Session::mail`],
//! [`Session::rcpt`] and [`Session::message`]; each answers go on or the
//! reply to give. Connect and HELO are told with the first MAIL FROM (and
//! HELO again when the name changed), so a session that never sends mail
//! costs no milter connection; a refusal at connect or HELO answers every
//! MAIL FROM of the session (as Postfix's delayed rejects do). The DATA
//! step, headers, end of headers, body and end of message are sent at
//! the end of data, when the whole message is here. One connection per
//! milter serves every message of the session (SMFIC_ABORT between
//! messages that did not end).

use crate::client::{Failure, Link};
use crate::edit::{self, EnvelopeEdits};
use crate::proto::{BODY_CHUNK, Command, Family, Response, Stage, step};
use crate::reply::{default_reject, default_tempfail, parse_reply};
use portcullis_config::{ListenerRole, Milter, MilterFailure};
use portcullis_metrics::{Counter, Metrics};
use portcullis_smtp::{Reply, Status};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tracing::{info, warn};

mod macros;

/// The configured milters, shared by every session: each with its bound
/// on connections.
pub struct Milters {
    entries: Vec<(Milter, Arc<Semaphore>)>,
    metrics: Arc<Metrics>,
}

impl Milters {
    pub fn new(configs: &[Milter], metrics: Arc<Metrics>) -> Arc<Milters> {
        let entries = configs
            .iter()
            .map(|m| (m.clone(), Arc::new(Semaphore::new(m.max_connections))))
            .collect();
        Arc::new(Milters { entries, metrics })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A session's hooks: the milters for its listener role, not yet
    /// connected.
    pub fn session(self: &Arc<Self>, role: ListenerRole, client: Client) -> Session {
        let links = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, (m, _))| m.roles.contains(&role))
            .map(|(i, _)| LinkState {
                entry: i,
                state: State::Closed,
                helo: None,
                in_message: false,
                done_with_message: false,
            })
            .collect();
        Session {
            milters: self.clone(),
            links,
            client,
            discard: false,
        }
    }
}

/// Connect to a milter and negotiate, for `check-config`.
pub async fn probe(milter: &Milter) -> Result<crate::proto::Negotiated, Failure> {
    let permits = Arc::new(Semaphore::new(1));
    let link = Link::open(milter, permits, Arc::new(Metrics::default())).await?;
    let n = link.negotiated.clone();
    link.quit();
    Ok(n)
}

/// Who the client is, for the connect step and its macros.
#[derive(Clone, Debug)]
pub struct Client {
    /// Our host name (`j`).
    pub hostname: String,
    /// The listener role (`{daemon_name}`), e.g. for OpenDKIM's `MTA`.
    pub daemon_name: String,
    pub addr: SocketAddr,
    /// Its confirmed reverse name, if any.
    pub name: Option<String>,
}

/// What MAIL FROM tells the milters.
#[derive(Clone, Debug, Default)]
pub struct Mail<'a> {
    pub helo: &'a str,
    /// None for `<>`.
    pub sender: Option<String>,
    /// ESMTP parameters as sent (`SIZE=123`).
    pub params: Vec<String>,
    /// The authenticated account and the SASL mechanism it used.
    pub auth: Option<(&'a str, &'a str)>,
    /// TLS version and cipher.
    pub tls: Option<(&'a str, &'a str)>,
}

/// What the milters made of a message.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The message as modified, when some milter changed it.
    pub data: Option<Vec<u8>>,
    pub envelope: EnvelopeEdits,
    /// Accept it, then drop it.
    pub discard: bool,
    /// Accept it and hold it in the queue, for this reason.
    pub quarantine: Option<String>,
}

enum State {
    Closed,
    Open(Box<Link>),
    /// Said accept for the session, or skipped after a failure.
    Done,
    /// Refuses every further command of the session with this reply.
    Refusing(Reply),
}

struct LinkState {
    entry: usize,
    state: State,
    /// The HELO name it was told.
    helo: Option<String>,
    /// A MAIL was sent and the message did not reach its end.
    in_message: bool,
    /// Said accept (or discard) for the current message.
    done_with_message: bool,
}

/// One SMTP session's milters.
pub struct Session {
    milters: Arc<Milters>,
    links: Vec<LinkState>,
    client: Client,
    /// A milter said discard for the current message.
    discard: bool,
}

/// What one answer means for the stage.
enum Step {
    Go,
    /// Accept: this milter is done (for the message or the session).
    Done,
    Discard,
    Refuse(Reply),
}

fn meaning(r: &Response, default_code: fn() -> Reply) -> Step {
    match r {
        Response::Continue | Response::Skip => Step::Go,
        Response::Accept => Step::Done,
        Response::Discard => Step::Discard,
        Response::Reject => Step::Refuse(default_code()),
        Response::Tempfail | Response::Shutdown => Step::Refuse(default_tempfail()),
        Response::ReplyCode(text) => Step::Refuse(match parse_reply(text) {
            Some(r) => r,
            // A reply the milter got wrong: its class if we can tell.
            None if text.starts_with('5') => default_code(),
            None => default_tempfail(),
        }),
        _ => Step::Go,
    }
}

impl Session {
    fn fail(&mut self, i: usize, failure: &Failure) -> Step {
        let (milter, _) = &self.milters.entries[self.links[i].entry];
        let labels = [
            ("milter", milter.name.as_str()),
            ("reason", failure.reason()),
        ];
        self.milters.metrics.inc(Counter::MilterFailures, &labels);
        warn!(event = "milter_failed", milter = %milter.name, error = %failure, on_failure = ?milter.on_failure);
        let (state, step) = match milter.on_failure {
            MilterFailure::Accept => (State::Done, Step::Done),
            MilterFailure::Tempfail => {
                let r = Reply::new(
                    451,
                    Status(4, 7, 1),
                    "Service unavailable - try again later",
                );
                (State::Refusing(r.clone()), Step::Refuse(r))
            }
            MilterFailure::Reject => {
                let r = Reply::new(550, Status(5, 7, 1), "Command rejected");
                (State::Refusing(r.clone()), Step::Refuse(r))
            }
        };
        if let State::Open(link) = std::mem::replace(&mut self.links[i].state, state) {
            drop(link);
        }
        step
    }

    /// Open the i-th link if needed, and tell it the connect step and HELO.
    async fn ready(&mut self, i: usize, helo: &str) -> Result<(), Failure> {
        let entry = self.links[i].entry;
        if let State::Closed = self.links[i].state {
            let (milter, permits) = &self.milters.entries[entry];
            let link = Link::open(milter, permits.clone(), self.milters.metrics.clone()).await?;
            self.links[i].state = State::Open(Box::new(link));
            let macros = self.connect_macros(entry);
            let State::Open(link) = &mut self.links[i].state else {
                return Ok(());
            };
            if !link.negotiated.skips(step::NOCONNECT) {
                let pairs = self.macros_for_link(i, Stage::Connect, macros);
                let cmd = Command::Connect {
                    hostname: &self
                        .client
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("[{}]", self.client.addr.ip())),
                    family: Family::Inet(self.client.addr),
                };
                self.step(i, Stage::Connect, &pairs, &cmd, step::NR_CONN, "connect")
                    .await?;
            }
        }
        if self.links[i].helo.as_deref() != Some(helo)
            && matches!(self.links[i].state, State::Open(_))
        {
            self.links[i].helo = Some(helo.to_owned());
            let skip = match &self.links[i].state {
                State::Open(l) => l.negotiated.skips(step::NOHELO),
                _ => true,
            };
            if !skip {
                self.step(
                    i,
                    Stage::Helo,
                    &[],
                    &Command::Helo(helo),
                    step::NR_HELO,
                    "helo",
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Send one step's macros and command; read its answer unless the
    /// milter said it would not answer (`no_reply`). Modifications are not
    /// expected here and are dropped.
    async fn step(
        &mut self,
        i: usize,
        stage: Stage,
        pairs: &[(String, String)],
        cmd: &Command<'_>,
        no_reply: u32,
        name: &'static str,
    ) -> Result<Option<Response>, Failure> {
        let State::Open(link) = &mut self.links[i].state else {
            return Ok(None);
        };
        if !pairs.is_empty() {
            link.tell(&Command::Macros { stage, pairs }).await?;
        }
        if link.negotiated.skips(no_reply) {
            link.tell(cmd).await?;
            return Ok(None);
        }
        let mut mods = Vec::new();
        let r = link.ask(cmd, name, &mut mods).await?;
        // Remember the answer of connect and HELO for the session.
        if matches!(stage, Stage::Connect | Stage::Helo) {
            match meaning(&r, default_reject) {
                Step::Refuse(reply) => self.links[i].state = State::Refusing(reply),
                Step::Done | Step::Discard => self.links[i].state = State::Done,
                Step::Go => {}
            }
        }
        Ok(Some(r))
    }

    fn milter_name(&self, i: usize) -> &str {
        &self.milters.entries[self.links[i].entry].0.name
    }

    /// MAIL FROM: a new message begins. Ok goes on; Err is the reply.
    pub async fn mail(&mut self, mail: &Mail<'_>) -> Result<(), Reply> {
        self.discard = false;
        for i in 0..self.links.len() {
            self.links[i].done_with_message = false;
            if let Err(f) = self.ready(i, mail.helo).await {
                if let Step::Refuse(r) = self.fail(i, &f) {
                    return Err(r);
                }
                continue;
            }
            let l = &mut self.links[i];
            match &mut l.state {
                State::Refusing(r) => return Err(r.clone()),
                State::Done | State::Closed => continue,
                State::Open(link) => {
                    let aborted = match l.in_message {
                        true => link.tell(&Command::Abort).await,
                        false => Ok(()),
                    };
                    let skips = link.negotiated.skips(step::NOMAIL);
                    l.in_message = true;
                    if let Err(f) = aborted {
                        self.fail_stage(i, &f)?;
                        continue;
                    }
                    if skips {
                        continue;
                    }
                }
            }
            let sender = format!("<{}>", mail.sender.as_deref().unwrap_or(""));
            let mut args = vec![sender.clone()];
            args.extend(mail.params.iter().cloned());
            let mut ours = vec![(
                "{mail_addr}".to_owned(),
                mail.sender.clone().unwrap_or_default(),
            )];
            if let Some((account, mechanism)) = mail.auth {
                ours.push(("{auth_authen}".to_owned(), account.to_owned()));
                ours.push(("{auth_type}".to_owned(), mechanism.to_owned()));
            }
            if let Some((version, cipher)) = mail.tls {
                ours.push(("{tls_version}".to_owned(), version.to_owned()));
                ours.push(("{cipher}".to_owned(), cipher.to_owned()));
            }
            let pairs = self.macros_for_link(i, Stage::Mail, ours);
            let answer = self
                .step(
                    i,
                    Stage::Mail,
                    &pairs,
                    &Command::Mail(&args),
                    step::NR_MAIL,
                    "mail",
                )
                .await;
            self.answer(i, answer, "mail", default_reject)?;
        }
        Ok(())
    }

    /// A failure in a stage of a message: Err when it refuses.
    fn fail_stage(&mut self, i: usize, f: &Failure) -> Result<(), Reply> {
        match self.fail(i, f) {
            Step::Refuse(r) => Err(r),
            _ => Ok(()),
        }
    }

    /// What one answer to a message step does.
    fn answer(
        &mut self,
        i: usize,
        answer: Result<Option<Response>, Failure>,
        stage: &'static str,
        default: fn() -> Reply,
    ) -> Result<(), Reply> {
        let r = match answer {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(f) => return self.fail_stage(i, &f),
        };
        match meaning(&r, default) {
            Step::Go => Ok(()),
            Step::Done => {
                self.links[i].done_with_message = true;
                Ok(())
            }
            Step::Discard => {
                info!(event = "milter_discard", milter = %self.milter_name(i), stage);
                self.discard = true;
                self.links[i].done_with_message = true;
                Ok(())
            }
            Step::Refuse(reply) => {
                info!(event = "milter_refused", milter = %self.milter_name(i), stage, reply = %reply);
                Err(reply)
            }
        }
    }

    fn asks(&self, i: usize) -> bool {
        !self.links[i].done_with_message && matches!(self.links[i].state, State::Open(_))
    }

    /// One more recipient. Err refuses this recipient only.
    pub async fn rcpt(&mut self, rcpt: &str) -> Result<(), Reply> {
        for i in 0..self.links.len() {
            if let State::Refusing(r) = &self.links[i].state {
                return Err(r.clone());
            }
            if !self.asks(i) {
                continue;
            }
            let skip =
                matches!(&self.links[i].state, State::Open(l) if l.negotiated.skips(step::NORCPT));
            if skip {
                continue;
            }
            let args = [format!("<{rcpt}>")];
            let pairs = self.macros_for_link(
                i,
                Stage::Rcpt,
                vec![("{rcpt_addr}".to_owned(), rcpt.to_owned())],
            );
            let answer = self
                .step(
                    i,
                    Stage::Rcpt,
                    &pairs,
                    &Command::Rcpt(&args),
                    step::NR_RCPT,
                    "rcpt",
                )
                .await;
            self.answer(i, answer, "rcpt", default_reject)?;
        }
        Ok(())
    }

    /// The message, at the end of data: every milter in turn sees it as
    /// the ones before left it. Err is the reply that refuses it.
    pub async fn message(&mut self, queue_id: &str, data: &[u8]) -> Result<Outcome, Reply> {
        let mut out = Outcome::default();
        let mut msg: Option<edit::Message> = None;
        for i in 0..self.links.len() {
            if let State::Refusing(r) = &self.links[i].state {
                return Err(r.clone());
            }
            if self.discard {
                break;
            }
            if !self.asks(i) {
                continue;
            }
            let current = msg.get_or_insert_with(|| edit::Message::parse(data));
            let mods = match self.one_message(i, queue_id, current).await {
                Ok(Some(mods)) => mods,
                Ok(None) => continue,
                Err(Ok(reply)) => return Err(reply),
                Err(Err(f)) => {
                    self.fail_stage(i, &f)?;
                    continue;
                }
            };
            self.links[i].in_message = false;
            if mods.is_empty() {
                continue;
            }
            let State::Open(link) = &self.links[i].state else {
                continue;
            };
            let negotiated = link.negotiated.clone();
            let current = msg.get_or_insert_with(|| edit::Message::parse(data));
            let ignored = edit::apply(current, &mut out.envelope, &mods, &negotiated);
            let name = self.milter_name(i).to_owned();
            if !ignored.is_empty() {
                warn!(event = "milter_modification_ignored", milter = %name, kinds = ?ignored);
            }
            for m in &mods {
                if let Response::Quarantine(reason) = m {
                    info!(event = "milter_quarantine", milter = %name, reason = %reason);
                    out.quarantine = Some(format!("{name}: {reason}"));
                }
            }
            if mods.iter().any(|m| !matches!(m, Response::Quarantine(_))) {
                info!(event = "milter_modified", milter = %name, changes = mods.len());
                out.data = Some(Vec::new());
            }
        }
        if out.data.is_some() {
            out.data = msg.map(|m| m.to_bytes());
        }
        out.discard = self.discard;
        Ok(out)
    }

    /// DATA, the headers, end of headers, the body and end of message to
    /// one milter: Ok(Some(modifications)) when it reached the end,
    /// Ok(None) when it was done earlier (accept, discard), Err(Ok) its
    /// refusal, Err(Err) a failure.
    async fn one_message(
        &mut self,
        i: usize,
        queue_id: &str,
        msg: &edit::Message,
    ) -> Result<Option<Vec<Response>>, Result<Reply, Failure>> {
        let id = vec![("i".to_owned(), queue_id.to_owned())];
        let n = match &self.links[i].state {
            State::Open(l) => l.negotiated.clone(),
            _ => return Ok(None),
        };
        let lead = n.skips(step::HDR_LEADSPC);
        macro_rules! go {
            ($stage:expr, $pairs:expr, $cmd:expr, $nr:expr, $name:expr) => {{
                let answer = self.step(i, $stage, $pairs, $cmd, $nr, $name).await;
                let skipped = matches!(&answer, Ok(Some(Response::Skip)));
                self.answer(i, answer, $name, default_reject).map_err(Ok)?;
                if self.links[i].done_with_message {
                    return Ok(None);
                }
                skipped
            }};
        }
        if !n.skips(step::NODATA) {
            let pairs = self.macros_for_link(i, Stage::Data, id.clone());
            go!(Stage::Data, &pairs, &Command::Data, step::NR_DATA, "data");
        }
        if !n.skips(step::NOHDRS) {
            for f in &msg.fields {
                let value = f.value_for_milter(lead);
                let cmd = Command::Header {
                    name: &f.name,
                    value: &value,
                };
                go!(Stage::Eoh, &[], &cmd, step::NR_HDR, "header");
            }
        }
        if !n.skips(step::NOEOH) {
            let pairs = self.macros_for_link(i, Stage::Eoh, id.clone());
            go!(Stage::Eoh, &pairs, &Command::Eoh, step::NR_EOH, "eoh");
        }
        if !n.skips(step::NOBODY) {
            for chunk in msg.body.chunks(BODY_CHUNK) {
                if go!(
                    Stage::Data,
                    &[],
                    &Command::Body(chunk),
                    step::NR_BODY,
                    "body"
                ) {
                    break;
                }
            }
        }
        let pairs = self.macros_for_link(i, Stage::Eom, id);
        let State::Open(link) = &mut self.links[i].state else {
            return Ok(None);
        };
        if !pairs.is_empty() {
            let m = Command::Macros {
                stage: Stage::Eom,
                pairs: &pairs,
            };
            link.tell(&m).await.map_err(Err)?;
        }
        let mut mods = Vec::new();
        let answer = link.ask(&Command::Eom, "eom", &mut mods).await.map(Some);
        self.answer(i, answer, "eom", default_reject).map_err(Ok)?;
        if self.links[i].done_with_message && self.discard {
            return Ok(None);
        }
        Ok(Some(mods))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for l in &mut self.links {
            if let State::Open(link) = std::mem::replace(&mut l.state, State::Closed) {
                link.quit();
            }
        }
    }
}
