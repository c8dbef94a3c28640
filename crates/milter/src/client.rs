//! One connection to one milter: connect over `unix:` or `inet:`,
//! negotiate, send commands and read answers, each wait bounded by the
//! milter's `timeout_ms` (a progress message starts the wait again). It
//! counts what it sends and hears in the metrics; what the answers mean
//! is `session.rs`'s business.

use crate::proto::{self, Command, Decoder, Negotiated, Response, action, step};
use portcullis_config::{Milter, MilterSocket, MilterStep};
use portcullis_metrics::{Counter, Histogram, Metrics};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;

/// Why a milter could not be used.
#[derive(Debug, Error)]
pub enum Failure {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connection lost: {0}")]
    Io(std::io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("all {0} connections in use")]
    Busy(usize),
}

impl Failure {
    /// The metrics' `reason` label.
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::Connect(_) => "connect",
            Failure::Timeout(_) => "timeout",
            Failure::Io(_) => "io",
            Failure::Protocol(_) => "protocol",
            Failure::Busy(_) => "busy",
        }
    }
}

impl From<proto::Error> for Failure {
    fn from(e: proto::Error) -> Failure {
        Failure::Protocol(e.to_string())
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Sync + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin> Io for T {}

/// An open, negotiated connection.
pub struct Link {
    io: Box<dyn Io>,
    decoder: Decoder,
    pub negotiated: Negotiated,
    name: String,
    wait: Duration,
    metrics: Arc<Metrics>,
    _permit: OwnedSemaphorePermit,
}

/// The NO* flags for the steps the config says to leave out.
fn skip_flags(steps: &[MilterStep]) -> u32 {
    steps.iter().fold(0, |f, s| {
        f | match s {
            MilterStep::Connect => step::NOCONNECT,
            MilterStep::Helo => step::NOHELO,
            MilterStep::Mail => step::NOMAIL,
            MilterStep::Rcpt => step::NORCPT,
            MilterStep::Data => step::NODATA,
            MilterStep::Headers => step::NOHDRS,
            MilterStep::Eoh => step::NOEOH,
            MilterStep::Body => step::NOBODY,
        }
    })
}

async fn connect(socket: &MilterSocket) -> std::io::Result<Box<dyn Io>> {
    Ok(match socket {
        MilterSocket::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
        MilterSocket::Inet { host, port } => {
            let s = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
            s.set_nodelay(true)?;
            Box::new(s)
        }
    })
}

impl Link {
    /// Connect (within the connection bound) and negotiate.
    pub async fn open(
        milter: &Milter,
        permits: Arc<Semaphore>,
        metrics: Arc<Metrics>,
    ) -> Result<Link, Failure> {
        let wait = Duration::from_millis(milter.timeout_ms);
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => match timeout(wait, permits.acquire_owned()).await {
                Ok(Ok(p)) => p,
                _ => return Err(Failure::Busy(milter.max_connections)),
            },
        };
        let io = match timeout(wait, connect(&milter.socket)).await {
            Ok(Ok(io)) => io,
            Ok(Err(e)) => return Err(Failure::Connect(e)),
            Err(_) => return Err(Failure::Timeout(wait)),
        };
        let mut link = Link {
            io,
            decoder: Decoder::default(),
            negotiated: Negotiated::default(),
            name: milter.name.clone(),
            wait,
            metrics,
            _permit: permit,
        };
        link.negotiate(skip_flags(&milter.skip)).await?;
        Ok(link)
    }

    async fn negotiate(&mut self, skipped: u32) -> Result<(), Failure> {
        let offer = Command::OptNeg {
            version: proto::VERSION,
            actions: action::ALL,
            protocol: step::OFFERED,
        };
        let mut mods = Vec::new();
        let Response::OptNeg(mut n) = self.ask(&offer, "optneg", &mut mods).await? else {
            return Err(Failure::Protocol("no option negotiation answer".into()));
        };
        if !(2..=proto::VERSION).contains(&n.version) {
            return Err(Failure::Protocol(format!(
                "version {} not spoken",
                n.version
            )));
        }
        if n.protocol & !step::OFFERED != 0 {
            let extra = n.protocol & !step::OFFERED;
            return Err(Failure::Protocol(format!(
                "asks for steps {extra:#x} we do not offer"
            )));
        }
        if n.actions & !action::ALL != 0 {
            let extra = n.actions & !action::ALL;
            return Err(Failure::Protocol(format!(
                "asks for actions {extra:#x} we do not offer"
            )));
        }
        n.protocol |= skipped;
        self.negotiated = n;
        Ok(())
    }

    /// Send a command that gets no answer (macros, abort, quit, or a step
    /// the milter said it would not answer).
    pub async fn tell(&mut self, cmd: &Command<'_>) -> Result<(), Failure> {
        let bytes = cmd.encode();
        match timeout(self.wait, self.io.write_all(&bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Failure::Io(e)),
            Err(_) => Err(Failure::Timeout(self.wait)),
        }
    }

    /// Send a command and read up to its final answer; modifications and
    /// quarantine requests on the way are pushed to `mods`.
    pub async fn ask(
        &mut self,
        cmd: &Command<'_>,
        step: &'static str,
        mods: &mut Vec<Response>,
    ) -> Result<Response, Failure> {
        let t0 = Instant::now();
        self.tell(cmd).await?;
        self.metrics.inc(
            Counter::MilterRequests,
            &[("milter", &self.name), ("step", step)],
        );
        loop {
            let r = self.read().await?;
            self.metrics.inc(
                Counter::MilterAnswers,
                &[("milter", &self.name), ("kind", r.kind())],
            );
            if r.is_final() {
                let labels = [("milter", self.name.as_str())];
                self.metrics
                    .observe(Histogram::MilterLatency, &labels, t0.elapsed());
                return Ok(r);
            }
            if r != Response::Progress {
                mods.push(r);
            }
        }
    }

    /// The next response, each read bounded by the timeout.
    async fn read(&mut self) -> Result<Response, Failure> {
        let mut buf = vec![0u8; 8192];
        loop {
            if let Some(r) = self.decoder.next_response()? {
                return Ok(r);
            }
            let want = self.decoder.wanted().min(buf.len());
            match timeout(self.wait, self.io.read(&mut buf[..want])).await {
                Ok(Ok(0)) => {
                    let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed");
                    return Err(Failure::Io(eof));
                }
                Ok(Ok(n)) => self.decoder.feed(&buf[..n]),
                Ok(Err(e)) => return Err(Failure::Io(e)),
                Err(_) => return Err(Failure::Timeout(self.wait)),
            }
        }
    }

    /// Say goodbye without waiting for it (the session is over).
    pub fn quit(mut self) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = timeout(
                    Duration::from_secs(1),
                    self.io.write_all(&Command::Quit.encode()),
                )
                .await;
            });
        }
    }
}
