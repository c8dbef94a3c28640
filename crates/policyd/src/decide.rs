//! From a Postfix request to an answer, stage by stage, with the same
//! engine as our own listeners: the class of service at CONNECT (or at
//! the first request of a message), SPF and the message budget at MAIL,
//! quotas, the recipient budget and greylisting at RCPT, bytes, the
//! domain-range rule and reputation at END-OF-MESSAGE. The texts are our
//! own deferrals', remediation URL included.

use crate::{Answer, PolicyService, Request};
use portcullis_authn::AuthResult;
use portcullis_config::clock::now_secs;
use portcullis_pipeline::{Gate, RefusalCause};
use portcullis_smtp::Reply;
use std::net::IpAddr;

/// What the service keeps of one message (Postfix's `instance`).
pub(crate) struct Instance {
    pub gate: Gate,
    /// The sender was judged (SPF, the message budget): at MAIL, or at
    /// the first RCPT when Postfix does not ask at MAIL.
    pub mailed: bool,
    /// The SPF-passing MAIL FROM domain, once the sender was judged.
    pub spf_pass: Option<String>,
    pub at: u64,
}

impl PolicyService {
    pub(crate) async fn decide(&self, r: &Request) -> Answer {
        let Some(ip) = r
            .get("client_address")
            .and_then(|a| a.parse::<IpAddr>().ok())
        else {
            return Answer::dunno("no client_address");
        };
        let key = instance_key(r);
        let state = r.state();
        if state == "MAIL" && r.get("sasl_username").is_some() {
            // Postfix's client logged in: its range is kept out of
            // escalation, as for our own submission listeners.
            self.inbound.admission.logged_in(ip).await;
        }
        if !self.has_instance(&key) {
            match self
                .inbound
                .admission
                .classify(ip, state == "CONNECT")
                .await
            {
                Ok(gate) => self.keep(&key, gate),
                Err(refusal) => {
                    let a = match refusal.cause {
                        RefusalCause::Blocklist => Answer::reject(&refusal.reply),
                        _ => Answer::defer(&refusal.reply),
                    };
                    return a.why(format!("connect: {}", refusal.cause.outcome()));
                }
            }
        }
        match state {
            "MAIL" => self.mail(&key, ip, r).await,
            "RCPT" => self.rcpt(&key, ip, r).await,
            "END-OF-MESSAGE" => self.end_of_message(&key, r).await,
            "CONNECT" => Answer::dunno("connect: admitted"),
            _ => Answer::dunno("nothing to decide at this stage"),
        }
    }

    async fn mail(&self, key: &str, ip: IpAddr, r: &Request) -> Answer {
        let Some(mut inst) = self.take_instance(key) else {
            return Answer::dunno("the message was forgotten");
        };
        let out = self.judge_sender(&mut inst, ip, r).await;
        self.put_instance(key, inst);
        match out {
            Ok(why) => Answer::dunno(why),
            Err(a) => a,
        }
    }

    /// SPF on the sender (RFC 7208, the identity the class of service
    /// needs) and one message from the class's budget; an SPF pass moves
    /// the message to its domain's class.
    async fn judge_sender(
        &self,
        inst: &mut Instance,
        ip: IpAddr,
        r: &Request,
    ) -> Result<String, Answer> {
        inst.mailed = true;
        let sender = r.get("sender");
        let helo = r.get("helo_name").unwrap_or("");
        let spf = self.inbound.checks.spf(ip, helo, sender, now_secs()).await;
        let pass = (spf.result() == AuthResult::Pass && !spf.domain().is_empty())
            .then(|| spf.domain().to_ascii_lowercase());
        inst.spf_pass = pass.clone();
        let out = self
            .inbound
            .admission
            .mail(&mut inst.gate, pass.as_deref())
            .await;
        let why = format!(
            "mail: spf={} class {}",
            spf.result().as_str(),
            inst.gate.class.class
        );
        match out {
            Ok(()) => Ok(why),
            Err(reply) => Err(Answer::defer(&reply).why(why)),
        }
    }

    async fn rcpt(&self, key: &str, ip: IpAddr, r: &Request) -> Answer {
        let inbound = &self.inbound;
        if let Some(account) = r.get("sasl_username") {
            // Authenticated submission through Postfix: the account's quota,
            // counted per recipient as on our own submission listeners.
            return match inbound
                .submission
                .charge_recipient(&inbound.admission.state, account)
                .await
            {
                Ok(()) => Answer::dunno(format!("rcpt: quota of {account}")),
                Err(reply) => Answer::refusal(&reply).why(format!("rcpt: quota of {account}")),
            };
        }
        let Some(mut inst) = self.take_instance(key) else {
            return Answer::dunno("the message was forgotten");
        };
        if !inst.mailed {
            // Postfix asked nothing at MAIL: judge the sender now.
            if let Err(a) = self.judge_sender(&mut inst, ip, r).await {
                self.put_instance(key, inst);
                return a;
            }
        }
        let so_far = r
            .get("recipient_count")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let mut out = inbound.admission.rcpt(&inst.gate, so_far).await;
        if out.is_ok() {
            let to = r.get("recipient").unwrap_or("");
            let cfg = &self.config.greylist;
            out = inbound
                .admission
                .greylist(cfg, &inst.gate, ip, r.get("sender"), to)
                .await;
        }
        let why = format!("rcpt: class {}", inst.gate.class.class);
        self.put_instance(key, inst);
        match out {
            Ok(()) => Answer::dunno(why),
            Err(reply) => Answer::defer(&reply).why(why),
        }
    }

    /// Bytes and the domain-range rule (labelled with PREPEND, as in label
    /// mode on our listener: Postfix's own restrictions decide refusals);
    /// then the message counts for its identity, and is forgotten.
    async fn end_of_message(&self, key: &str, r: &Request) -> Answer {
        let Some(inst) = self.take_instance(key) else {
            return Answer::dunno("the message was forgotten");
        };
        let size = r.get("size").and_then(|n| n.parse().ok()).unwrap_or(0);
        let domains: Vec<String> = inst.spf_pass.iter().cloned().collect();
        let null = r.get("sender").is_none();
        let adm = &self.inbound.admission;
        let out = adm.data(&inst.gate, size, &domains, null, false).await;
        adm.judged(&inst.gate, &domains, None).await;
        let why = format!("end of message: class {}", inst.gate.class.class);
        match out {
            Ok(Some(label)) => Answer::prepend(label.trim_end()).why(why),
            Ok(None) => Answer::dunno(why),
            Err(reply) => Answer::defer(&reply).why(why),
        }
    }
}

/// Postfix's `instance` ties the requests about one message together;
/// without it, the client and HELO name stand in.
fn instance_key(r: &Request) -> String {
    match r.get("instance") {
        Some(i) => i.to_owned(),
        None => format!(
            "{}|{}",
            r.get("client_address").unwrap_or(""),
            r.get("helo_name").unwrap_or("")
        ),
    }
}

/// The action word for a refusal: 4xx deferred, 5xx rejected.
pub(crate) fn action_of(reply: &Reply) -> &'static str {
    if reply.code >= 500 {
        "REJECT"
    } else {
        "DEFER_IF_PERMIT"
    }
}
