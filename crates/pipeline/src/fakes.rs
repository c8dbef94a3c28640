//! Fakes of the services the stages consult, for tests here and in the
//! crates built on this one (feature `fakes`): DNS answered from a table,
//! the queue in memory.

use crate::{Checks, Intake};
use portcullis_authn::{
    AuthResult, DkimKeys, DmarcPolicy, Listing, MessageResults, RatingAnswer, SpfCheck, SpfOutput,
};
use portcullis_delivery::BoxFuture;
use portcullis_queue::{Bounce, Envelope, SpoolError, StoredMessage};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// DNS answers from a table.
#[derive(Default)]
pub struct TableChecks {
    pub iprev: Option<(AuthResult, Option<String>)>,
    /// Query names (RFC 5782) that are listed.
    pub listed: HashSet<String>,
    /// SPF result per MAIL FROM domain (none when absent).
    pub spf: HashMap<String, AuthResult>,
    /// What check_message answers.
    pub message: Option<MessageResults>,
    /// How long an SPF check takes (a slow resolver).
    pub spf_delay: std::time::Duration,
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
        let delay = self.spf_delay;
        let check = SpfCheck {
            output: r.spf_output(domain),
            explanation: None,
            reason: String::new(),
            helo_result: None,
            identity: sender.unwrap_or_default().to_owned(),
            helo: helo.to_owned(),
            ip,
        };
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            check
        })
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
pub fn results(spf: AuthResult, dkim: AuthResult, dmarc: AuthResult) -> MessageResults {
    MessageResults {
        spf,
        dkim,
        dkim_domains: Vec::new(),
        arc: AuthResult::None,
        arc_sealer: None,
        dmarc,
        dmarc_policy: DmarcPolicy::None,
        from_domain: "sender.test".into(),
        dmarc_observation: None,
        header: format!("Authentication-Results: mx.test; spf={}\r\n", spf.as_str()),
    }
}

/// The queue in memory.
#[derive(Default)]
pub struct MemoryIntake {
    pub queued: Mutex<Vec<(Envelope, Arc<Vec<u8>>)>>,
    pub bounced: Mutex<Vec<Bounce>>,
    pub next: Mutex<u64>,
    /// Answer every enqueue with "disk full".
    pub full: bool,
    /// Ids of messages on hold, with the reason (a milter's quarantine,
    /// an account on hold).
    pub held: Mutex<std::collections::BTreeMap<String, String>>,
    /// What was observed for DMARC aggregate reports.
    pub observed: Mutex<Vec<portcullis_dmarcrpt::Observation>>,
}

impl crate::DmarcObservations for MemoryIntake {
    fn observe(&self, o: &portcullis_dmarcrpt::Observation) {
        self.observed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(o.clone());
    }
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

    fn enqueue_held<'a>(
        &'a self,
        envelope: Envelope,
        data: Arc<Vec<u8>>,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), SpoolError>> {
        let held = (envelope.id.clone(), reason.to_owned());
        self.held.lock().unwrap().extend([held]);
        self.enqueue(envelope, data)
    }

    fn bounce<'a>(&'a self, _: &'a StoredMessage, failed: &'a [Bounce]) -> BoxFuture<'a, ()> {
        self.bounced.lock().unwrap().extend(failed.iter().cloned());
        Box::pin(async {})
    }

    fn hold_account<'a>(
        &'a self,
        account: &'a str,
        held: bool,
    ) -> BoxFuture<'a, Result<Vec<String>, String>> {
        let (ids, _) = self.of(account);
        let mut h = self.held.lock().unwrap();
        let changed: Vec<String> = ids
            .into_iter()
            .filter(|id| {
                if held {
                    h.insert(id.clone(), "account on hold".into()).is_none()
                } else {
                    h.remove(id).is_some()
                }
            })
            .collect();
        Box::pin(async move { Ok(changed) })
    }

    fn messages_of<'a>(&'a self, account: &'a str) -> BoxFuture<'a, (Vec<String>, Vec<String>)> {
        let out = self.of(account);
        Box::pin(async move { out })
    }
}

impl MemoryIntake {
    /// The account's queued ids, and those of them held.
    fn of(&self, account: &str) -> (Vec<String>, Vec<String>) {
        let ids: Vec<String> = self
            .queued
            .lock()
            .unwrap()
            .iter()
            .filter(|(e, _)| {
                e.auth
                    .as_deref()
                    .is_some_and(|a| a.eq_ignore_ascii_case(account))
            })
            .map(|(e, _)| e.id.clone())
            .collect();
        let h = self.held.lock().unwrap();
        let held = ids.iter().filter(|i| h.contains_key(*i)).cloned().collect();
        (ids, held)
    }
}
