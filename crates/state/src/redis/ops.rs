//! Every question to Redis besides the connect decision (which also
//! serves the rate charges of MAIL/RCPT/DATA): submission quotas and AUTH counts, reputation,
//! range facts, greylisting and the operator's changes. Each is one call
//! where its keys share a hash tag; where they cannot (a global index
//! beside a per-identity hash), the two calls go out together.

use super::{RedisBackend, keys};
use portcullis_accounts::{QuotaExceeded, QuotaLimits, window_start};
use portcullis_admission::{
    AUTHENTICATED_RANGE_TTL_SECS, BlockEntry, Exemption, LevelChange, Reputation, StateCommand,
    Verdict,
};
use portcullis_config::{Cidr, ReputationRules};
use std::net::IpAddr;

/// Blocklist entries one sweep step looks at (a few milliseconds of
/// Redis's time).
const SWEEP_STEP: u32 = 2_000;
/// Steps of one sweep at most (ten million entries); the next sweep
/// takes what a bigger flood left.
const MAX_SWEEP_STEPS: u32 = 5_000;

/// Failures remembered by the cluster: (count, seconds left) for the
/// address and the account, and whether the address is known.
pub struct AuthCounts {
    pub address: (u32, u64),
    pub account: (u32, u64),
    pub known: bool,
}

struct AuthKeys {
    address: String,
    account: String,
    known: String,
}

fn auth_keys(ip: IpAddr, account: &str) -> AuthKeys {
    let ip = portcullis_accounts::throttle_key(ip);
    let acct = account.to_ascii_lowercase();
    AuthKeys {
        address: keys::auth_address(&ip.to_string()),
        account: keys::account(&acct, "auth_fails"),
        known: keys::account(&acct, &format!("auth_known:{ip}")),
    }
}

impl RedisBackend {
    /// The address's failures and the account's (two slots: two calls,
    /// sent together).
    pub(crate) async fn auth_counts(&self, ip: IpAddr, account: &str) -> Option<AuthCounts> {
        let k = auth_keys(ip, account);
        let mut by_address = redis::pipe();
        by_address.get(&k.address).ttl(&k.address);
        let mut by_account = redis::pipe();
        by_account.get(&k.account).ttl(&k.account).exists(&k.known);
        let (a, c) = tokio::join!(
            self.pipeline::<(Option<u32>, i64)>(by_address),
            self.pipeline::<(Option<u32>, i64, u8)>(by_account)
        );
        let ((a, a_ttl), (c, c_ttl, known)) = (a?, c?);
        let left = |t: i64| u64::try_from(t).unwrap_or(0);
        Some(AuthCounts {
            address: (a.unwrap_or(0), left(a_ttl)),
            account: (c.unwrap_or(0), left(c_ttl)),
            known: known == 1,
        })
    }

    pub(crate) async fn auth_outcome(
        &self,
        ip: IpAddr,
        account: &str,
        ok: bool,
        throttle: &portcullis_accounts::ThrottleConfig,
    ) {
        let k = auth_keys(ip, account);
        let secs = throttle.lock_for.as_secs().max(1) as i64;
        let (mut by_address, mut by_account) = (redis::pipe(), redis::pipe());
        if ok {
            let known_secs = throttle.known_for().as_secs().max(1);
            by_address.del(&k.address).ignore();
            by_account.set_ex(&k.known, 1, known_secs).ignore();
        } else {
            by_address
                .incr(&k.address, 1)
                .ignore()
                .expire(&k.address, secs)
                .ignore();
            by_account
                .incr(&k.account, 1)
                .ignore()
                .expire(&k.account, secs)
                .ignore();
        }
        let _: (Option<()>, Option<()>) =
            tokio::join!(self.pipeline(by_address), self.pipeline(by_account));
    }

    pub(crate) async fn penalize(&self, range: Cidr) -> Option<()> {
        let key = keys::range(range, "unknown");
        let ttl = portcullis_admission::UNKNOWN_USER_MEMORY_SECS as i64;
        let mut pipe = redis::pipe();
        pipe.incr(&key, 1).ignore().expire(&key, ttl).ignore();
        self.pipeline(pipe).await
    }

    /// The range's hash of domains, and the index of such ranges that
    /// escalation reads (global: a second call, sent together).
    pub(crate) async fn remember_range(&self, range: Cidr, domain: &str, now: u64) -> Option<()> {
        let key = keys::range(range, "dr");
        let ttl = portcullis_admission::DOMAIN_RANGE_TTL_SECS as i64;
        let mut pipe = redis::pipe();
        pipe.hset(&key, domain, now)
            .ignore()
            .expire(&key, ttl)
            .ignore();
        // A member of the index may outlive its hash: that errs toward
        // not blocking (escalation never covers an identified range).
        let index = redis::cmd("SADD")
            .arg(keys::global("drs"))
            .arg(range.to_string())
            .to_owned();
        let (a, b): (Option<()>, Option<i64>) =
            tokio::join!(self.pipeline(pipe), self.command(index));
        a.and(b.map(|_| ()))
    }

    pub(crate) async fn blocklist(&self, now: u64) -> Option<Vec<(Cidr, BlockEntry)>> {
        let v = self.hash_all(&keys::global("blocklist")).await?;
        let mut out: Vec<(Cidr, BlockEntry)> = v
            .into_iter()
            .filter_map(|(k, v)| Some((k.parse().ok()?, serde_json::from_str(&v).ok()?)))
            .filter(|(_, e): &(Cidr, BlockEntry)| e.until > now)
            .collect();
        out.sort_by_key(|(c, _)| c.to_string());
        Some(out)
    }

    pub(crate) async fn greylist(
        &self,
        key: &str,
        rules: portcullis_admission::GreylistRules,
        now: u64,
    ) -> Option<portcullis_admission::Greyed> {
        let mut inv = self.scripts.greylist.prepare_invoke();
        inv.key(keys::greylist(key))
            .arg(now)
            .arg(rules.delay)
            .arg(rules.expiry)
            .arg(rules.pass);
        let (pass, wait): (u8, u64) = self.invoke(inv).await?;
        Some(if pass == 1 {
            portcullis_admission::Greyed::Pass
        } else {
            portcullis_admission::Greyed::Wait(wait)
        })
    }

    /// The lists escalation's exemptions are read from, in one slot (one
    /// pipeline): known senders, domain ranges, recent logins.
    pub(crate) async fn exemption_within(
        &self,
        prefix: Cidr,
        now: u64,
    ) -> Option<Option<Exemption>> {
        let since = now.saturating_sub(AUTHENTICATED_RANGE_TTL_SECS);
        let mut pipe = redis::pipe();
        pipe.hkeys(keys::global("known"))
            .smembers(keys::global("drs"))
            .zrangebyscore(keys::global("authd"), format!("({since}"), "+inf");
        let (known, drs, authd): (Vec<String>, Vec<String>, Vec<String>) =
            self.pipeline(pipe).await?;
        let near = |list: &[String]| {
            list.iter()
                .filter_map(|k| k.parse::<Cidr>().ok())
                .any(|c| prefix.covers(&c) || c.covers(&prefix))
        };
        Some(if near(&known) {
            Some(Exemption::Known)
        } else if near(&drs) {
            Some(Exemption::Domain)
        } else if near(&authd) {
            Some(Exemption::Authenticated)
        } else {
            None
        })
    }

    /// A client in `range` logged in at `now`: a sorted set by time, so
    /// the sweep trims what is past its memory.
    pub(crate) async fn remember_authenticated(&self, range: Cidr, now: u64) -> Option<()> {
        let cmd = redis::cmd("ZADD")
            .arg(keys::global("authd"))
            .arg(now)
            .arg(range.to_string())
            .to_owned();
        self.command::<i64>(cmd).await.map(|_| ())
    }

    /// Remove the blocklist's ended entries and the logins past their
    /// memory; the blocklist entries removed. The blocklist goes in steps
    /// of `SWEEP_STEP` entries, each one script call (checked and removed
    /// atomically, so a range blocked again meanwhile stays), so no call
    /// holds Redis for long however big a flood left the hash.
    pub(crate) async fn sweep(&self, now: u64) -> Option<u64> {
        let since = now.saturating_sub(AUTHENTICATED_RANGE_TTL_SECS);
        let trim = redis::cmd("ZREMRANGEBYSCORE")
            .arg(keys::global("authd"))
            .arg("-inf")
            .arg(since)
            .to_owned();
        let _: Option<i64> = self.command(trim).await;
        let (mut cursor, mut removed) = ("0".to_owned(), 0u64);
        for _ in 0..MAX_SWEEP_STEPS {
            let mut inv = self.scripts.sweep.prepare_invoke();
            inv.key(keys::global("blocklist"))
                .arg(now)
                .arg(&cursor)
                .arg(SWEEP_STEP);
            let (next, n): (String, u64) = self.invoke(inv).await?;
            removed += n;
            if next == "0" {
                break;
            }
            cursor = next;
        }
        Some(removed)
    }

    pub(crate) async fn known(&self) -> Option<Vec<(Cidr, String)>> {
        let v = self.hash_all(&keys::global("known")).await?;
        let mut out: Vec<(Cidr, String)> = v
            .into_iter()
            .filter_map(|(k, n)| Some((k.parse().ok()?, n)))
            .collect();
        out.sort_by_key(|(c, _)| c.to_string());
        Some(out)
    }

    pub(crate) async fn take_quota(
        &self,
        account: &str,
        limits: QuotaLimits,
        n: u32,
        now: u64,
    ) -> Option<Result<(), QuotaExceeded>> {
        let windows = limits.windows();
        let mut inv = self.scripts.quota.prepare_invoke();
        inv.arg(n);
        for (w, limit) in windows {
            let start = window_start(w, now);
            inv.key(keys::account(
                account,
                &format!("quota:{}:{start}", w.name()),
            ))
            .arg(limit)
            .arg(w.seconds() + 60);
        }
        let full: usize = self.invoke(inv).await?;
        Some(match full.checked_sub(1).and_then(|i| windows.get(i)) {
            Some((w, limit)) => Err(QuotaExceeded::at(*w, *limit, now)),
            None => Ok(()),
        })
    }

    pub(crate) async fn reputation(&self, key: &str) -> Option<Option<Reputation>> {
        let fields: Vec<(String, u64)> = self
            .command(redis::cmd("HGETALL").arg(keys::reputation(key)).to_owned())
            .await?;
        Some((!fields.is_empty()).then(|| reputation_from(&fields)))
    }

    /// Count a message and a verdict for an identity (its hash, and the
    /// global index of identities: two slots, two calls sent together),
    /// then apply the level change it earned unless another node did.
    pub(crate) async fn record(
        &self,
        key: &str,
        verdict: Option<Verdict>,
        counts_message: bool,
        rules: &ReputationRules,
        now: u64,
    ) -> Option<Option<LevelChange>> {
        let k = keys::reputation(key);
        let mut inv = self.scripts.record.prepare_invoke();
        inv.key(&k)
            .arg(now)
            .arg(if counts_message { "1" } else { "0" })
            .arg(verdict.map_or("", Verdict::as_str));
        let index = redis::cmd("SADD")
            .arg(keys::global("reps"))
            .arg(&k)
            .to_owned();
        let (fields, _): (Option<Vec<(String, u64)>>, Option<i64>) =
            tokio::join!(self.invoke(inv), self.command(index));
        let rep = reputation_from(&fields?);
        let Some(change) = rep.decide(rules) else {
            return Some(None);
        };
        let (LevelChange::Promoted { from, to } | LevelChange::Demoted { from, to }) = change;
        let mut inv = self.scripts.level.prepare_invoke();
        inv.key(&k).arg(from).arg(to).arg(now);
        let applied: i64 = self.invoke(inv).await?;
        Some((applied == 1).then_some(change))
    }

    async fn hash_all(&self, key: &str) -> Option<Vec<(String, String)>> {
        self.command(redis::cmd("HGETALL").arg(key).to_owned())
            .await
    }

    pub(crate) async fn reputations(&self) -> Option<Vec<(String, Reputation)>> {
        let members: Vec<String> = self
            .command(redis::cmd("SMEMBERS").arg(keys::global("reps")).to_owned())
            .await?;
        let mut out = Vec::new();
        for k in members {
            let Some(id) = keys::identity_of(&k) else {
                continue;
            };
            if let Some(Some(r)) = self.reputation(id).await {
                out.push((id.to_owned(), r));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Some(out)
    }

    /// An operator's change. A list change also moves the lists' version
    /// in the same transaction, so every node's mirror reloads.
    pub(crate) async fn apply(
        &self,
        cmd: &StateCommand,
        rules: &ReputationRules,
        now: u64,
    ) -> Result<(), String> {
        let unreachable = || "Redis is unreachable; nothing changed".to_owned();
        let (list, field, value) = match cmd {
            StateCommand::Block {
                range,
                secs,
                reason,
            } => {
                let e = BlockEntry {
                    until: now + secs,
                    reason: reason.clone(),
                };
                let json = serde_json::to_string(&e).map_err(|e| e.to_string())?;
                ("blocklist", range, Some(json))
            }
            StateCommand::Unblock { range } => ("blocklist", range, None),
            StateCommand::KnownAdd { range, name } => ("known", range, Some(name.clone())),
            StateCommand::KnownDel { range } => ("known", range, None),
            StateCommand::Report { identity, verdict } => {
                let v = Verdict::parse(verdict)
                    .ok_or(format!("verdict {verdict:?} is not ham or spam"))?;
                let key = portcullis_admission::Identity::parse(identity).key();
                self.record(&key, Some(v), false, rules, now)
                    .await
                    .ok_or_else(unreachable)?;
                return Ok(());
            }
        };
        let (hash, field) = (keys::global(list), field.to_string());
        let mut pipe = redis::pipe();
        pipe.atomic();
        match value {
            Some(v) => pipe.hset(&hash, &field, v),
            None => pipe.hdel(&hash, &field),
        };
        pipe.incr(keys::global("version"), 1).ignore();
        let (changed,): (i64,) = self.pipeline(pipe).await.ok_or_else(unreachable)?;
        if changed == 0 && value_removed(cmd) {
            return Err(format!("{field} is not listed"));
        }
        Ok(())
    }
}

/// Whether the command removes an entry (and must find it).
fn value_removed(cmd: &StateCommand) -> bool {
    matches!(
        cmd,
        StateCommand::Unblock { .. } | StateCommand::KnownDel { .. }
    )
}

fn reputation_from(fields: &[(String, u64)]) -> Reputation {
    let mut r = Reputation::default();
    for (k, v) in fields {
        let v = *v;
        match k.as_str() {
            "level" => r.level = v as u32,
            "messages" => r.messages = v,
            "ham" => r.ham = v,
            "spam" => r.spam = v,
            "ham_at_level" => r.ham_at_level = v,
            "spam_at_level" => r.spam_at_level = v,
            "first_seen" => r.first_seen = v,
            "last_seen" => r.last_seen = v,
            "last_change" => r.last_change = v,
            _ => {}
        }
    }
    r
}
