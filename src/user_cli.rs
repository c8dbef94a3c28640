//! `user` and `trace`: submission accounts (add, list, del, passwd, import,
//! grants), the password prompt with echo off, and the search of the
//! submission log. Passwords are never echoed or logged.

use crate::UserAction;
use anyhow::{Context as _, bail};
use portcullis_config::Config;
use portcullis_control::LiveFile;

pub fn user(action: UserAction, config: &Config) -> anyhow::Result<()> {
    use portcullis_accounts::AccountStore;
    let path = config.data_dir.join("accounts.json");
    let mut store = AccountStore::load(&path)?;
    let done = match action {
        UserAction::Add {
            address,
            password_stdin,
        } => {
            let pw = read_password(password_stdin)?;
            store.add(&address, &pw)?;
            format!("{} added", address.to_ascii_lowercase())
        }
        UserAction::Del { address } => {
            store.remove(&address)?;
            format!("{address} removed")
        }
        UserAction::List => {
            for a in store.list() {
                let mut owns = a.owns.clone();
                if a.any_sender {
                    owns.push("(any sender)".into());
                }
                println!("{}  {}", a.address, owns.join(" "));
            }
            return Ok(());
        }
        UserAction::Passwd {
            address,
            password_stdin,
        } => {
            if store.get(&address).is_none() {
                bail!("no account {address}");
            }
            let pw = read_password(password_stdin)?;
            store.set_password(&address, &pw)?;
            format!("password of {address} changed")
        }
        UserAction::Import { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let r = store.import_passwd_file(&text);
            for (line, why) in &r.skipped {
                eprintln!("{}:{line}: skipped: {why}", file.display());
            }
            format!(
                "{} added, {} updated, {} skipped",
                r.added.len(),
                r.updated.len(),
                r.skipped.len()
            )
        }
        UserAction::Grant { address, owned } => {
            store.grant(&address, &owned)?;
            format!("{address} may now send as {owned}")
        }
        UserAction::AnySender { address, allowed } => {
            store.set_any_sender(&address, allowed)?;
            format!(
                "{address}: any sender {}",
                if allowed { "allowed" } else { "forbidden" }
            )
        }
    };
    store.save()?;
    crate::settle::settle(config, LiveFile::Accounts, &[path])?;
    println!("{done}");
    Ok(())
}

/// A password from the first line of stdin, or from a prompt on the
/// terminal with echo off. Never echoed, never logged.
fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    use std::io::BufRead;
    let mut line = String::new();
    if from_stdin {
        std::io::stdin().lock().read_line(&mut line)?;
    } else {
        eprint!("Password: ");
        let _echo = EchoOff::new();
        std::io::stdin().lock().read_line(&mut line)?;
        eprintln!();
    }
    let pw = line.trim_end_matches(['\r', '\n']).to_owned();
    if pw.is_empty() {
        bail!("empty password refused");
    }
    Ok(pw)
}

/// Turns terminal echo off while alive (no-op when stdin is not a tty).
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> EchoOff {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a zeroed termios that
        // tcgetattr fills in; nothing else touches it.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::isatty(0) != 1 || libc::tcgetattr(0, &mut t) != 0 {
                return EchoOff(None);
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            libc::tcsetattr(0, libc::TCSANOW, &t);
            EchoOff(Some(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(t) = self.0 {
            // SAFETY: restores the attributes read in `new`.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, &t);
            }
        }
    }
}

pub fn trace(c: &Config, query: String) -> anyhow::Result<()> {
    let log = portcullis_pipeline::trace::SubmissionLog::new(
        &c.data_dir,
        c.submission.log_retention_days,
    );
    let hits = log.search(&query)?;
    for h in &hits {
        println!("{h}");
    }
    if hits.is_empty() {
        bail!("nothing in the submission log matches {query}");
    }
    Ok(())
}
