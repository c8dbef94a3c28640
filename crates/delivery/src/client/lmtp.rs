//! LMTP (RFC 2033) to a local mail store such as Dovecot.

use super::{Outgoing, Reply, dot_stuff, open, outcome_of, session_failure};
use crate::outcome::{Answer, HostFailure, RcptOutcome, Status};
use std::net::SocketAddr;

/// Deliver to an LMTP server (RFC 2033): LHLO instead of EHLO, and after
/// the data one reply per accepted recipient, so each mailbox's own
/// answer (full, over quota) reaches its recipient.
pub async fn deliver_lmtp(
    addr: SocketAddr,
    msg: &Outgoing<'_>,
) -> Result<Vec<RcptOutcome>, HostFailure> {
    let mut c = open(addr, None, "LMTP").await?;
    let lhlo = c.command(&format!("LHLO {}", msg.helo)).await?;
    if lhlo.code != 250 {
        return Err(session_failure("LHLO", &lhlo));
    }
    let r = c.command(&format!("MAIL FROM:<{}>", msg.sender)).await?;
    if r.code != 250 {
        return Err(session_failure("MAIL FROM", &r));
    }
    let mut outcomes: Vec<Option<RcptOutcome>> = Vec::with_capacity(msg.recipients.len());
    for rcpt in msg.recipients {
        let r = c.command(&format!("RCPT TO:<{rcpt}>")).await?;
        outcomes.push(reply_outcome(&r, false));
    }
    let accepted = outcomes.iter().filter(|o| o.is_none()).count();
    if accepted > 0 {
        let r = c.command("DATA").await?;
        if r.code != 354 {
            return Err(session_failure("DATA", &r));
        }
        c.send(&dot_stuff(msg.data)).await?;
        // One reply per accepted recipient, in RCPT order.
        for slot in outcomes.iter_mut().filter(|o| o.is_none()) {
            let r = c.read_reply().await?;
            *slot = reply_outcome(&r, true);
        }
    }
    let _ = c.command("QUIT").await;
    Ok(outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or_else(|| RcptOutcome::Temporary(Answer::new(Status(4, 4, 2), "no reply")))
        })
        .collect())
}

/// A reply as an outcome; `None` for a 2xx that only accepts a recipient
/// (`final_reply` false) and so has no outcome yet.
fn reply_outcome(r: &Reply, final_reply: bool) -> Option<RcptOutcome> {
    match r.code {
        200..=299 if !final_reply => None,
        _ => Some(outcome_of(r)),
    }
}
