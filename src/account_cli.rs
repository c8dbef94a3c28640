//! `account`: containment of a submitting account (issue 29), through
//! the running server (the holds live in its state and its queue).

use clap::Subcommand;
use portcullis_config::Config;
use portcullis_control::{AccountAction, Request};

#[derive(Subcommand)]
pub enum AccountCommand {
    /// Its containment, its signals and its queued (and held) messages.
    Show {
        /// The account (its login, e.g. alice@example.org).
        user: String,
    },
    /// Defer its new submissions and hold its queued messages.
    Hold {
        /// The account.
        user: String,
    },
    /// Let its held mail leave and start its counts again.
    Release {
        /// The account.
        user: String,
    },
    /// Every account contained now, with the evidence.
    List,
}

pub fn account(command: AccountCommand, config: &Config) -> anyhow::Result<()> {
    let Some(mut server) = portcullis_control::Client::connect(&config.data_dir) else {
        anyhow::bail!(
            "no server is running on {}: holds are kept by the running server",
            config.data_dir.display()
        );
    };
    let request = match command {
        AccountCommand::Show { user } => Request::Account {
            action: AccountAction::Show,
            account: user,
        },
        AccountCommand::Hold { user } => Request::Account {
            action: AccountAction::Hold,
            account: user,
        },
        AccountCommand::Release { user } => Request::Account {
            action: AccountAction::Release,
            account: user,
        },
        AccountCommand::List => Request::Contained,
    };
    let answer = server.request(&request)?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}
