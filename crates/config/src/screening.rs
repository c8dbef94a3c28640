//! The sections that decide how a sending client is treated: `[reverse_dns]`,
//! `[dmarc]`, `[[dnsbl]]`, `[class.*]`, `[identity]`, `[reputation]`,
//! `[admission]` and `[rspamd]`. Each table refuses unknown keys so that a
//! misspelt option is an error, not a silently ignored line. Checks that
//! need more than serde (and their error texts) belong in [`crate::raw`].

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// `[reverse_dns]`: what the client's reverse name must be on port 25.
/// Its PTR name, forward-confirmed (FCrDNS), is always recorded in
/// Received and as `iprev` in Authentication-Results (RFC 8601 §3).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReverseDns {
    /// Refuse clients without a forward-confirmed PTR name at connect:
    /// 550 5.7.25, or 450 4.7.25 when DNS failed (RFC 7372 §3.3).
    #[serde(default)]
    pub require_confirmed: bool,
}

/// `[dmarc]`: how the organizational domain of RFC 7489 §3.2 is found,
/// the aggregate reports we send (§7.2), and the reports we receive.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DmarcSettings {
    #[serde(default)]
    pub discovery: DmarcDiscovery,
    /// A Public Suffix List file to use instead of the built-in copy.
    #[serde(default)]
    pub public_suffix_list: Option<PathBuf>,
    /// Send aggregate reports to the `rua` of domains whose mail we
    /// identified (SPF or DKIM pass) and did not refuse.
    #[serde(default = "yes")]
    pub send_reports: bool,
    /// How often the reports go out (RFC 7489 §7.2: a day by default).
    #[serde(default = "day")]
    pub report_interval_secs: u64,
    /// Domains (and their subdomains) never sent a report.
    #[serde(default)]
    pub report_exclude: Vec<String>,
    /// At most this many reports leave per period, whatever the traffic:
    /// a flood of spam domains publishing `rua` must not make us a
    /// report cannon.
    #[serde(default = "daily_cap")]
    pub report_daily_cap: u32,
    /// The `org_name` of our reports; the hostname when absent.
    #[serde(default)]
    pub report_org_name: Option<String>,
    /// The From: (and envelope sender) of our reports;
    /// `noreply-dmarc@<hostname>` when absent.
    #[serde(default)]
    pub report_from: Option<String>,
    /// The address that receives DMARC aggregate and TLS-RPT reports:
    /// mail to it is parsed and stored, not put in a mailbox.
    #[serde(default)]
    pub report_mailbox: Option<String>,
    /// The most a received report may be, unpacked.
    #[serde(default = "report_max_bytes")]
    pub report_max_bytes: usize,
    /// The most a compressed report may grow when unpacked (a zip bomb
    /// grows by thousands).
    #[serde(default = "report_max_ratio")]
    pub report_max_ratio: u32,
}

fn yes() -> bool {
    true
}
fn day() -> u64 {
    86_400
}
fn daily_cap() -> u32 {
    100
}
fn report_max_bytes() -> usize {
    10 << 20
}
fn report_max_ratio() -> u32 {
    100
}

impl Default for DmarcSettings {
    fn default() -> DmarcSettings {
        DmarcSettings {
            discovery: DmarcDiscovery::default(),
            public_suffix_list: None,
            send_reports: yes(),
            report_interval_secs: day(),
            report_exclude: Vec::new(),
            report_daily_cap: daily_cap(),
            report_org_name: None,
            report_from: None,
            report_mailbox: None,
            report_max_bytes: report_max_bytes(),
            report_max_ratio: report_max_ratio(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DmarcDiscovery {
    /// RFC 7489: the record at the From: domain, else at its
    /// organizational domain from the Public Suffix List.
    #[default]
    Psl,
    /// DMARCbis: the DNS tree walk (np=, psd=), as mail-auth does it.
    TreeWalk,
}

/// A DNS list: addresses (DNSBL) or domains (RHSBL) under `zone`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DnsList {
    pub zone: String,
    /// Shown in replies and headers; the zone when absent.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub kind: ListKind,
    #[serde(default)]
    pub action: ListAction,
    /// A list of dynamic (consumer) address space, like Spamhaus PBL: port
    /// 25 from it is refused with advice to use the provider's submission
    /// service — the receiving side of OP25B.
    #[serde(default)]
    pub dynamic: bool,
    /// Rating zones: a domain rated below this is treated as listed (a
    /// `Status: Bad` answer always is).
    #[serde(default)]
    pub min_rating: Option<i64>,
}

impl DnsList {
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.zone)
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ListKind {
    /// Client addresses, checked at connect.
    #[default]
    Address,
    /// Domains: the MAIL FROM domain at MAIL, DKIM d= domains at the end
    /// of data.
    Domain,
    /// Domain reputation as TXT at `DOMAIN.ZONE` ("Status: Good",
    /// "Rating: 100"), for the same domains as `domain` lists.
    Rating,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ListAction {
    /// Refuse, naming the list.
    #[default]
    Reject,
    /// Accept and add a header naming the list.
    Label,
}

/// Per-class limits of the class-of-service policy.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClassLimits {
    pub max_connections: Option<u32>,
    pub connections_per_minute: Option<u32>,
    pub messages_per_minute: Option<u32>,
    pub recipients_per_message: Option<u32>,
    pub recipients_per_minute: Option<u32>,
    pub bytes_per_minute: Option<u64>,
}

impl ClassLimits {
    /// These limits where given, `base`'s elsewhere. A limit of 0 means
    /// "no limit", so a built-in one can be switched off.
    pub fn over(&self, base: &ClassLimits) -> ClassLimits {
        ClassLimits {
            max_connections: self.max_connections.or(base.max_connections),
            connections_per_minute: self.connections_per_minute.or(base.connections_per_minute),
            messages_per_minute: self.messages_per_minute.or(base.messages_per_minute),
            recipients_per_message: self.recipients_per_message.or(base.recipients_per_message),
            recipients_per_minute: self.recipients_per_minute.or(base.recipients_per_minute),
            bytes_per_minute: self.bytes_per_minute.or(base.bytes_per_minute),
        }
    }

    /// The embedded defaults: a tight shared pool for strangers (the
    /// paper: "extremely limited"), and per-sender levels that each give
    /// one identified sender more than all strangers together.
    pub fn builtin(class: &str) -> Option<ClassLimits> {
        let c = |conns, cpm, mpm, rpm_msg, rpm, bpm| ClassLimits {
            max_connections: Some(conns),
            connections_per_minute: Some(cpm),
            messages_per_minute: Some(mpm),
            recipients_per_message: Some(rpm_msg),
            recipients_per_minute: Some(rpm),
            bytes_per_minute: Some(bpm),
        };
        const MIB: u64 = 1024 * 1024;
        Some(match class {
            "default" => c(50, 300, 120, 50, 500, 50 * MIB),
            "new" => c(20, 300, 240, 100, 1000, 100 * MIB),
            "trusted" => c(50, 1200, 1200, 100, 5000, 500 * MIB),
            "high" => c(200, 6000, 6000, 1000, 30000, 2048 * MIB),
            _ => return None,
        })
    }
}

/// How a sender is identified (the paper's "Identification" section).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityPolicy {
    /// Address-based state aggregates IPv4 by this prefix ...
    pub ipv4_prefix: u8,
    /// ... and IPv6 by this one, so rotating through a /64 is one sender.
    pub ipv6_prefix: u8,
    /// Allocation data (an RDAP/WHOIS export): one `PREFIX HOLDER` per
    /// line; a client inside a prefix is identified as its holder.
    pub allocations: Option<PathBuf>,
    /// Allocations coarser than these are disregarded: they would lump
    /// unrelated senders into one reputation (the paper, WEIRDS item).
    pub allocation_min_ipv4: u8,
    pub allocation_min_ipv6: u8,
}

impl Default for IdentityPolicy {
    fn default() -> Self {
        IdentityPolicy {
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            allocations: None,
            allocation_min_ipv4: 16,
            allocation_min_ipv6: 32,
        }
    }
}

/// Promotion and demotion between per-sender classes (the paper,
/// "Adjusting Class of Service"). The gap between the promotion and the
/// demotion thresholds is the hysteresis.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ReputationRules {
    /// Per-sender classes from lowest to highest; identified senders
    /// start at the first.
    pub levels: Vec<String>,
    /// Good messages needed at a level before promotion ...
    pub promote_after: u32,
    /// ... with at most this share of spam among the verdicts there.
    pub promote_max_spam_percent: u32,
    /// Demotion needs at least this many verdicts at the level ...
    pub demote_min_verdicts: u32,
    /// ... and at least this share of spam among them.
    pub demote_spam_percent: u32,
}

impl Default for ReputationRules {
    fn default() -> Self {
        ReputationRules {
            levels: vec!["new".into(), "trusted".into(), "high".into()],
            promote_after: 50,
            promote_max_spam_percent: 5,
            demote_min_verdicts: 5,
            demote_spam_percent: 30,
        }
    }
}

/// Connection-level limits that apply to everyone (the "Rate control"
/// slides), the temporal blocklist, and what deferrals say.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Admission {
    /// Named in every deferral, so a sender learns how to get out of the
    /// default class (the paper, "Practical Considerations").
    pub remediation_url: String,
    /// Concurrent connections from one range (the identity prefix).
    pub per_range_max_connections: u32,
    /// New connections per minute from one range.
    pub per_range_connections_per_minute: u32,
    /// Refuse mail that does not authenticate from a range that earlier
    /// delivered authenticated mail for a domain (the paper's "aggressive
    /// action"). Off for hosts shared by many senders.
    pub enforce_domain_ranges: bool,
    /// Spam verdicts from an unidentified range that put it on the
    /// temporal blocklist for `block_secs` (0: never).
    pub spam_strikes: u32,
    pub block_secs: u64,
    /// Keep an nftables set (table `inet portcullis`) in step with the
    /// temporal blocklist, so blocked ranges' SYNs are dropped before
    /// accept (needs CAP_NET_ADMIN and `nft`).
    pub kernel_blocklist: KernelBlocklistMode,
    /// Block the wider prefix (/64 → /56 → /48, /32 → /24) once this many
    /// distinct ranges inside it were blocked or found the default pool
    /// exhausted within `escalate_window_secs` (0: never). Never a prefix
    /// holding a known sender, an allocation, a domain range or a range
    /// whose client logged in; the block lifts after
    /// `escalate_block_secs`.
    pub escalate_after: u32,
    pub escalate_window_secs: u64,
    /// The widest prefixes escalation may block.
    pub escalate_ipv6_ceiling: u8,
    pub escalate_ipv4_ceiling: u8,
    /// How long an escalated block lasts.
    pub escalate_block_secs: u64,
    /// Refused connections are summed up in one log line per class and
    /// wide range every this many seconds (the first refusal of a range
    /// in a period is logged at once).
    pub refusal_log_secs: u64,
    /// A range refused this many times within `repeat_window_secs` (a
    /// client that ignores 4xx) is blocked for `repeat_block_secs`,
    /// doubling each time it comes back up to `repeat_block_max_secs`
    /// (0: never).
    pub repeat_refusals: u32,
    pub repeat_window_secs: u64,
    pub repeat_block_secs: u64,
    pub repeat_block_max_secs: u64,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            remediation_url: String::new(),
            per_range_max_connections: 20,
            per_range_connections_per_minute: 120,
            enforce_domain_ranges: true,
            spam_strikes: 3,
            block_secs: 3600,
            kernel_blocklist: KernelBlocklistMode::Auto,
            // On by default (issue 28): 16 distinct /64s of one /56 (of
            // 256), or 16 addresses of one /24, refused for a full pool or
            // blocked within ten minutes is a rotation, not an ISP's
            // customers; the developers' flood bench held a churning /48
            // with 16 (good sender at 672-709 of 818 msg/s), while lower
            // values catch a busy stranger's neighbours sooner. The
            // exemptions and the ceilings (/48, /24) bound what it can
            // block, and the block lifts after an hour.
            escalate_after: 16,
            escalate_window_secs: 600,
            escalate_ipv6_ceiling: 48,
            escalate_ipv4_ceiling: 24,
            escalate_block_secs: 3600,
            refusal_log_secs: 10,
            // RFC 5321 §4.5.4.1: a client waits at least 30 minutes before
            // retrying; ten refusals in ten seconds is no MTA's retry.
            repeat_refusals: 10,
            repeat_window_secs: 10,
            repeat_block_secs: 30,
            repeat_block_max_secs: 600,
        }
    }
}

/// `[admission] kernel_blocklist`: `"auto"` (the default) keeps the
/// kernel's copy of the blocklist wherever it can work (`nft` is there and
/// the process holds CAP_NET_ADMIN), `true` insists on it (the server
/// refuses to start without it), `false` never keeps it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KernelBlocklistMode {
    #[default]
    Auto,
    On,
    Off,
}

impl<'de> Deserialize<'de> for KernelBlocklistMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = KernelBlocklistMode;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(r#"true, false or "auto""#)
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(if v {
                    KernelBlocklistMode::On
                } else {
                    KernelBlocklistMode::Off
                })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v {
                    "auto" => Ok(KernelBlocklistMode::Auto),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Spam verdicts from rspamd's `/checkv2` (its normal worker).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rspamd {
    /// `host:port` of the normal worker (rspamd's default 127.0.0.1:11333).
    pub address: SocketAddr,
    #[serde(default = "Rspamd::default_timeout_ms")]
    pub timeout_ms: u64,
    /// Refuse messages rspamd's action says to reject (550 5.7.1).
    #[serde(default = "Rspamd::default_reject")]
    pub reject: bool,
    /// Scan submitted mail too (with rspamd's `User` header): a spam
    /// verdict is a strike against the account (`[containment]`).
    #[serde(default = "Rspamd::default_reject")]
    pub scan_submission: bool,
}

impl Rspamd {
    fn default_timeout_ms() -> u64 {
        10_000
    }
    fn default_reject() -> bool {
        true
    }
}

/// The built-in limits of `default` and of the levels that have them.
pub(crate) fn builtin_classes(rules: &ReputationRules) -> BTreeMap<String, ClassLimits> {
    std::iter::once("default")
        .chain(rules.levels.iter().map(String::as_str))
        .filter_map(|c| ClassLimits::builtin(c).map(|l| (c.to_owned(), l)))
        .collect()
}

/// Greylisting for the default pool (issue 21): the first message of an
/// unknown sender's triplet (its range, its sender domain, the recipient)
/// is deferred; a retry after `delay_secs` and before `expiry_secs` passes,
/// and the triplet then passes for `pass_days`. Identified senders (SPF
/// pass, known senders, domain ranges, reputation) are never delayed. The
/// paper's default pool exists to give other filters time to react; this
/// is the cheapest such filter.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Greylist {
    pub enabled: bool,
    pub delay_secs: u64,
    pub expiry_secs: u64,
    pub pass_days: u64,
    /// The sender's range is this wide, so a pool of outbound servers
    /// retrying from another address passes.
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
}

impl Default for Greylist {
    fn default() -> Self {
        Greylist {
            enabled: false,
            delay_secs: 300,
            expiry_secs: 4 * 3600,
            pass_days: 36,
            ipv4_prefix: 24,
            ipv6_prefix: 64,
        }
    }
}

/// The policy listener (Postfix's policy delegation protocol).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyService {
    /// Longest a decision may take: past it the answer is DUNNO, so a
    /// slow state backend never holds Postfix up.
    pub timeout_ms: u64,
}

impl Default for PolicyService {
    fn default() -> Self {
        PolicyService { timeout_ms: 1000 }
    }
}
