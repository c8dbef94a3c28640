//! The services the stages consult, behind small traits so a stage can be
//! tested in-process with a table or memory fake: [`Checks`] for the
//! DNS-backed verdicts (answered by authn's `Verifier`), [`Intake`] for the
//! queue (answered by `portcullis_queue::Queue`).

use portcullis_authn::{
    AuthResult, DkimKeys, Listing, MessageResults, RatingAnswer, SpfCheck, SpfOutput, Verifier,
};
use portcullis_delivery::BoxFuture;
use portcullis_queue::dsn::ReportKind;
use portcullis_queue::{Bounce, Envelope, Queue, SpoolError, StoredMessage};
use std::net::IpAddr;
use std::sync::Arc;

/// The DNS-backed answers the way in asks for. Verdicts only: what to do
/// with them is the stages' business.
pub trait Checks: Send + Sync {
    /// The client's reverse DNS (iprev, RFC 8601 §3) and its confirmed name.
    fn iprev(&self, ip: IpAddr) -> BoxFuture<'_, (AuthResult, Option<String>)>;
    /// Whether `name` is listed (an RFC 5782 query name).
    fn dns_list<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Listing>;
    /// A rating zone's answer about `domain`.
    fn domain_rating<'a>(&'a self, domain: &'a str, zone: &'a str) -> BoxFuture<'a, RatingAnswer>;
    /// SPF for MAIL FROM, or for HELO when the sender is null.
    fn spf<'a>(
        &'a self,
        ip: IpAddr,
        helo: &'a str,
        sender: Option<&'a str>,
        now: u64,
    ) -> BoxFuture<'a, SpfCheck>;
    /// SPF for the HELO identity on its own (None: not a domain name).
    fn helo_check<'a>(
        &'a self,
        ip: IpAddr,
        helo: &'a str,
        now: u64,
    ) -> BoxFuture<'a, Option<SpfOutput>>;
    /// DKIM, ARC and DMARC over a received message.
    fn check_message<'a>(
        &'a self,
        message: &'a [u8],
        spf: &'a SpfCheck,
    ) -> BoxFuture<'a, MessageResults>;
    /// The ARC set to prepend to a copy we forward (RFC 8617).
    fn arc_seal<'a>(
        &'a self,
        message: &'a [u8],
        spf: &'a SpfCheck,
        keys: &'a DkimKeys,
        domain: &'a str,
    ) -> BoxFuture<'a, Result<String, String>>;
}

impl Checks for Verifier {
    fn iprev(&self, ip: IpAddr) -> BoxFuture<'_, (AuthResult, Option<String>)> {
        Box::pin(Verifier::iprev(self, ip))
    }

    fn dns_list<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Listing> {
        Box::pin(Verifier::dns_list(self, name))
    }

    fn domain_rating<'a>(&'a self, domain: &'a str, zone: &'a str) -> BoxFuture<'a, RatingAnswer> {
        Box::pin(Verifier::domain_rating(self, domain, zone))
    }

    fn spf<'a>(
        &'a self,
        ip: IpAddr,
        helo: &'a str,
        sender: Option<&'a str>,
        now: u64,
    ) -> BoxFuture<'a, SpfCheck> {
        Box::pin(Verifier::spf(self, ip, helo, sender, now))
    }

    fn helo_check<'a>(
        &'a self,
        ip: IpAddr,
        helo: &'a str,
        now: u64,
    ) -> BoxFuture<'a, Option<SpfOutput>> {
        Box::pin(Verifier::helo_check(self, ip, helo, now))
    }

    fn check_message<'a>(
        &'a self,
        message: &'a [u8],
        spf: &'a SpfCheck,
    ) -> BoxFuture<'a, MessageResults> {
        Box::pin(Verifier::check_message(self, message, spf))
    }

    fn arc_seal<'a>(
        &'a self,
        message: &'a [u8],
        spf: &'a SpfCheck,
        keys: &'a DkimKeys,
        domain: &'a str,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(Verifier::arc_seal(self, message, spf, keys, domain))
    }
}

/// Where accepted mail's rows for DMARC aggregate reports go (RFC 7489
/// §7.2). Only mail we queued is observed: never mail we refused.
pub trait DmarcObservations: Send + Sync {
    fn observe(&self, observation: &portcullis_dmarcrpt::Observation);
}

/// The queue as the way in sees it: new ids, the one way in, bounces.
pub trait Intake: Send + Sync {
    fn new_id(&self) -> String;
    /// Durable when Ok: the 250 may be sent.
    fn enqueue(
        &self,
        envelope: Envelope,
        data: Arc<Vec<u8>>,
    ) -> BoxFuture<'_, Result<(), SpoolError>>;
    /// Durable and on hold (a milter's quarantine) when Ok.
    fn enqueue_held<'a>(
        &'a self,
        envelope: Envelope,
        data: Arc<Vec<u8>>,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), SpoolError>>;
    /// A failure report to the sender of `original` (never to `<>`).
    fn bounce<'a>(&'a self, original: &'a StoredMessage, failed: &'a [Bounce])
    -> BoxFuture<'a, ()>;
    /// Hold (or release) every queued message `account` submitted: the
    /// ids changed.
    fn hold_account<'a>(
        &'a self,
        account: &'a str,
        held: bool,
    ) -> BoxFuture<'a, Result<Vec<String>, String>>;
    /// The ids of `account`'s queued messages, and of those held.
    fn messages_of<'a>(&'a self, account: &'a str) -> BoxFuture<'a, (Vec<String>, Vec<String>)>;
}

impl Intake for Queue {
    fn new_id(&self) -> String {
        Queue::new_id(self)
    }

    fn enqueue(
        &self,
        envelope: Envelope,
        data: Arc<Vec<u8>>,
    ) -> BoxFuture<'_, Result<(), SpoolError>> {
        Box::pin(Queue::enqueue(self, envelope, data))
    }

    fn enqueue_held<'a>(
        &'a self,
        envelope: Envelope,
        data: Arc<Vec<u8>>,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), SpoolError>> {
        Box::pin(Queue::enqueue_held(self, envelope, data, reason))
    }

    fn bounce<'a>(
        &'a self,
        original: &'a StoredMessage,
        failed: &'a [Bounce],
    ) -> BoxFuture<'a, ()> {
        Box::pin(Queue::bounce(self, original, failed, ReportKind::Failure))
    }

    fn hold_account<'a>(
        &'a self,
        account: &'a str,
        held: bool,
    ) -> BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async move {
            Queue::hold_account(self, account, held)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn messages_of<'a>(&'a self, account: &'a str) -> BoxFuture<'a, (Vec<String>, Vec<String>)> {
        Box::pin(async move {
            let mut all = (Vec::new(), Vec::new());
            for m in self.list().await {
                let env = &m.message.envelope;
                if env
                    .auth
                    .as_deref()
                    .is_some_and(|a| a.eq_ignore_ascii_case(account))
                {
                    all.0.push(env.id.clone());
                    if m.state == portcullis_queue::QueueState::Held {
                        all.1.push(env.id.clone());
                    }
                }
            }
            all
        })
    }
}
