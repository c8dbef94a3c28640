//! Which configuration a command uses: `--config`, else the file named by
//! `PORTCULLIS_CONFIG`, else `/etc/portcullis/portcullis.toml` if it
//! exists, else the embedded default. One lookup for every command, so
//! that `queue list` and `user add` look where `serve` does.

use portcullis_config::{Config, DEFAULT_DATA_DIR};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The system-wide config file, used when nothing names another.
pub const SYSTEM_CONFIG: &str = "/etc/portcullis/portcullis.toml";

/// Where the configuration came from.
#[derive(Debug, PartialEq, Eq)]
pub enum Source {
    /// `--config FILE`.
    Flag(PathBuf),
    /// `PORTCULLIS_CONFIG=FILE`.
    Env(PathBuf),
    /// [`SYSTEM_CONFIG`] (or the candidate given to [`find`]), which exists.
    System(PathBuf),
    /// No file: the embedded default.
    Embedded,
}

impl Source {
    /// The file to read, if there is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Source::Flag(p) | Source::Env(p) | Source::System(p) => Some(p),
            Source::Embedded => None,
        }
    }
}

/// The lookup order, with the environment and the system file passed in so
/// that it can be tested: an empty `PORTCULLIS_CONFIG` counts as unset.
pub fn find(flag: Option<&Path>, env: Option<OsString>, system: &Path) -> Source {
    if let Some(p) = flag {
        return Source::Flag(p.to_owned());
    }
    if let Some(p) = env.filter(|p| !p.is_empty()) {
        return Source::Env(PathBuf::from(p));
    }
    if system.exists() {
        return Source::System(system.to_owned());
    }
    Source::Embedded
}

/// The lookup as the command line does it.
pub fn locate(flag: Option<&Path>) -> Source {
    find(
        flag,
        std::env::var_os("PORTCULLIS_CONFIG"),
        Path::new(SYSTEM_CONFIG),
    )
}

/// The configuration `source` names. On the embedded default every
/// command but `serve` (whose banner says where its data is) says so on
/// stderr: working on `./portcullis-data` by surprise is how an operator
/// adds a user to the wrong place.
pub fn load(source: &Source, quiet: bool) -> anyhow::Result<Config> {
    if let Some(path) = source.path() {
        return Ok(portcullis_config::load(path)?);
    }
    let data = std::env::var_os("PORTCULLIS_DATA")
        .map_or_else(|| PathBuf::from(DEFAULT_DATA_DIR), PathBuf::from);
    if !quiet {
        eprintln!(
            "portcullis: no config file (--config, PORTCULLIS_CONFIG, {SYSTEM_CONFIG}): using the embedded default, data in {}",
            data.display()
        );
    }
    Ok(Config::embedded_default(
        data,
        portcullis_config::system_hostname(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file that exists (this crate's manifest) and one that does not.
    fn present() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")
    }

    fn absent() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("no-such-portcullis.toml")
    }

    #[test]
    fn the_flag_wins_over_the_environment_and_the_system_file() {
        let s = find(Some(Path::new("a.toml")), Some("b.toml".into()), &present());
        assert_eq!(s, Source::Flag("a.toml".into()));
    }

    #[test]
    fn the_environment_wins_over_the_system_file() {
        let s = find(None, Some("b.toml".into()), &present());
        assert_eq!(s, Source::Env("b.toml".into()));
    }

    #[test]
    fn the_system_file_is_used_when_it_exists() {
        assert_eq!(find(None, None, &present()), Source::System(present()));
        assert_eq!(
            find(None, Some(OsString::new()), &present()),
            Source::System(present()),
            "an empty PORTCULLIS_CONFIG counts as unset"
        );
    }

    #[test]
    fn the_embedded_default_when_no_file_is_named_or_present() {
        assert_eq!(find(None, None, &absent()), Source::Embedded);
    }
}
