//! The control socket's client side, for the CLI: blocking, with a
//! timeout, and `None` from [`Client::connect`] when no server listens
//! (then the CLI works on the files or Redis itself).

use crate::{Answer, ControlError, Request};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long the CLI waits for a running server's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    // Transparent: the CLI prints the error chain, and the server's
    // refusal is the whole message (not said twice).
    #[error(transparent)]
    Refused(#[from] ControlError),
    #[error("the running server did not answer on its control socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("the running server's answer is not understood: {0}")]
    Garbled(#[from] serde_json::Error),
}

pub struct Client {
    stream: BufReader<UnixStream>,
}

impl Client {
    /// The running server of `data_dir`, if one answers.
    pub fn connect(data_dir: &Path) -> Option<Client> {
        let stream = UnixStream::connect(crate::socket_path(data_dir)).ok()?;
        stream.set_read_timeout(Some(ANSWER_TIMEOUT)).ok()?;
        stream.set_write_timeout(Some(ANSWER_TIMEOUT)).ok()?;
        Some(Client {
            stream: BufReader::new(stream),
        })
    }

    /// Wait up to `limit` for answers (an ACME order takes longer than
    /// the usual request).
    pub fn patient(self, limit: Duration) -> Client {
        let _ = self.stream.get_ref().set_read_timeout(Some(limit));
        self
    }

    pub fn request(&mut self, r: &Request) -> Result<serde_json::Value, ClientError> {
        let mut line = serde_json::to_vec(r)?;
        line.push(b'\n');
        self.stream.get_mut().write_all(&line)?;
        let mut answer = String::new();
        self.stream.read_line(&mut answer)?;
        let answer: Answer = serde_json::from_str(&answer)?;
        match answer.error {
            Some(e) => Err(e.into()),
            None => Ok(answer.value),
        }
    }
}
