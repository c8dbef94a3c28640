//! Postfix's policy delegation protocol (SMTPD_POLICY_README): the class
//! of service, submission quotas and greylisting as a policy service for
//! a Postfix site that keeps its own mail flow. Postfix connects (one
//! connection, many requests), sends `name=value` lines and an empty
//! line, and reads one `action=...` line and an empty line back.
//!
//! What applies in policy mode, and how: the blocklist, the class of
//! service and its budgets (connections per minute at CONNECT, messages
//! at MAIL, recipients at RCPT, bytes at END-OF-MESSAGE), identity from
//! SPF evaluated here, known senders, allocations and domain ranges,
//! reputation, submission quotas for `sasl_username`, greylisting.
//! Concurrency limits do not apply: Postfix sends no disconnect, so
//! concurrency stays with Postfix's own `smtpd_client_connection_count_limit`.
//!
//! Every request is answered within `[policy] timeout_ms` (DUNNO when a
//! decision would take longer, e.g. Redis down): the service never holds
//! Postfix up. This crate owns the protocol, not the socket's listener.

mod decide;
mod request;

pub use request::{MAX_ATTRIBUTES, MAX_REQUEST, Parsed, Request, parse};

use decide::Instance;
use portcullis_config::Config;
use portcullis_metrics::Counter;
use portcullis_pipeline::{Gate, Inbound};
use portcullis_smtp::Reply;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

/// An idle Postfix connection is closed after this (Postfix reconnects).
const IDLE: Duration = Duration::from_secs(300);
/// Messages remembered at once; the oldest go first beyond it.
const MAX_INSTANCES: usize = 100_000;
/// A message not finished within this is forgotten.
const INSTANCE_LIFE: u64 = 3600;

/// The answer to one request, and why (for the log and `policy-test`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub action: String,
    pub why: String,
}

impl Answer {
    pub fn dunno(why: impl Into<String>) -> Answer {
        Answer {
            action: "DUNNO".into(),
            why: why.into(),
        }
    }

    /// DEFER_IF_PERMIT with our reply's enhanced status code and text.
    fn defer(reply: &Reply) -> Answer {
        Answer::with(reply, "DEFER_IF_PERMIT")
    }

    fn reject(reply: &Reply) -> Answer {
        Answer::with(reply, "REJECT")
    }

    /// A 4xx defers, a 5xx rejects.
    fn refusal(reply: &Reply) -> Answer {
        Answer::with(reply, decide::action_of(reply))
    }

    fn prepend(header: &str) -> Answer {
        Answer {
            action: format!("PREPEND {header}"),
            why: String::new(),
        }
    }

    fn with(reply: &Reply, word: &str) -> Answer {
        let status = reply.status.map(|s| format!("{s} ")).unwrap_or_default();
        Answer {
            action: format!("{word} {status}{}", reply.lines.join(" ")),
            why: String::new(),
        }
    }

    fn why(mut self, why: impl Into<String>) -> Answer {
        self.why = why.into();
        self
    }

    /// The wire form: one line, no line breaks from the text.
    pub fn to_wire(&self) -> Vec<u8> {
        let action: String = self.action.chars().filter(|c| !c.is_control()).collect();
        format!("action={action}\n\n").into_bytes()
    }

    fn word(&self) -> &str {
        match self.action.split_whitespace().next().unwrap_or("") {
            "DUNNO" => "dunno",
            "DEFER_IF_PERMIT" => "defer",
            "REJECT" => "reject",
            "PREPEND" => "prepend",
            _ => "other",
        }
    }
}

pub struct PolicyService {
    inbound: Arc<Inbound>,
    config: Arc<Config>,
    timeout: Duration,
    instances: Mutex<HashMap<String, Instance>>,
}

impl PolicyService {
    pub fn new(inbound: Arc<Inbound>, config: Arc<Config>) -> PolicyService {
        PolicyService {
            timeout: Duration::from_millis(config.policy.timeout_ms.max(1)),
            inbound,
            config,
            instances: Mutex::default(),
        }
    }

    /// One request's answer, within the timeout.
    pub async fn answer(&self, r: &Request) -> Answer {
        let state = r.state().to_owned();
        let a = match tokio::time::timeout(self.timeout, self.decide(r)).await {
            Ok(a) => a,
            Err(_) => {
                warn!(event = "policy_timeout", state = %state, "answering DUNNO: the decision took too long");
                self.count(&state, "timeout");
                return Answer::dunno("timed out");
            }
        };
        self.count(&state, a.word());
        a
    }

    fn count(&self, state: &str, answer: &str) {
        let state = match state {
            "CONNECT" | "EHLO" | "HELO" | "MAIL" | "RCPT" | "DATA" | "END-OF-MESSAGE" => state,
            _ => "other",
        };
        let labels = [("state", state), ("answer", answer)];
        self.inbound.metrics.inc(Counter::PolicyRequests, &labels);
    }

    /// Serve one Postfix connection until it closes or idles out.
    pub async fn serve<S>(&self, mut io: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 4096];
        loop {
            match parse(&buf) {
                Parsed::Incomplete => {
                    match tokio::time::timeout(IDLE, io.read(&mut chunk)).await {
                        Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                    continue;
                }
                Parsed::Request(r, used) => {
                    buf.drain(..used);
                    let a = self.answer(&r).await;
                    if io.write_all(&a.to_wire()).await.is_err() {
                        return;
                    }
                }
                Parsed::Malformed(why, used) => {
                    info!(event = "policy_malformed", reason = why);
                    self.count("other", "malformed");
                    let stop = used == 0;
                    if io.write_all(&Answer::dunno(why).to_wire()).await.is_err() || stop {
                        return;
                    }
                    buf.drain(..used);
                }
            }
        }
    }

    fn has_instance(&self, key: &str) -> bool {
        self.instances.lock().is_ok_and(|m| m.contains_key(key))
    }

    fn keep(&self, key: &str, gate: Gate) {
        let inst = Instance {
            gate,
            mailed: false,
            spf_pass: None,
            at: portcullis_config::clock::now_secs(),
        };
        self.put_instance(key, inst);
    }

    fn take_instance(&self, key: &str) -> Option<Instance> {
        self.instances.lock().ok()?.remove(key)
    }

    fn put_instance(&self, key: &str, inst: Instance) {
        let Ok(mut m) = self.instances.lock() else {
            return;
        };
        if m.len() >= MAX_INSTANCES {
            let cutoff = portcullis_config::clock::now_secs().saturating_sub(INSTANCE_LIFE);
            m.retain(|_, i| i.at > cutoff);
            if m.len() >= MAX_INSTANCES {
                m.clear();
            }
        }
        m.insert(key.to_owned(), inst);
    }
}

#[cfg(test)]
mod tests;
