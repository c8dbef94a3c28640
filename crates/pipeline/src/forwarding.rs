//! Forwarding at the edge (issue 10): the alias file and the SRS secrets
//! in the data dir, re-read when they change, and the plan for one
//! accepted message: which recipients are aliases (expanded, with
//! Delivered-To: fields), which are our SRS addresses (a bounce going
//! back to the original sender), and which copies leave for other
//! domains with a rewritten sender. The logic is the forwarding crate's.

use crate::reloading::Reloading;
use portcullis_config::Config;
use portcullis_forwarding::{Aliases, Srs, SrsError, srs};
use portcullis_queue::{Envelope, QueuedRecipient};
use portcullis_smtp::Mailbox;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

impl Forwarding {
    /// Whether this process can load the alias file as it stands (the CLI
    /// asks after a change): how many aliases it holds, or why not.
    pub fn check_aliases(&self) -> Result<String, String> {
        Aliases::load(&self.aliases_path)
            .map(|a| format!("{} aliases", a.list().count()))
            .map_err(|e| e.to_string())
    }
}

pub struct Forwarding {
    aliases_path: PathBuf,
    aliases: Reloading<Aliases, Option<SystemTime>>,
    secrets_path: PathBuf,
    srs: Reloading<Option<Srs>, Option<SystemTime>>,
    pub domain: String,
    cfg: portcullis_config::Forwarding,
    local_domains: Vec<String>,
}

/// One more copy of an accepted message: its envelope, the header lines
/// to prepend, and whether it leaves for another domain (then it is
/// ARC-sealed and its sender is the SRS address).
pub struct Copy {
    pub envelope: Envelope,
    pub headers: String,
    pub forwarded: bool,
}

pub struct Plan {
    pub copies: Vec<Copy>,
    /// Aliases that looped: one bounce, no forwarding.
    pub loops: Vec<QueuedRecipient>,
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

pub fn secrets_path(data_dir: &Path) -> PathBuf {
    data_dir.join("srs.secrets")
}

/// The SRS secrets, newest first (hex, one per line).
pub fn read_secrets(path: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            (0..l.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(l.get(i..i + 2)?, 16).ok())
                .collect()
        })
        .collect())
}

/// Put a new secret first; keep the previous ones (at most `keep` in
/// all) so addresses already handed out stay valid.
pub fn rotate_secret(path: &Path, keep: usize) -> std::io::Result<()> {
    let mut secrets = read_secrets(path).unwrap_or_default();
    let mut fresh = [0u8; 32];
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")?.read_exact(&mut fresh)?;
    secrets.insert(0, fresh.to_vec());
    secrets.truncate(keep.max(1));
    let text: String = secrets
        .iter()
        .map(|s| s.iter().map(|b| format!("{b:02x}")).collect::<String>() + "\n")
        .collect();
    portcullis_state::write_atomically(path, text.as_bytes())?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

impl Forwarding {
    pub fn new(config: &Config) -> anyhow::Result<Forwarding> {
        let aliases_path = config.data_dir.join("aliases.json");
        let secrets_path = secrets_path(&config.data_dir);
        if !secrets_path.exists() {
            rotate_secret(&secrets_path, 3)?;
        }
        let domain = config
            .forwarding
            .srs_domain
            .clone()
            .or_else(|| config.local_domains.first().cloned())
            .unwrap_or_else(|| config.hostname.clone())
            .to_ascii_lowercase();
        let f = Forwarding {
            aliases: Reloading::new(
                "aliases",
                Aliases::load(&aliases_path)?,
                mtime(&aliases_path),
            ),
            srs: Reloading::new("srs secrets", None, None),
            aliases_path,
            secrets_path,
            domain,
            cfg: config.forwarding.clone(),
            local_domains: config.local_domains.clone(),
        };
        Ok(f)
    }

    fn aliases(&self) -> Arc<Aliases> {
        self.aliases.get(mtime(&self.aliases_path), || {
            Aliases::load(&self.aliases_path)
        })
    }

    fn srs(&self) -> Arc<Option<Srs>> {
        self.srs.get(mtime(&self.secrets_path), || {
            read_secrets(&self.secrets_path)
                .map(|s| Some(Srs::new(&s, &self.domain, self.cfg.srs_max_age_days)))
        })
    }

    /// For RCPT: `None` when `to` is not one of our SRS addresses, else
    /// where it leads back to (or why it is refused).
    pub fn srs_reverse(&self, to: &Mailbox) -> Option<Result<String, SrsError>> {
        if !to.domain.eq_ignore_ascii_case(&self.domain) || !srs::is_srs(&to.local) {
            return None;
        }
        let srs = self.srs();
        let srs = srs.as_ref().as_ref()?;
        Some(srs.reverse(&to.to_string(), portcullis_config::clock::now_secs()))
    }

    pub fn is_alias(&self, to: &Mailbox) -> bool {
        self.aliases().is_alias(&to.to_string())
    }

    /// More Received: fields than `max_hops`: a loop (RFC 5321 §6.3).
    pub fn too_many_hops(&self, data: &[u8]) -> Option<usize> {
        let hops = header_values(data, "received").len();
        (hops > self.cfg.max_hops).then_some(hops)
    }

    /// How the recipients of `envelope` are served: aliases expanded,
    /// SRS addresses reversed. The envelope keeps the plain recipients.
    pub fn plan(&self, envelope: &mut Envelope, data: &[u8]) -> Plan {
        let aliases = self.aliases();
        let delivered_to = header_values(data, "delivered-to");
        let now = portcullis_config::clock::now_secs();
        let srs = self.srs();
        let mut groups: BTreeMap<(Vec<String>, bool), Vec<QueuedRecipient>> = BTreeMap::new();
        let mut loops = Vec::new();
        for r in std::mem::take(&mut envelope.recipients) {
            if let Some(Ok(back)) = self.reverse_address(&r.address) {
                envelope
                    .recipients
                    .push(QueuedRecipient { address: back, ..r });
                continue;
            }
            if !aliases.is_alias(&r.address) {
                envelope.recipients.push(r);
                continue;
            }
            let e = aliases.expand(&r.address, &delivered_to, self.cfg.alias_max_depth);
            if !e.loops.is_empty() {
                loops.push(r.clone());
            }
            for (target, path) in e.targets {
                let remote = !self.is_local(&target);
                let copy = QueuedRecipient {
                    address: target,
                    ..r.clone()
                };
                groups.entry((path, remote)).or_default().push(copy);
            }
        }
        let copies = groups
            .into_iter()
            .map(|((path, remote), recipients)| Copy {
                envelope: Envelope {
                    recipients,
                    sender: match (remote, srs.as_ref()) {
                        (true, Some(s)) => s.forward(&envelope.sender, now),
                        _ => envelope.sender.clone(),
                    },
                    ..envelope.clone()
                },
                // RFC 9228: one Delivered-To per mailbox the message
                // passed, the newest on top.
                headers: path
                    .iter()
                    .rev()
                    .map(|a| format!("Delivered-To: {a}\r\n"))
                    .collect(),
                forwarded: remote,
            })
            .collect();
        Plan { copies, loops }
    }

    fn reverse_address(&self, address: &str) -> Option<Result<String, SrsError>> {
        let (local, domain) = address.rsplit_once('@')?;
        self.srs_reverse(&Mailbox {
            local: local.to_owned(),
            domain: domain.to_owned(),
        })
    }

    fn is_local(&self, address: &str) -> bool {
        address
            .rsplit_once('@')
            .is_some_and(|(_, d)| self.local_domains.iter().any(|l| l.eq_ignore_ascii_case(d)))
    }
}

/// The values of a header field in the message's header section.
fn header_values(data: &[u8], name: &str) -> Vec<String> {
    let end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(data.len());
    let head = String::from_utf8_lossy(&data[..end]);
    head.split("\r\n")
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().trim_matches(['<', '>']).to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_reads_only_the_header_section() {
        let m = b"Received: a\r\nDelivered-To: <x@y.test>\r\nReceived: b\r\n\r\nReceived: in the body\r\n";
        assert_eq!(header_values(m, "received").len(), 2);
        assert_eq!(header_values(m, "delivered-to"), ["x@y.test"]);
    }
}
