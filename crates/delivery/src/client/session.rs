//! One SMTP session after EHLO (and STARTTLS, and AUTH): the
//! transactions it carries, the RSET between them (RFC 5321 §4.1.1.5)
//! and the QUIT that ends it. Whether a session may carry another
//! transaction is decided here, from the replies alone: the cache of idle
//! sessions (`cache.rs`) decides for how long and how many.

use super::{
    Conn, Outgoing, Reply, dot_stuff, has_extension, outcome_of, rcpt_outcome, session_failure,
    temp,
};
use crate::outcome::{HostFailure, RcptOutcome, Status};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::io::ReadBuf;
use tokio::time::timeout;

/// RSET on a session that waited in the cache: a live server answers at
/// once (Postfix waits `smtp_rset_timeout`, 20 s).
const RSET_TIMEOUT: Duration = Duration::from_secs(20);
/// QUIT is a courtesy: a server that does not answer it is left.
const QUIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A session ready for a transaction.
pub(crate) struct SmtpSession {
    conn: Conn,
    /// The EHLO reply the transactions read the extensions from (the one
    /// after STARTTLS where TLS was started).
    ehlo: Reply,
    /// The last transaction ended so that another may follow.
    reusable: bool,
    /// The last transaction sent the message's data: whether the server
    /// took it is not known when the session broke after that.
    data_sent: bool,
}

impl SmtpSession {
    pub(super) fn new(conn: Conn, ehlo: Reply) -> SmtpSession {
        SmtpSession {
            conn,
            ehlo,
            reusable: false,
            data_sent: false,
        }
    }

    /// Whether the last transaction left the session fit for another:
    /// it ended with a 2xx to the message and no 421 (the server
    /// closing, RFC 5321 §3.8) on the way.
    pub(crate) fn reusable(&self) -> bool {
        self.reusable
    }

    /// Whether the last transaction broke after the message's data was
    /// sent: a retry on another connection could deliver it twice.
    pub(crate) fn data_sent(&self) -> bool {
        self.data_sent
    }

    /// One transaction: MAIL, RCPT for every recipient, DATA. Ok: an
    /// outcome per recipient, in order.
    pub(crate) async fn transaction(
        &mut self,
        msg: &Outgoing<'_>,
    ) -> Result<Vec<RcptOutcome>, HostFailure> {
        self.reusable = false;
        self.data_sent = false;
        let (outcomes, healthy) = self.exchange(msg).await?;
        self.reusable = healthy;
        Ok(outcomes)
    }

    /// The transaction's commands and replies; the outcomes, and whether
    /// the session ended it healthy.
    async fn exchange(
        &mut self,
        msg: &Outgoing<'_>,
    ) -> Result<(Vec<RcptOutcome>, bool), HostFailure> {
        let ehlo = &self.ehlo;
        let mut mail = format!("MAIL FROM:<{}>", msg.sender);
        if has_extension(ehlo, "SIZE") {
            mail.push_str(&format!(" SIZE={}", msg.data.len()));
        }
        if msg.eight_bit && has_extension(ehlo, "8BITMIME") {
            mail.push_str(" BODY=8BITMIME");
        }
        if msg.smtputf8 {
            if !has_extension(ehlo, "SMTPUTF8") {
                // RFC 6531 §3.5: the message cannot go on; X.6.7 (RFC 6531 §3.7.4).
                return Err(HostFailure::permanent(
                    Status(5, 6, 7),
                    "the message needs SMTPUTF8, which the server does not offer",
                ));
            }
            mail.push_str(" SMTPUTF8");
        }
        if msg.requiretls {
            if !has_extension(ehlo, "REQUIRETLS") {
                // RFC 8689 §4.2.1, §5: X.7.30, "REQUIRETLS support required".
                return Err(HostFailure::permanent(
                    Status(5, 7, 30),
                    "the message requires REQUIRETLS, which the server does not offer",
                ));
            }
            mail.push_str(" REQUIRETLS");
        }
        let rcpt_lines: Vec<String> = msg
            .recipients
            .iter()
            .map(|r| format!("RCPT TO:<{r}>\r\n"))
            .collect();
        let pipelining = has_extension(ehlo, "PIPELINING");
        let c = &mut self.conn;
        // A 421 anywhere: the server is closing the session.
        let mut closing = false;
        let (mail_reply, outcomes, data_reply) = if pipelining {
            // RFC 2920: MAIL, every RCPT and DATA in one write, then the
            // replies in order; DATA is refused by the server if no RCPT was
            // accepted, so nothing is sent by mistake.
            let mut batch = format!("{mail}\r\n");
            batch.extend(rcpt_lines.iter().map(String::as_str));
            batch.push_str("DATA\r\n");
            c.send(batch.as_bytes()).await?;
            let mail_reply = c.read_reply().await?;
            let mut outcomes = Vec::with_capacity(rcpt_lines.len());
            for _ in &rcpt_lines {
                let r = c.read_reply().await?;
                closing |= r.code == 421;
                outcomes.push(rcpt_outcome(&r));
            }
            let data_reply = c.read_reply().await?;
            (mail_reply, outcomes, Some(data_reply))
        } else {
            let mail_reply = c.command(&mail).await?;
            let mut outcomes = Vec::with_capacity(rcpt_lines.len());
            if mail_reply.code == 250 {
                for line in &rcpt_lines {
                    c.send(line.as_bytes()).await?;
                    let r = c.read_reply().await?;
                    closing |= r.code == 421;
                    outcomes.push(rcpt_outcome(&r));
                }
            }
            (mail_reply, outcomes, None)
        };
        if mail_reply.code != 250 {
            return Err(session_failure("MAIL FROM", &mail_reply));
        }
        if outcomes.iter().all(Option::is_some) {
            // Every recipient refused: the last reply was a failure.
            return Ok((outcomes.into_iter().flatten().collect(), false));
        }
        let r = match data_reply {
            Some(r) => r,
            None => c.command("DATA").await?,
        };
        if r.code != 354 {
            return Err(session_failure("DATA", &r));
        }
        self.data_sent = true;
        c.send(&dot_stuff(msg.data)).await?;
        let r = c.read_reply().await?;
        let final_outcome = outcome_of(&r);
        let healthy = !closing && (200..300).contains(&r.code);
        let outcomes = outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| final_outcome.clone()))
            .collect();
        Ok((outcomes, healthy))
    }

    /// RSET before a session's next transaction: also the proof that the
    /// server is still there.
    pub(crate) async fn reset(&mut self) -> Result<(), HostFailure> {
        let r = timeout(RSET_TIMEOUT, self.conn.command("RSET"))
            .await
            .map_err(|_| temp("timeout waiting for the reply to RSET"))??;
        if r.code != 250 {
            return Err(session_failure("RSET", &r));
        }
        Ok(())
    }

    /// Whether the server has closed the idle session or said something
    /// unasked (a `421` before it closes): looked at without waiting.
    pub(crate) async fn peer_gone(&mut self) -> bool {
        if !self.conn.buf.is_empty() {
            return true;
        }
        let mut chunk = [0u8; 512];
        let io = &mut self.conn.io;
        std::future::poll_fn(|cx| {
            let mut buf = ReadBuf::new(&mut chunk);
            match Pin::new(&mut **io).poll_read(cx, &mut buf) {
                Poll::Pending => Poll::Ready(false),
                // End of stream, an error or bytes nobody asked for.
                Poll::Ready(_) => Poll::Ready(true),
            }
        })
        .await
    }

    /// End the session politely (RFC 5321 §4.1.1.10).
    pub(crate) async fn quit(mut self) {
        let _ = timeout(QUIT_TIMEOUT, self.conn.command("QUIT")).await;
    }
}
