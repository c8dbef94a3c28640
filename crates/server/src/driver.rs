//! The mechanical driver of one SMTP session (quinn's endpoint driver,
//! chasquid's one loop that owns the I/O): feed the session what the
//! socket gives, turn each action it asks for into one call of the way in
//! (`portcullis-pipeline`), hand the stage's result back to the session as
//! it comes, write its replies. No decision is made here, and no state of
//! a transaction is kept here: the session's transaction carries it.

use crate::{Context, tls};
use portcullis_config::ListenerRole;
use portcullis_pipeline::{Connection, Txn};
use portcullis_smtp::{Action, Peer, SessionConfig};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tracing::info;

/// Read sizes while waiting for a command and while reading content.
const COMMAND_READ: usize = 1024;
const DATA_READ: usize = 32 * 1024;

/// Longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct Driver {
    pub ctx: Arc<Context>,
    pub conn: Connection,
    pub role: ListenerRole,
    pub pregreet_wait: Duration,
    pub session_config: Arc<SessionConfig>,
    /// Becomes true when the server is stopping.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

enum Exit {
    Closed,
    StartTls,
}

type IoResult<T> = std::io::Result<T>;

/// The session, carrying the way in's state of each transaction.
type Session = portcullis_smtp::Session<Txn>;

impl Driver {
    pub(crate) async fn run(mut self, stream: TcpStream) {
        let id = self.conn.id().to_owned();
        match self.serve(stream).await {
            Ok(()) => info!(session = %id, event = "disconnect"),
            Err(e) => info!(session = %id, event = "disconnect", error = %e),
        }
    }

    async fn serve(&mut self, mut stream: TcpStream) -> IoResult<()> {
        let connected = self.conn.connect().await;
        let outcome = if connected.is_ok() {
            "admitted"
        } else {
            "refused_dns_list"
        };
        crate::listen::count_connection(&self.ctx, self.role, outcome);
        let peer = Peer {
            addr: self.conn.peer(),
            ptr: connected.as_ref().ok().cloned().flatten(),
        };
        let mut session = Session::new(self.session_config.clone(), peer, None);
        if self.role == ListenerRole::Submissions {
            // RFC 8314: on 465 TLS starts at once, and the greeting after.
            return Box::pin(self.continue_in_tls(stream, session, true)).await;
        }
        match connected {
            Err(r) => {
                info!(session = %self.conn.id(), event = "refused", reason = "dns_list", reply = %r);
                session.refuse(r);
            }
            Ok(_) if self.talks_first(&stream).await => {
                info!(session = %self.conn.id(), event = "refused", reason = "early_talker");
                session.refuse_early_talker();
            }
            Ok(_) => {
                let delay = self.conn.greeting_delay();
                // A zero sleep still waits for the timer's next tick (1 ms).
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                session.start();
            }
        }
        if let Exit::StartTls = self.drive(&mut stream, &mut session).await? {
            // Boxed: the TLS state is large, and most sessions never need it
            // (it would otherwise sit in every connection task's future).
            Box::pin(self.continue_in_tls(stream, session, false)).await?;
        }
        Ok(())
    }

    async fn continue_in_tls(
        &mut self,
        stream: TcpStream,
        mut s: Session,
        greet: bool,
    ) -> IoResult<()> {
        let accept = self.ctx.tls().accept(stream);
        let mut io = match timeout(HANDSHAKE_TIMEOUT, accept).await {
            Ok(r) => r?,
            Err(_) => {
                let e =
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out");
                return Err(e);
            }
        };
        s.tls_established(tls::describe(io.get_ref().1));
        if let Some(t) = s.tls() {
            info!(session = %self.conn.id(), event = "tls", version = %t.version, cipher = %t.cipher);
        }
        if greet {
            s.start();
        }
        self.drive(&mut io, &mut s).await?;
        Ok(())
    }

    /// postscreen's pregreet test: a client that sends before our greeting
    /// is not an SMTP client waiting for replies. With no wait configured
    /// this still catches bytes that arrived with the connection.
    async fn talks_first(&self, stream: &TcpStream) -> bool {
        let mut probe = [0u8; 1];
        if self.pregreet_wait.is_zero() {
            // Only what is there now: a zero timeout would still wait for
            // the timer's next tick, a millisecond on every connection.
            let mut buf = tokio::io::ReadBuf::new(&mut probe);
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            return matches!(stream.poll_peek(&mut cx, &mut buf), std::task::Poll::Ready(Ok(n)) if n > 0);
        }
        matches!(timeout(self.pregreet_wait, stream.peek(&mut probe)).await, Ok(Ok(n)) if n > 0)
    }

    /// Run the session over `io` until it closes or asks for TLS.
    async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        s: &mut Session,
    ) -> IoResult<Exit> {
        let mut out = Vec::with_capacity(512);
        let mut buf = Vec::new();
        loop {
            while let Some(action) = s.poll() {
                match action {
                    Action::Reply(r) => {
                        if r.code >= 400 {
                            info!(session = %self.conn.id(), event = "reply", reply = %r);
                            crate::listen::count_refusal(&self.ctx, self.role, &r);
                        }
                        r.write_to(&mut out);
                    }
                    Action::StartTls => {
                        self.write_out(io, &mut out, s).await?;
                        return Ok(Exit::StartTls);
                    }
                    Action::Authenticate(c) => {
                        let identity = self.conn.authenticate(c).await;
                        s.answer_auth(identity);
                    }
                    Action::CheckMail { from, params } => {
                        let helo = s.helo_name().unwrap_or("");
                        let (account, tls) = (s.authenticated(), s.tls());
                        let txn = self
                            .conn
                            .mail(account, helo, from.as_ref(), &params, tls)
                            .await;
                        s.answer_mail(txn);
                    }
                    Action::CheckRcpt { to, .. } => {
                        let checked = match s.transaction() {
                            Some(txn) => self.conn.rcpt(txn, &to).await,
                            // Never asked outside a transaction; were it, the
                            // session refuses the RCPT itself (503).
                            None => Ok(()),
                        };
                        s.answer_rcpt(checked);
                    }
                    Action::Deliver(txn) => {
                        // Replies before DATA's end go out now, so the client
                        // is not kept waiting for them behind the fsync.
                        self.write_out(io, &mut out, s).await?;
                        let queued = self.conn.data(*txn).await;
                        s.answer_data(queued);
                    }
                    Action::Close => {
                        self.write_out(io, &mut out, s).await?;
                        let _ = timeout(Duration::from_secs(5), io.shutdown()).await;
                        return Ok(Exit::Closed);
                    }
                }
            }
            self.write_out(io, &mut out, s).await?;
            // Idle sessions between commands hold a small buffer; content
            // is read in large pieces.
            let want = if s.in_data() { DATA_READ } else { COMMAND_READ };
            if buf.len() != want {
                buf = vec![0u8; want];
            }
            // A stopping server lets a message being sent finish, and
            // tells everyone else 421 at once.
            let in_data = s.in_data();
            let mut stop = self.shutdown.clone();
            let stopping = async move {
                if in_data || stop.wait_for(|v| *v).await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                biased;
                () = stopping => s.shut_down(),
                read = timeout(s.timeout(), io.read(&mut buf)) => match read {
                    Err(_) => s.timed_out(),
                    Ok(Ok(0)) => return Ok(Exit::Closed),
                    Ok(Ok(n)) => s.feed(&buf[..n]),
                    Ok(Err(e)) => return Err(e),
                },
            }
        }
    }

    /// Write pending replies, after the tarpit's delay and within the
    /// session's timeout: a client that stops reading must not hold the
    /// task forever.
    async fn write_out<S: AsyncWrite + Unpin>(
        &self,
        io: &mut S,
        out: &mut Vec<u8>,
        s: &Session,
    ) -> IoResult<()> {
        if out.is_empty() {
            return Ok(());
        }
        let delay = self.conn.reply_delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let write = async {
            io.write_all(out).await?;
            io.flush().await
        };
        match timeout(s.timeout(), write).await {
            Ok(r) => r?,
            Err(_) => {
                let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "client stopped reading");
                return Err(e);
            }
        }
        out.clear();
        Ok(())
    }
}
