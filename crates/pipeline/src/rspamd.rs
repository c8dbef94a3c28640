//! Spam verdicts from rspamd over its HTTP protocol (`POST /checkv2` to
//! the normal worker, the envelope in request headers). rspamd's action
//! becomes a verdict for reputation: "no action" is ham; "add header",
//! "rewrite subject" and "reject" are spam; greylisting and soft rejects
//! say nothing about quality.

use portcullis_admission::Verdict;
use portcullis_config::Rspamd;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest answer we read: rspamd's JSON is a few KiB.
const MAX_ANSWER: usize = 1024 * 1024;

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Scan {
    pub action: String,
    pub score: f64,
    pub required: f64,
}

/// What the envelope tells rspamd.
pub(crate) struct Envelope<'a> {
    pub ip: std::net::IpAddr,
    pub helo: &'a str,
    pub from: &'a str,
    pub rcpts: Vec<&'a str>,
    pub queue_id: &'a str,
    /// The authenticated account of a submitted message: rspamd applies
    /// its rules for outbound mail to it.
    pub user: Option<&'a str>,
}

impl Scan {
    pub(crate) fn verdict(&self) -> Option<Verdict> {
        match self.action.as_str() {
            "no action" => Some(Verdict::Ham),
            "add header" | "rewrite subject" | "reject" => Some(Verdict::Spam),
            _ => None,
        }
    }

    pub(crate) fn rejects(&self) -> bool {
        self.action == "reject"
    }

    /// Header lines for the delivered message.
    pub(crate) fn headers(&self) -> String {
        let flag = if self.verdict() == Some(Verdict::Spam) {
            "Yes"
        } else {
            "No"
        };
        format!(
            "X-Spam: {flag}\r\nX-Spam-Status: {flag}, score={:.2} required={:.2} action={}\r\n",
            self.score, self.required, self.action
        )
    }
}

pub(crate) async fn check(
    cfg: &Rspamd,
    env: &Envelope<'_>,
    message: &[u8],
) -> std::io::Result<Scan> {
    let timeout = Duration::from_millis(cfg.timeout_ms);
    match tokio::time::timeout(timeout, exchange(cfg, env, message)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "rspamd did not answer in time",
        )),
    }
}

async fn exchange(cfg: &Rspamd, env: &Envelope<'_>, message: &[u8]) -> std::io::Result<Scan> {
    let mut s = TcpStream::connect(cfg.address).await?;
    let mut req = format!(
        "POST /checkv2 HTTP/1.0\r\nContent-Length: {}\r\nIP: {}\r\nHelo: {}\r\nFrom: {}\r\nQueue-Id: {}\r\n",
        message.len(),
        env.ip,
        clean(env.helo),
        clean(env.from),
        clean(env.queue_id)
    );
    for r in &env.rcpts {
        req.push_str(&format!("Rcpt: {}\r\n", clean(r)));
    }
    if let Some(user) = env.user {
        req.push_str(&format!("User: {}\r\n", clean(user)));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    s.write_all(message).await?;
    s.flush().await?;
    let mut answer = Vec::new();
    (&mut s)
        .take(MAX_ANSWER as u64)
        .read_to_end(&mut answer)
        .await?;
    parse(&answer)
}

/// Envelope values go into header lines: nothing may break the line.
fn clean(v: &str) -> String {
    v.chars().filter(|c| !c.is_control()).collect()
}

fn parse(answer: &[u8]) -> std::io::Result<Scan> {
    let bad =
        |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("rspamd: {why}"));
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no HTTP header end"))?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(bad(&format!("HTTP status {status}")));
    }
    let body: serde_json::Value =
        serde_json::from_slice(&answer[split + 4..]).map_err(|e| bad(&e.to_string()))?;
    Ok(Scan {
        action: body["action"]
            .as_str()
            .ok_or_else(|| bad("no action"))?
            .to_owned(),
        score: body["score"].as_f64().unwrap_or(0.0),
        required: body["required_score"].as_f64().unwrap_or(0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_rspamd_answer() {
        let a = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"action\":\"reject\",\"score\":1000.0,\"required_score\":15.0}";
        let s = parse(a).unwrap();
        assert_eq!(s.verdict(), Some(Verdict::Spam));
        assert!(s.rejects());
        let ham =
            parse(b"HTTP/1.0 200 OK\r\n\r\n{\"action\":\"no action\",\"score\":0.5}").unwrap();
        assert_eq!(ham.verdict(), Some(Verdict::Ham));
        let grey = parse(b"HTTP/1.0 200 OK\r\n\r\n{\"action\":\"greylist\",\"score\":4}").unwrap();
        assert_eq!(
            grey.verdict(),
            None,
            "greylisting says nothing about quality"
        );
    }

    #[test]
    fn refuses_what_is_not_an_answer() {
        assert!(parse(b"HTTP/1.0 500 Oops\r\n\r\n{}").is_err());
        assert!(parse(b"garbage").is_err());
        assert!(parse(b"HTTP/1.0 200 OK\r\n\r\n{\"score\":1}").is_err());
    }

    #[test]
    fn envelope_values_cannot_inject_headers() {
        assert_eq!(clean("a@b\r\nX-Evil: 1"), "a@bX-Evil: 1");
    }
}
