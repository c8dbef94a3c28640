//! The configuration file: parse the TOML, validate it, and when it is wrong
//! say exactly where (file, line, column, key) and what is wrong.
//!
//! This crate only turns text into a [`Config`] value. It opens no sockets
//! and reads no certificate; the one file-system check it makes is that the
//! files a config names exist, so that `check-config` catches a typo before
//! a restart does.

mod cidr;
pub mod clock;
mod containment;
mod live;
mod locate;
mod milter;
mod model;
mod raw;
mod screening;
mod service;

pub use cidr::Cidr;
pub use containment::Containment;
pub use live::LiveConfig;
pub use locate::{Location, locate};
pub use milter::*;
pub use model::*;
pub use screening::*;
pub use service::*;

use std::path::{Path, PathBuf};

/// Why a configuration was refused. The `Display` form is what an operator
/// reads: `FILE:LINE:COL: key `KEY`: MESSAGE`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The reason is part of the message and deliberately not a
    /// `source`: a caller printing the chain would say it twice.
    #[error("{}: cannot read: {error}", .path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}:{}:{}: key `{}`: {}", .path.display(), .at.line, .at.column, .at.key, .message)]
    Invalid {
        path: PathBuf,
        at: Location,
        message: String,
    },
}

impl ConfigError {
    /// The location of the error in the file, when it has one.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Invalid { at, .. } => Some(at),
            ConfigError::Read { .. } => None,
        }
    }
}

/// Read and validate the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_owned(),
        error,
    })?;
    parse(&text, path)
}

/// Validate `text` as if it had been read from `path` (used in messages and
/// to resolve relative file names).
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        ConfigError::Invalid {
            path: path.to_owned(),
            at: locate::locate(text, span.start),
            message: first_line(e.message()),
        }
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    raw.validate(base)
        .map_err(|(offset, message)| ConfigError::Invalid {
            path: path.to_owned(),
            at: locate::locate(text, offset),
            message,
        })
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).trim().to_owned()
}

#[cfg(test)]
mod tests;
