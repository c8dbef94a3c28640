//! The control socket's server side: `DATA/control.sock`, reachable only
//! by the server's own user (mode 0600). One JSON request per line, one
//! JSON answer per line; a request longer than `MAX_REQUEST` or that is
//! not JSON gets an error answer and the connection is closed.

use crate::{Answer, Control, ControlError, Request};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::warn;

/// No request the CLI sends comes near this.
const MAX_REQUEST: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("another portcullis already serves {0} (its control socket answers)")]
    InUse(PathBuf),
    #[error("cannot listen on the control socket {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

/// Listen on the data directory's control socket, once [`crate::claim`]
/// holds the directory: a socket file left by a server that died is
/// replaced; one that answers is another server (one that predates the
/// lock file).
pub fn bind(data_dir: &Path) -> Result<UnixListener, SocketError> {
    let path = socket_path(data_dir);
    if std::os::unix::net::UnixStream::connect(&path).is_ok() {
        return Err(SocketError::InUse(path));
    }
    let _ = std::fs::remove_file(&path);
    let bind_err = |source| SocketError::Bind {
        path: path.clone(),
        source,
    };
    let listener = UnixListener::bind(&path).map_err(bind_err)?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok(listener)
}

impl Control {
    /// Serve the socket until the task is dropped.
    pub async fn serve(self, listener: UnixListener) {
        let mut clients = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        clients.spawn(self.clone().converse(stream));
                    }
                    Err(e) => warn!(event = "control_accept_failed", error = %e),
                },
                Some(_) = clients.join_next(), if !clients.is_empty() => {}
            }
        }
    }

    async fn converse(self, stream: UnixStream) {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read);
        let mut line = Vec::new();
        loop {
            line.clear();
            let mut limited = (&mut lines).take(MAX_REQUEST as u64 + 1);
            match limited.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let (answer, close) = match serde_json::from_slice::<Request>(&line) {
                _ if line.len() > MAX_REQUEST => (refusal("request too long"), true),
                Ok(req) => (self.answer(req).await, false),
                Err(e) => (refusal(&format!("not a request: {e}")), true),
            };
            let mut text = serde_json::to_vec(&answer).unwrap_or_default();
            text.push(b'\n');
            if write.write_all(&text).await.is_err() || close {
                return;
            }
        }
    }

    async fn answer(&self, req: Request) -> Answer {
        match self.handle(req).await {
            Ok(value) => Answer { value, error: None },
            Err(e) => Answer {
                value: serde_json::Value::Null,
                error: Some(e),
            },
        }
    }
}

fn refusal(why: &str) -> Answer {
    Answer {
        value: serde_json::Value::Null,
        error: Some(ControlError::Refused(why.to_owned())),
    }
}

use tokio::io::AsyncReadExt as _;
