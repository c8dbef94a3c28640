//! The client's own small config (`PORTCULLIS_SENDMAIL_CONFIG`, or
//! `--config`, default `/etc/portcullis/sendmail.toml`). Credentials may
//! instead come from the environment: `PORTCULLIS_USER`,
//! `PORTCULLIS_PASSWORD`.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub const DEFAULT_PATH: &str = "/etc/portcullis/sendmail.toml";

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Envelope sender (and From: when the message has none) unless -f.
    pub sender: Option<String>,
    /// Where to look for SRV and autoconfig (default: the sender's domain).
    pub domain: Option<String>,
    /// The submission host when discovery finds nothing.
    pub server: Option<String>,
    /// Login (default: the sender).
    pub account: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Port 25 is tried last, and only when this is true (spamops §3.2:
    /// submission ports first).
    #[serde(default)]
    pub allow_port25: bool,
    /// Accept exactly this certificate (hex SHA-256 of its DER form), for
    /// a server with a self-signed certificate.
    pub pin_sha256: Option<String>,
    /// Extra CA certificates (PEM) besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Messages that could not be sent wait here; each run sends them first.
    pub outbox: Option<PathBuf>,
    /// DNS servers for SRV lookups (default: /etc/resolv.conf).
    #[serde(default)]
    pub nameservers: Vec<SocketAddr>,
    /// Port of the autoconfig web server (80; tests change it).
    #[serde(default = "ClientConfig::default_autoconfig_port")]
    pub autoconfig_port: u16,
    /// The name this host gives in EHLO.
    pub helo: Option<String>,
    #[serde(default = "ClientConfig::default_timeout")]
    pub timeout_secs: u64,
}

impl ClientConfig {
    fn default_autoconfig_port() -> u16 {
        80
    }
    fn default_timeout() -> u64 {
        60
    }

    /// Read the file; a missing default file is an empty config (the
    /// environment may say all that is needed).
    pub fn load(path: Option<&Path>) -> Result<ClientConfig, String> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(ClientConfig {
                    autoconfig_port: 80,
                    timeout_secs: 60,
                    ..Default::default()
                });
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The login and password: the environment wins over the file.
    pub fn credentials(&self, sender: &str) -> Result<(String, String), String> {
        let user = std::env::var("PORTCULLIS_USER")
            .ok()
            .or_else(|| self.account.clone())
            .unwrap_or_else(|| sender.to_owned());
        if let Ok(p) = std::env::var("PORTCULLIS_PASSWORD") {
            return Ok((user, p));
        }
        let file = self
            .password_file
            .as_ref()
            .ok_or("no password: set password_file in the config or PORTCULLIS_PASSWORD")?;
        let p = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        Ok((user, p.trim_end_matches(['\r', '\n']).to_owned()))
    }

    pub fn pin(&self) -> Result<Option<[u8; 32]>, String> {
        self.pin_sha256
            .as_deref()
            .map(|p| {
                portcullis_delivery::client::parse_pin(p).map_err(|e| format!("pin_sha256: {e}"))
            })
            .transpose()
    }
}
