//! Escalation across a prefix (issue 17, the paper's rotation problem):
//! an attacker that rotates through a /48 never repeats a /64, so a block
//! per /64 never catches up. When enough distinct child ranges of a wider
//! prefix are blocked, or are refused because the default pool is
//! exhausted, within a window, the wider prefix is blocked: /64 → /56 →
//! /48 for IPv6, /32 → /24 for IPv4, up to a configured ceiling. A prefix
//! that holds (or lies inside) a range some identity vouches for is never
//! blocked: a known sender, an allocation, a domain range (SPF/DKIM
//! identified mail for a domain came from it) or a range whose client
//! logged in (SMTP AUTH). Those keep their class; see [`Exemption`].
//!
//! Plain logic: the caller says what happened and when; this module only
//! counts and decides.

use portcullis_config::Cidr;
use std::collections::HashMap;

/// How escalation is configured (`[admission] escalate_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EscalationRules {
    /// Distinct children within the window that block their parent (0: never).
    pub after: u32,
    pub window_secs: u64,
    /// The widest prefix ever blocked by escalation.
    pub ipv6_ceiling: u8,
    pub ipv4_ceiling: u8,
}

/// A wider prefix to block, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Escalated {
    pub parent: Cidr,
    pub children: usize,
    pub reason: String,
}

/// Why escalation left a prefix alone (the `result` label of
/// `portcullis_escalations_total` is `exempt_` and this).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exemption {
    /// A known-sender range (`known-senders`) lies inside or around it.
    Known,
    /// An allocation (`[identity] allocations`) does.
    Allocation,
    /// A range that delivered mail authenticated for a domain (SPF/DKIM).
    Domain,
    /// A range whose client logged in (SMTP AUTH) lately.
    Authenticated,
}

impl Exemption {
    pub fn as_str(self) -> &'static str {
        match self {
            Exemption::Known => "known",
            Exemption::Allocation => "allocation",
            Exemption::Domain => "domain",
            Exemption::Authenticated => "authenticated",
        }
    }

    /// The `result` label of the escalation counter.
    pub fn result(self) -> &'static str {
        match self {
            Exemption::Known => "exempt_known",
            Exemption::Allocation => "exempt_allocation",
            Exemption::Domain => "exempt_domain",
            Exemption::Authenticated => "exempt_authenticated",
        }
    }
}

/// Most parents remembered at once: a flood spread over the whole address
/// space costs memory per parent, so the oldest are forgotten first.
const MAX_PARENTS: usize = 65_536;

#[derive(Debug, Default)]
pub struct Escalation {
    /// Parent → (child, when it last counted).
    seen: HashMap<Cidr, Vec<(Cidr, u64)>>,
    /// Parents found exempt, until when they are not counted again: a
    /// flood inside an exempt prefix is one decision per window, not a
    /// state lookup and a log line every `after` refusals.
    quiet: HashMap<Cidr, u64>,
}

impl EscalationRules {
    /// The next wider prefix above `child` that escalation may block, if
    /// the ceiling allows one: 8 bits wider for IPv6 (/64 → /56 → /48),
    /// /24 for a single IPv4 address, then 8 bits wider.
    pub fn parent_of(&self, child: Cidr) -> Option<Cidr> {
        let (ceiling, step) = if child.is_ipv4() {
            (self.ipv4_ceiling, 8)
        } else {
            (self.ipv6_ceiling, 8)
        };
        let wider = child.prefix.saturating_sub(step).max(ceiling);
        (wider < child.prefix).then(|| child.widened(wider))
    }
}

impl Escalation {
    /// `child` was blocked, or refused with the default pool exhausted, at
    /// `now`. Returns the parent to block when `rules.after` distinct
    /// children of it did so within the window; the caller then checks
    /// that no identified range lies inside it (that needs the state).
    pub fn record(&mut self, rules: &EscalationRules, child: Cidr, now: u64) -> Option<Escalated> {
        if rules.after == 0 {
            return None;
        }
        let parent = rules.parent_of(child)?;
        if self.quiet.get(&parent).is_some_and(|until| *until > now) {
            return None;
        }
        if self.seen.len() >= MAX_PARENTS && !self.seen.contains_key(&parent) {
            self.forget_before(now.saturating_sub(rules.window_secs));
            if self.seen.len() >= MAX_PARENTS {
                return None;
            }
        }
        let children = self.seen.entry(parent).or_default();
        children.retain(|(c, at)| *c != child && at + rules.window_secs > now);
        children.push((child, now));
        if children.len() < rules.after as usize {
            return None;
        }
        let n = children.len();
        self.seen.remove(&parent);
        Some(Escalated {
            parent,
            children: n,
            reason: format!(
                "escalated: {n} ranges inside {parent} were blocked or refused within {}s",
                rules.window_secs
            ),
        })
    }

    /// The caller found `parent` exempt: count nothing toward it for a
    /// window (the exemption is looked up again after that).
    pub fn exempt(&mut self, rules: &EscalationRules, parent: Cidr, now: u64) {
        if self.quiet.len() >= MAX_PARENTS {
            self.quiet.retain(|_, until| *until > now);
            if self.quiet.len() >= MAX_PARENTS {
                return;
            }
        }
        self.quiet.insert(parent, now + rules.window_secs);
    }

    /// Parents remembered now (for the state-size gauge).
    pub fn len(&self) -> usize {
        self.seen.len() + self.quiet.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty() && self.quiet.is_empty()
    }

    fn forget_before(&mut self, cutoff: u64) {
        self.seen.retain(|_, v| {
            v.retain(|(_, at)| *at >= cutoff);
            !v.is_empty()
        });
        self.quiet.retain(|_, until| *until > cutoff);
    }
}
