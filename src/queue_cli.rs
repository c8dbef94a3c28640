//! `queue`: list, show, flush, hold, release and delete queued messages.
//! A running server is asked through its control socket (it holds the
//! messages); with no server, the spool on disk is read and changed.

use crate::QueueAction;
use anyhow::bail;
use portcullis_config::Config;
use portcullis_control::Request;

pub fn queue(action: QueueAction, config: &Config) -> anyhow::Result<()> {
    let dir = config.data_dir.join("spool");
    match action {
        QueueAction::List => {
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
            println!("{}", serde_json::to_string_pretty(&m.envelope)?);
            match portcullis_queue::read_status(&dir, &id) {
                Some(s) => {
                    println!(
                        "attempts: {}, next attempt at {} (epoch seconds)",
                        s.attempts, s.next_attempt
                    );
                    for (rcpt, reply) in &s.waiting {
                        println!("  waiting  <{rcpt}>  last reply: {reply}");
                    }
                }
                None => println!("not attempted yet"),
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
