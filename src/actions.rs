//! The actions of the subcommands that have several (`dkim`, `user`,
//! `alias`, `srs`) and their arguments, as clap parses them.

use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub(crate) enum DkimAction {
    /// Generate a signing key and print the TXT record to publish.
    Keygen {
        #[command(flatten)]
        key: NewKey,
    },
    /// Make a new key beside the signing ones and print its record: it
    /// signs only after `dkim activate` has seen DNS serve the record.
    Rotate {
        #[command(flatten)]
        key: NewKey,
    },
    /// Check that DNS serves the pending key's record, then sign with it;
    /// the keys that signed so far are retired (still listed by
    /// dns-records until `dkim retire`).
    Activate {
        /// The signing domain (`d=`).
        #[arg(long)]
        domain: String,
        /// The pending selector.
        #[arg(long)]
        selector: String,
    },
    /// Delete the domain's keys retired at least this long ago.
    Retire {
        /// The signing domain (`d=`).
        #[arg(long)]
        domain: String,
        /// Days a retired key's record stays published (mail signed with
        /// it may still be verified).
        #[arg(long, default_value_t = 7)]
        grace_days: u64,
    },
}

/// A key to make: `dkim keygen` and `dkim rotate`.
#[derive(clap::Args)]
pub(crate) struct NewKey {
    /// The signing domain (`d=`).
    #[arg(long)]
    pub(crate) domain: String,
    /// The selector (`s=`): the record is published at
    /// SELECTOR._domainkey.DOMAIN.
    #[arg(long)]
    pub(crate) selector: String,
    /// The key type (RSA 2048 for reach; Ed25519 beside it, RFC 8463).
    #[arg(long, value_enum, default_value = "rsa")]
    pub(crate) algorithm: KeyAlgorithm,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum Op25bFormat {
    /// An nftables table (IPv4 and IPv6).
    Nftables,
    /// iptables rules (IPv4).
    Iptables,
    /// ip6tables rules (IPv6).
    Ip6tables,
    /// Cisco IOS access lists.
    Cisco,
    /// Junos firewall filters.
    Juniper,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum KeyAlgorithm {
    /// Ed25519 (RFC 8463).
    Ed25519,
    /// RSA, 2048 bits.
    Rsa,
}

#[derive(Subcommand)]
pub(crate) enum UserAction {
    /// Create an account (password from a prompt, or --password-stdin).
    Add {
        /// The account's address (its login name).
        address: String,
        /// Read the password from the first line of stdin (scripts).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove an account.
    Del {
        /// The account's address.
        address: String,
    },
    /// List accounts and the addresses they may send as.
    List,
    /// Change an account's password.
    Passwd {
        /// The account's address.
        address: String,
        /// Read the password from the first line of stdin (scripts).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Import a Dovecot passwd-file ({ARGON2ID}, {BLF-CRYPT},
    /// {SHA512-CRYPT}, {SHA256-CRYPT} hashes).
    Import {
        /// The passwd-file (`user:{SCHEME}hash:...` lines).
        file: PathBuf,
    },
    /// Let an account send as another address, or as `@domain`.
    Grant {
        /// The account's address.
        address: String,
        /// The address (or `@domain`) it may now send as.
        owned: String,
    },
    /// Allow or forbid an account any sender address.
    AnySender {
        /// The account's address.
        address: String,
        /// `true` or `false`.
        #[arg(action = clap::ArgAction::Set)]
        allowed: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum AliasAction {
    /// Add targets (local mailboxes or external addresses) to an alias.
    Add {
        /// The alias address (of a local domain).
        alias: String,
        /// Where its mail goes: local mailboxes or external addresses.
        #[arg(required = true)]
        targets: Vec<String>,
    },
    /// Remove an alias.
    Del {
        /// The alias address.
        alias: String,
    },
    /// Every alias and its targets.
    List,
}

#[derive(Subcommand)]
pub(crate) enum SrsAction {
    /// Start signing with a new secret; the previous two still verify, so
    /// addresses already handed out stay valid for their lifetime.
    Rotate,
}
