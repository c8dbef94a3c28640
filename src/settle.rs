//! After the CLI changed a file the server reads (accounts, DKIM keys,
//! aliases): the file gets the data directory's owner, so a server that
//! dropped to its `user` can read what root wrote, and a running server
//! is asked to load it, so a change it cannot load fails here, loudly,
//! instead of sitting on disk while the server keeps the old content.

use anyhow::Context as _;
use portcullis_config::Config;
use portcullis_control::{Client, LiveFile, Request};
use std::path::PathBuf;

pub fn settle(config: &Config, file: LiveFile, paths: &[PathBuf]) -> anyhow::Result<()> {
    portcullis_control::give_to_owner(&config.data_dir, paths).with_context(|| {
        format!(
            "{} changed, but could not be given to the owner of {}",
            file.name(),
            config.data_dir.display()
        )
    })?;
    if let Some(mut server) = Client::connect(&config.data_dir) {
        server
            .request(&Request::FileCheck { file })
            .with_context(|| format!("{} changed on disk", file.name()))?;
    }
    Ok(())
}
