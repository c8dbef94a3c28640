//! `dmarc-reports send` and `tls-reports send`: end that report period of
//! the running server now and print what was sent, to whom, and what was
//! not and why.

use clap::Subcommand;
use portcullis_config::Config;
use portcullis_control::{Job, Request};

#[derive(Subcommand)]
pub enum ReportsAction {
    /// Send this period's reports now (the server otherwise does so at
    /// the end of every `[dmarc] report_interval_secs` or `[delivery]
    /// tls_rpt_interval_secs`).
    Send,
}

pub fn reports(job: Job, action: ReportsAction, config: &Config) -> anyhow::Result<()> {
    match action {
        ReportsAction::Send => {
            let Some(server) = portcullis_control::Client::connect(&config.data_dir) else {
                anyhow::bail!(
                    "no server is running on {}: the reports are sent by the server",
                    config.data_dir.display()
                );
            };
            // DNS checks of each destination: give it time.
            let answer = server
                .patient(std::time::Duration::from_secs(120))
                .request(&Request::Run { job })?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(())
        }
    }
}
