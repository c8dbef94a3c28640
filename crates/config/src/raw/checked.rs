//! The bounds of each table's values, checked after parsing: each
//! function says what is wrong with the table's span.

use super::*;

pub(super) fn checked_limits(l: Spanned<Limits>) -> Result<Limits, Invalid> {
    let at = l.span().start;
    let l = l.into_inner();
    let rules: [(bool, &str); 5] = [
        (
            l.command_line_octets < 512,
            "command_line_octets must be at least 512 (RFC 5321 4.5.3.1.4)",
        ),
        (
            l.text_line_octets < 1000,
            "text_line_octets must be at least 1000 (RFC 5321 4.5.3.1.6)",
        ),
        (
            l.max_recipients < 100,
            "max_recipients must be at least 100 (RFC 5321 4.5.3.1.8)",
        ),
        (l.max_errors == 0, "max_errors must be at least 1"),
        (l.max_sessions == 0, "max_sessions must be at least 1"),
    ];
    match rules.iter().find(|(bad, _)| *bad) {
        Some((_, why)) => Err((at, (*why).to_owned())),
        None => Ok(l),
    }
}

pub(super) fn checked_admission(a: Spanned<Admission>) -> Result<Admission, Invalid> {
    let at = a.span().start;
    let a = a.into_inner();
    let rules: [(bool, &str); 4] = [
        (
            !(16..=64).contains(&a.escalate_ipv6_ceiling),
            "escalate_ipv6_ceiling must be between 16 and 64 (the identity prefix)",
        ),
        (
            !(8..=32).contains(&a.escalate_ipv4_ceiling),
            "escalate_ipv4_ceiling must be between 8 and 32",
        ),
        (
            a.escalate_after > 0 && a.escalate_window_secs == 0,
            "escalate_window_secs must be above 0 when escalate_after is set",
        ),
        (
            // An escalated block always lifts itself: 0 would be no block.
            a.escalate_after > 0 && a.escalate_block_secs == 0,
            "escalate_block_secs must be above 0 when escalate_after is set (0 turns escalation off)",
        ),
    ];
    match rules.iter().find(|(bad, _)| *bad) {
        Some((_, why)) => Err((at, (*why).to_owned())),
        None => Ok(a),
    }
}

pub(super) fn checked_containment(
    c: Spanned<crate::Containment>,
) -> Result<crate::Containment, Invalid> {
    let at = c.span().start;
    let c = c.into_inner();
    match c.problem() {
        Some(why) => Err((at, why.to_owned())),
        None => Ok(c),
    }
}

pub(super) fn checked_greylist(g: Spanned<Greylist>) -> Result<Greylist, Invalid> {
    let at = g.span().start;
    let g = g.into_inner();
    let rules: [(bool, &str); 3] = [
        (
            g.expiry_secs <= g.delay_secs,
            "expiry_secs must be longer than delay_secs (a retry must have time to come)",
        ),
        (
            !(8..=32).contains(&g.ipv4_prefix),
            "ipv4_prefix must be between 8 and 32",
        ),
        (
            !(16..=128).contains(&g.ipv6_prefix),
            "ipv6_prefix must be between 16 and 128",
        ),
    ];
    match rules.iter().find(|(bad, _)| *bad) {
        Some((_, why)) => Err((at, (*why).to_owned())),
        None => Ok(g),
    }
}

pub(super) fn checked_delivery(d: Spanned<Delivery>) -> Result<Delivery, Invalid> {
    let at = d.span().start;
    let d = d.into_inner();
    for (i, rule) in d.reply_rule.iter().enumerate() {
        if let Err(e) = rule.check() {
            return Err((at, format!("reply_rule {}: {e}", i + 1)));
        }
    }
    if let Some(s) = d
        .site
        .iter()
        .find(|s| s.name.is_empty() || s.max_connections == Some(0))
    {
        return Err((
            at,
            format!(
                "site {:?}: a site needs a name and at least one connection",
                s.name
            ),
        ));
    }
    if d.site_pause_secs < 60 || d.site_max_pause_secs < d.site_pause_secs {
        return Err((
            at,
            "site_pause_secs must be at least 60 and site_max_pause_secs at least as long".into(),
        ));
    }
    Ok(d)
}

pub(super) fn checked_submission(s: Spanned<Submission>) -> Result<Submission, Invalid> {
    let at = s.span().start;
    let s = s.into_inner();
    if s.log_retention_days < 7 {
        // spamops §3.1: enough to trace a complaint, at least a week.
        return Err((
            at,
            "log_retention_days must be at least 7 (draft-hutzler-spamops 3.1)".into(),
        ));
    }
    if s.max_sessions_per_account == 0 {
        return Err((at, "max_sessions_per_account must be at least 1".into()));
    }
    Ok(s)
}
