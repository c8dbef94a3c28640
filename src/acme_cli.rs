//! `acme`: the operator's handle on ACME certificates. `acme renew`
//! asks the running server (over its control socket) to order a
//! certificate now, and says how the order ended; the server keeps
//! the certificate in use when it fails.

use anyhow::{Context as _, bail};
use portcullis_config::Config;
use portcullis_control::{Job, Request};
use std::time::Duration;

#[derive(clap::Subcommand)]
pub enum AcmeAction {
    /// Order a new certificate now (the running server does it, then
    /// serves it on every listener without a restart).
    Renew,
}

/// The server gives an order two minutes; the CLI waits a little longer.
const RENEW_WAIT: Duration = Duration::from_secs(150);

pub fn acme(action: AcmeAction, config: &Config) -> anyhow::Result<()> {
    match action {
        AcmeAction::Renew => renew(config),
    }
}

fn renew(config: &Config) -> anyhow::Result<()> {
    if config.acme.is_none() {
        bail!("the config has no [acme] section: the certificate is not from ACME");
    }
    let Some(server) = portcullis_control::Client::connect(&config.data_dir) else {
        bail!(
            "no server is running on {}: a started server obtains a missing or due certificate itself",
            config.data_dir.display()
        );
    };
    let answer = server
        .patient(RENEW_WAIT)
        .request(&Request::Run {
            job: Job::AcmeRenew,
        })
        .context("acme renew")?;
    let said = answer.as_str().unwrap_or("renewed");
    println!("{said}");
    Ok(())
}
