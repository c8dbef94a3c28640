//! `queue`: list, show, flush, hold, release and delete queued messages.
//! A running server is asked through its control socket (it holds the
//! messages); with no server, the spool on disk is read and changed.

use anyhow::bail;
use clap::Subcommand;
use portcullis_config::Config;
use portcullis_control::Request;

#[derive(Subcommand)]
pub enum QueueAction {
    /// One line per queued message.
    List,
    /// Envelope, delivery status and content of one message.
    Show {
        /// The queue id (as `queue list` shows it).
        id: String,
    },
    /// Remove a message from the queue for good.
    Delete {
        /// The queue id.
        id: String,
    },
    /// Retry every deferred message now.
    Flush,
    /// Keep a message from being delivered until released.
    Hold {
        /// The queue id.
        id: String,
    },
    /// Let a held message go.
    Release {
        /// The queue id.
        id: String,
    },
}

pub fn queue(action: QueueAction, config: &Config) -> anyhow::Result<()> {
    let dir = config.data_dir.join("spool");
    match action {
        QueueAction::List => {
            if let Some(mut server) = portcullis_control::Client::connect(&config.data_dir) {
                return list_live(&server.request(&Request::QueueList)?);
            }
            let messages = portcullis_queue::inspect(&dir)?;
            for m in &messages {
                let e = &m.envelope;
                let rcpts: Vec<&str> = e.recipients.iter().map(|r| r.address.as_str()).collect();
                let held = if portcullis_queue::is_held(&dir, &e.id) {
                    "  (held)"
                } else {
                    ""
                };
                println!(
                    "{}  {:>8}  <{}>  {}{held}",
                    e.id,
                    m.data.len(),
                    e.sender,
                    rcpts.join(" ")
                );
            }
            println!("{} message(s) queued", messages.len());
            Ok(())
        }
        QueueAction::Show { id } => {
            let messages = portcullis_queue::inspect(&dir)?;
            let Some(m) = messages.iter().find(|m| m.envelope.id == id) else {
                bail!("no message {id} in the queue");
            };
            println!("{}", serde_json::to_string_pretty(&shown(&m.envelope)?)?);
            match portcullis_queue::read_status(&dir, &id) {
                Some(s) => {
                    println!(
                        "attempts: {}, next attempt at {}",
                        s.attempts,
                        portcullis_pipeline::trace::iso8601(s.next_attempt)
                    );
                    for (rcpt, reply) in &s.waiting {
                        println!("  waiting  <{rcpt}>  last reply: {reply}");
                    }
                }
                None => println!("not attempted yet"),
            }
            if let Some(why) = live_reason(config, &id) {
                println!("waiting because: {why}");
            }
            println!();
            print!("{}", String::from_utf8_lossy(&m.data));
            Ok(())
        }
        QueueAction::Flush => {
            let Some(mut server) = portcullis_control::Client::connect(&config.data_dir) else {
                println!("no server is running: every queued message is tried when it starts");
                return Ok(());
            };
            server.request(&Request::QueueFlush)?;
            println!("flush requested: deferred messages are retried now");
            Ok(())
        }
        QueueAction::Hold { id } => queue_change(config, Request::QueueHold { id }, "held"),
        QueueAction::Release { id } => {
            queue_change(config, Request::QueueRelease { id }, "released")
        }
        QueueAction::Delete { id } => queue_change(config, Request::QueueDelete { id }, "deleted"),
    }
}

/// Why the running server's queue says the message waits.
fn live_reason(config: &Config, id: &str) -> Option<String> {
    let mut server = portcullis_control::Client::connect(&config.data_dir)?;
    let list = server.request(&Request::QueueList).ok()?;
    list.as_array()?
        .iter()
        .find(|m| m["id"] == id)
        .and_then(|m| m["waiting_because"].as_str().map(str::to_owned))
}

/// Hold, release or delete: through the running server when there is
/// one (it holds the message), else in the spool on disk.
fn queue_change(config: &Config, r: Request, done: &str) -> anyhow::Result<()> {
    let (Request::QueueHold { id } | Request::QueueRelease { id } | Request::QueueDelete { id }) =
        r.clone()
    else {
        bail!("not a queue change");
    };
    if let Some(mut server) = portcullis_control::Client::connect(&config.data_dir) {
        server.request(&r)?;
        println!("{id} {done}");
        return Ok(());
    }
    if portcullis_control::server_running(&config.data_dir) {
        bail!(
            "a server holds {} but does not answer on its control socket yet (still starting?): try again in a moment",
            config.data_dir.display()
        );
    }
    let dir = config.data_dir.join("spool");
    let found = match r {
        Request::QueueHold { .. } => portcullis_queue::set_held(&dir, &id, true)?,
        Request::QueueRelease { .. } => portcullis_queue::set_held(&dir, &id, false)?,
        _ => portcullis_queue::delete_offline(&dir, &id)?,
    };
    if !found {
        bail!("no message {id} in the queue");
    }
    println!("{id} {done}");
    Ok(())
}

/// The envelope as `queue show` prints it: JSON, with its time in RFC 3339
/// UTC as people read it rather than the epoch seconds the spool keeps.
fn shown(envelope: &portcullis_queue::Envelope) -> serde_json::Result<serde_json::Value> {
    let mut v = serde_json::to_value(envelope)?;
    if let Some(t) = v.get_mut("received_at") {
        *t = portcullis_pipeline::trace::iso8601(envelope.received_at).into();
    }
    Ok(v)
}

/// `queue list` from the running server's live queue: the lines the
/// offline listing prints, with where each message stands.
fn list_live(list: &serde_json::Value) -> anyhow::Result<()> {
    let empty = Vec::new();
    let list = list.as_array().unwrap_or(&empty);
    for m in list {
        let text = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
        let rcpts: Vec<&str> = m["recipients"]
            .as_array()
            .map(|r| r.iter().filter_map(|a| a.as_str()).collect())
            .unwrap_or_default();
        let held = if m["held"].as_bool() == Some(true) {
            "  (held)"
        } else {
            ""
        };
        println!(
            "{}  {:>8}  <{}>  {}{held}  [{}]",
            text("id"),
            m["size"].as_u64().unwrap_or(0),
            text("sender"),
            rcpts.join(" "),
            text("state")
        );
    }
    println!("{} message(s) queued", list.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn queue_show_prints_the_arrival_in_rfc_3339_utc() {
        let e = portcullis_queue::Envelope {
            id: "Q1".into(),
            received_at: 1_795_520_211,
            ..Default::default()
        };
        let v = super::shown(&e).unwrap();
        assert_eq!(v["received_at"], "2026-11-24T11:36:51Z");
        assert_eq!(v["id"], "Q1");
    }
}
