//! The operator's alert when an account is contained: a signed webhook
//! (`X-Portcullis-Signature: sha256=HEX`, the HMAC-SHA256 of the body)
//! retried with back-off, and/or a mail to `alert_mailbox`. Alerts go
//! through a bounded channel to a task of their own: a webhook that is
//! down or slow never delays mail, and when the channel is full an
//! alert is dropped and logged rather than waited for.

use crate::Intake;
use portcullis_containment::{ALERT_TRIES, Alert, Contained, SIGNATURE_HEADER, retry_delay, sign};
use portcullis_queue::{Envelope, QueuedRecipient};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Alerts waiting to go out at most.
const WAITING: usize = 256;
/// One webhook try's limit (connect, send, read the status line).
const TRY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where alerts go (from `[containment]`, read at start).
#[derive(Clone, Debug)]
pub struct AlertSettings {
    pub hostname: String,
    pub webhook_url: Option<String>,
    pub webhook_secret: String,
    pub mailbox: Option<String>,
}

impl AlertSettings {
    pub fn from_config(c: &portcullis_config::Config) -> Option<AlertSettings> {
        let k = &c.containment;
        (k.webhook_url.is_some() || k.alert_mailbox.is_some()).then(|| AlertSettings {
            hostname: c.hostname.clone(),
            webhook_url: k.webhook_url.clone(),
            webhook_secret: k.webhook_secret.clone(),
            mailbox: k.alert_mailbox.clone(),
        })
    }
}

/// The sending side: never waits.
#[derive(Clone)]
pub struct Alerts {
    tx: mpsc::Sender<Alert>,
    hostname: String,
}

impl Alerts {
    /// Start the alert task; it ends when every `Alerts` is dropped.
    pub fn start(
        settings: AlertSettings,
        queue: Arc<dyn Intake>,
    ) -> (Alerts, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(WAITING);
        let hostname = settings.hostname.clone();
        let task = tokio::spawn(run(settings, queue, rx));
        (Alerts { tx, hostname }, task)
    }

    pub(crate) fn send(&self, account: &str, c: &Contained) {
        let alert = Alert::new(account, &self.hostname, c);
        if self.tx.try_send(alert).is_err() {
            warn!(event = "containment_alert_dropped", account = %account, reason = "too many waiting");
        }
    }
}

async fn run(settings: AlertSettings, queue: Arc<dyn Intake>, mut rx: mpsc::Receiver<Alert>) {
    let mut posts = tokio::task::JoinSet::new();
    while let Some(alert) = rx.recv().await {
        if let Some(mailbox) = &settings.mailbox {
            mail(&settings, queue.as_ref(), mailbox, &alert).await;
        }
        if let Some(url) = settings.webhook_url.clone() {
            let secret = settings.webhook_secret.clone();
            posts.spawn(post_with_retries(url, secret, alert));
        }
        while posts.try_join_next().is_some() {}
    }
    while posts.join_next().await.is_some() {}
}

async fn post_with_retries(url: String, secret: String, alert: Alert) {
    let body = alert.body();
    let signature = sign(secret.as_bytes(), &body);
    for n in 1..=ALERT_TRIES {
        match tokio::time::timeout(TRY_TIMEOUT, post(&url, &signature, &body)).await {
            Ok(Ok(status)) if (200..300).contains(&status) => {
                info!(event = "containment_alert_sent", account = %alert.account, to = "webhook", status);
                return;
            }
            Ok(Ok(status)) => {
                warn!(event = "containment_alert_failed", account = %alert.account, try_ = n, status)
            }
            Ok(Err(e)) => {
                warn!(event = "containment_alert_failed", account = %alert.account, try_ = n, error = %e)
            }
            Err(_) => {
                warn!(event = "containment_alert_failed", account = %alert.account, try_ = n, error = "timed out")
            }
        }
        if n < ALERT_TRIES {
            tokio::time::sleep(retry_delay(n)).await;
        }
    }
    warn!(event = "containment_alert_given_up", account = %alert.account, tries = ALERT_TRIES);
}

/// `http://host[:port]/path` split; None when it is not such a URL.
fn split_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return None;
    }
    let authority = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !authority.ends_with(']')
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Some((authority, path.to_owned()))
}

/// One POST: the HTTP status of the answer.
async fn post(url: &str, signature: &str, body: &[u8]) -> std::io::Result<u16> {
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, why.to_owned());
    let (authority, path) = split_url(url).ok_or_else(|| bad("not an http:// URL"))?;
    let host = authority
        .rsplit_once(':')
        .map_or(authority.as_str(), |(h, _)| h);
    let mut s = tokio::net::TcpStream::connect(&authority).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{SIGNATURE_HEADER}: {signature}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    s.flush().await?;
    let mut answer = Vec::new();
    (&mut s).take(64 * 1024).read_to_end(&mut answer).await?;
    let line = String::from_utf8_lossy(&answer);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("no HTTP status in the answer"))
}

/// The postmaster's copy: a plain-text message queued like any other.
async fn mail(settings: &AlertSettings, queue: &dyn Intake, mailbox: &str, alert: &Alert) {
    let id = queue.new_id();
    let from = format!("postmaster@{}", settings.hostname);
    let date = portcullis_smtp::rfc5322_date(std::time::SystemTime::now());
    let text = format!(
        "From: <{from}>\r\nTo: <{mailbox}>\r\nSubject: Account {} put on {}\r\nDate: {date}\r\nMessage-ID: <{id}.alert@{}>\r\nAuto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}",
        alert.account,
        alert.contained.action.name(),
        settings.hostname,
        alert.text().replace('\n', "\r\n")
    );
    let envelope = Envelope {
        id,
        sender: String::new(),
        recipients: vec![QueuedRecipient {
            address: mailbox.to_owned(),
            ..QueuedRecipient::default()
        }],
        received_at: portcullis_config::clock::now_secs(),
        client_ip: "127.0.0.1".into(),
        helo: settings.hostname.clone(),
        ..Envelope::default()
    };
    match queue.enqueue(envelope, Arc::new(text.into_bytes())).await {
        Ok(()) => info!(event = "containment_alert_sent", account = %alert.account, to = %mailbox),
        Err(e) => {
            warn!(event = "containment_alert_failed", account = %alert.account, to = %mailbox, error = %e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_url;

    #[test]
    fn webhook_urls_split_into_authority_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:8080/hook"),
            Some(("127.0.0.1:8080".into(), "/hook".into()))
        );
        assert_eq!(
            split_url("http://alerts.example.test"),
            Some(("alerts.example.test:80".into(), "/".into()))
        );
        assert_eq!(split_url("https://x.test/"), None);
    }
}
