//! The checks applied at each SMTP stage (maddy's model: a check returns a
//! verdict, the session applies it). Decisions only; no I/O.

use crate::{Accept, StageResult};
use portcullis_authn::{AuthResult, DmarcPolicy, MessageResults};
use portcullis_config::{Config, InboundPolicy, RecipientPolicy};
use portcullis_smtp::{Mailbox, Reply, Status};
use std::net::IpAddr;

/// How strict a result about a message is, mildest first: accept, file
/// as junk, defer, refuse. The strictest over the recipient domains wins.
fn severity(r: &StageResult) -> u8 {
    match r {
        Ok(a) if a.folder.is_none() => 0,
        Ok(_) => 1,
        Err(reply) if !reply.is_permanent_failure() => 2,
        Err(_) => 3,
    }
}

/// 4xx: a result the decision depends on was a temporary DNS error.
fn dns_defer(what: &str) -> StageResult {
    Err(Reply::new(
        451,
        Status(4, 4, 3),
        format!("{what} could not be evaluated (temporary DNS failure); try again later"),
    ))
}

/// The policy stage of one local domain applied to the results.
pub(crate) fn inbound_disposition(
    policy: InboundPolicy,
    r: &MessageResults,
    trusted_sealers: &[String],
) -> StageResult {
    // RFC 8617 §7.2: a receiver may let a valid chain from a sealer it
    // trusts (a mailing list, a forwarder) outweigh a DMARC failure.
    let vouched = r
        .arc_sealer
        .as_ref()
        .is_some_and(|d| trusted_sealers.iter().any(|t| t.eq_ignore_ascii_case(d)));
    match policy {
        InboundPolicy::Label => Ok(Accept::default()),
        InboundPolicy::RejectBothFail => {
            if r.spf == AuthResult::Pass || r.dkim == AuthResult::Pass {
                Ok(Accept::default())
            } else if r.spf == AuthResult::TempError || r.dkim == AuthResult::TempError {
                dns_defer("SPF or DKIM")
            } else {
                Err(Reply::new(
                    550,
                    Status(5, 7, 1),
                    format!(
                        "Message rejected: neither SPF nor DKIM passes (spf={}, dkim={})",
                        r.spf.as_str(),
                        r.dkim.as_str()
                    ),
                ))
            }
        }
        InboundPolicy::Dmarc => match (r.dmarc, r.dmarc_policy) {
            (AuthResult::TempError, _) => dns_defer("DMARC"),
            (AuthResult::Fail, _) if vouched => Ok(Accept::default()),
            (AuthResult::Fail, DmarcPolicy::Reject) => Err(Reply::new(
                550,
                Status(5, 7, 1),
                format!(
                    "Message rejected by the DMARC policy of {} (spf={}, dkim={}, dmarc=fail)",
                    r.from_domain,
                    r.spf.as_str(),
                    r.dkim.as_str()
                ),
            )),
            (AuthResult::Fail, DmarcPolicy::Quarantine) => Ok(Accept::junk()),
            _ => Ok(Accept::default()),
        },
    }
}

/// `[reverse_dns] require_confirmed`: a client whose address has no
/// forward-confirmed PTR name is refused at connect (RFC 7372 §3.3:
/// X.7.25, "reverse DNS validation failed"); a DNS failure only defers.
pub(crate) fn reverse_dns_refusal(
    policy: &portcullis_config::ReverseDns,
    iprev: AuthResult,
    ip: std::net::IpAddr,
) -> Option<Reply> {
    match iprev {
        _ if !policy.require_confirmed => None,
        AuthResult::Pass => None,
        AuthResult::TempError => Some(Reply::new(
            450,
            Status(4, 7, 25),
            format!("Reverse DNS of [{ip}] could not be checked just now, try again later"),
        )),
        _ => Some(Reply::new(
            550,
            Status(5, 7, 25),
            format!(
                "Reverse DNS validation failed: [{ip}] has no PTR name that resolves back to it; publish one or send through your provider's mail server"
            ),
        )),
    }
}

/// The strictest disposition over the local domains of the recipients: one
/// reply answers the whole message after DATA.
pub(crate) fn message_disposition<'a>(
    config: &Config,
    domains: impl Iterator<Item = &'a str>,
    r: &MessageResults,
) -> StageResult {
    domains
        .map(|d| {
            let policy = config.inbound_policy.get(d).copied().unwrap_or_default();
            inbound_disposition(policy, r, &config.forwarding.arc_trusted_sealers)
        })
        .max_by_key(severity)
        .unwrap_or(Ok(Accept::default()))
}

/// Whether a recipient domain's policy stage refuses mail (anything but
/// `label`): rules that would refuse follow it (issue 17: a label-mode
/// operator expects mail labelled, not lost).
pub(crate) fn policy_refuses<'a>(
    config: &Config,
    mut domains: impl Iterator<Item = &'a str>,
) -> bool {
    domains
        .any(|d| config.inbound_policy.get(d).copied().unwrap_or_default() != InboundPolicy::Label)
}

/// MAIL FROM on the mx listener. A sender in one of our own domains
/// belongs on the submission port with AUTH (RFC 6409, spamops §3.1):
/// refused here unless the client is in a network the operator listed
/// for legacy port-25 devices.
pub(crate) fn mx_sender(
    config: &Config,
    client: IpAddr,
    from: Option<&Mailbox>,
) -> StageResult<()> {
    let Some(from) = from else {
        return Ok(());
    };
    // Only the configured domains: mail from root@<hostname> is the
    // machine's own, not a user's.
    if !config.local_domains.contains(&from.domain)
        || config
            .submission
            .port25_networks
            .iter()
            .any(|n| n.contains(client))
    {
        return Ok(());
    }
    Err(Reply::new(
        553,
        Status(5, 7, 1),
        format!(
            "Mail from {} must be submitted on port 587 or 465 with authentication, not on port 25",
            from.domain
        ),
    ))
}

/// RCPT TO on the mx listener: local domains only, never a relay,
/// whatever the client claims (the route of a source-routed path has
/// already been dropped by the parser, so `<@local:u@remote>` is remote).
/// `known` says whether the mailbox exists (an account, postmaster, abuse).
pub(crate) fn recipient(config: &Config, to: &Mailbox, known: bool) -> StageResult<()> {
    if to.is_literal() || !config.is_local_domain(&to.domain) {
        return Err(Reply::new(
            554,
            Status(5, 7, 1),
            format!(
                "Relay access denied: {} is not a domain this server receives mail for",
                to.domain
            ),
        ));
    }
    if !is_mailbox_name(&to.local) {
        return Err(Reply::new(
            550,
            Status(5, 1, 3),
            format!("{to}: local part is not a valid mailbox name here"),
        ));
    }
    match recipient_policy(config, &to.domain) {
        RecipientPolicy::RejectUnknown if !known => Err(Reply::new(
            550,
            Status(5, 1, 1),
            format!("<{to}>: user unknown"),
        )),
        _ => Ok(()),
    }
}

/// The domain's recipient policy; our own hostname takes mail for its
/// postmaster and abuse only.
pub(crate) fn recipient_policy(config: &Config, domain: &str) -> RecipientPolicy {
    config
        .recipient_policy
        .get(domain)
        .copied()
        .unwrap_or_default()
}

/// Whether a reply is the "user unknown" that feeds the tarpit.
pub(crate) fn is_user_unknown(r: &StageResult<()>) -> bool {
    matches!(r, Err(r) if r.status == Some(Status(5, 1, 1)))
}

/// Local mailboxes are plain dot-atoms without `/`, `%` or `!` (the
/// routing syntaxes of old: a `%`-hack or bang path must not reach a
/// mailbox, or anything that might forward it).
fn is_mailbox_name(local: &str) -> bool {
    !local.is_empty()
        && !local.starts_with('.')
        && local
            .chars()
            .all(|c| c.is_alphanumeric() || "._+-=#$&'*^`{|}~?".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn config() -> Config {
        let mut c = Config::embedded_default(PathBuf::from("/tmp/x"), "mx.local.test".into());
        c.local_domains = vec!["local.test".into()];
        c
    }

    fn rcpt(s: &str) -> StageResult<()> {
        let (path, _) = portcullis_smtp::address::parse_path(s, false).unwrap();
        let portcullis_smtp::Path::Mailbox(m) = path else {
            panic!()
        };
        recipient(&config(), &m, true)
    }

    fn refused(r: StageResult<()>) -> bool {
        r.is_err()
    }

    #[test]
    fn unknown_users_are_refused_unless_the_domain_accepts_all() {
        let mut c = config();
        let m = Mailbox {
            local: "nobody".into(),
            domain: "local.test".into(),
        };
        let v = recipient(&c, &m, false);
        assert!(is_user_unknown(&v), "{v:?}");
        c.recipient_policy
            .insert("local.test".into(), RecipientPolicy::AcceptAll);
        assert_eq!(recipient(&c, &m, false), Ok(()));
        c.recipient_policy
            .insert("local.test".into(), RecipientPolicy::Any);
        assert_eq!(recipient(&c, &m, false), Ok(()));
    }

    #[test]
    fn local_domain_is_accepted_in_any_case() {
        assert_eq!(rcpt("<user@LOCAL.test>"), Ok(()));
        assert_eq!(rcpt("<postmaster@mx.local.test>"), Ok(()));
    }

    #[test]
    fn local_senders_on_port_25_only_from_listed_networks() {
        let mut c = config();
        let from = Mailbox {
            local: "alice".into(),
            domain: "local.test".into(),
        };
        let outside: IpAddr = "198.51.100.7".parse().unwrap();
        let inside: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(refused(mx_sender(&c, outside, Some(&from))));
        c.submission.port25_networks = vec!["192.0.2.0/24".parse().unwrap()];
        assert_eq!(mx_sender(&c, inside, Some(&from)), Ok(()));
        assert!(refused(mx_sender(&c, outside, Some(&from))));
        let remote = Mailbox {
            local: "x".into(),
            domain: "remote.test".into(),
        };
        assert_eq!(mx_sender(&c, outside, Some(&remote)), Ok(()));
        assert_eq!(mx_sender(&c, outside, None), Ok(()));
    }

    fn results(
        spf: AuthResult,
        dkim: AuthResult,
        dmarc: AuthResult,
        policy: DmarcPolicy,
    ) -> MessageResults {
        MessageResults {
            dmarc_policy: policy,
            ..crate::tests::results(spf, dkim, dmarc)
        }
    }

    #[test]
    fn reject_both_fail_accepts_either_pass() {
        use AuthResult::*;
        let p = InboundPolicy::RejectBothFail;
        assert_eq!(
            inbound_disposition(p, &results(Pass, Fail, Fail, DmarcPolicy::None), &[]),
            Ok(Accept::default())
        );
        assert_eq!(
            inbound_disposition(p, &results(Fail, Pass, Fail, DmarcPolicy::None), &[]),
            Ok(Accept::default())
        );
        assert!(
            matches!(inbound_disposition(p, &results(Fail, None, Fail, DmarcPolicy::None), &[]), Err(r) if r.code == 550)
        );
        assert!(
            matches!(inbound_disposition(p, &results(TempError, None, None, DmarcPolicy::None), &[]), Err(r) if r.code == 451)
        );
    }

    #[test]
    fn dmarc_stage_follows_the_senders_policy() {
        use AuthResult::*;
        let p = InboundPolicy::Dmarc;
        assert!(matches!(
            inbound_disposition(p, &results(Fail, Fail, Fail, DmarcPolicy::Reject), &[]),
            Err(r) if r.code == 550
        ));
        assert_eq!(
            inbound_disposition(p, &results(Fail, Fail, Fail, DmarcPolicy::Quarantine), &[]),
            Ok(Accept::junk())
        );
        assert_eq!(
            inbound_disposition(p, &results(Fail, Fail, Fail, DmarcPolicy::None), &[]),
            Ok(Accept::default())
        );
        assert_eq!(
            inbound_disposition(p, &results(Fail, Pass, Pass, DmarcPolicy::Reject), &[]),
            Ok(Accept::default())
        );
        assert!(matches!(
            inbound_disposition(p, &results(None, None, TempError, DmarcPolicy::None), &[]),
            Err(r) if r.code == 451
        ));
    }

    #[test]
    fn the_strictest_domain_policy_answers_for_the_message() {
        use AuthResult::*;
        let mut c = Config::embedded_default(PathBuf::from("/tmp/x"), "mx.local.test".into());
        c.inbound_policy
            .insert("junk.test".into(), InboundPolicy::Dmarc);
        c.inbound_policy
            .insert("strict.test".into(), InboundPolicy::RejectBothFail);
        let r = results(Fail, Fail, Fail, DmarcPolicy::Quarantine);
        let junk = message_disposition(&c, ["label.test", "junk.test"].into_iter(), &r);
        assert_eq!(junk, Ok(Accept::junk()));
        let refused = message_disposition(&c, ["junk.test", "strict.test"].into_iter(), &r);
        assert!(matches!(refused, Err(r) if r.status == Some(Status(5, 7, 1))));
        let temp = results(TempError, TempError, None, DmarcPolicy::None);
        let deferred = message_disposition(&c, ["label.test", "strict.test"].into_iter(), &temp);
        assert!(matches!(deferred, Err(r) if r.status == Some(Status(4, 4, 3))));
    }

    #[test]
    fn label_never_refuses() {
        use AuthResult::*;
        assert_eq!(
            inbound_disposition(
                InboundPolicy::Label,
                &results(Fail, Fail, Fail, DmarcPolicy::Reject),
                &[]
            ),
            Ok(Accept::default())
        );
    }

    #[test]
    fn relay_tricks_are_refused() {
        for trick in [
            "<user@remote.test>",
            "<user%remote.test@local.test>",
            "<remote.test!user@local.test>",
            "<@local.test:user@remote.test>",
            "<\"user@remote.test\"@local.test>",
            "<user@[127.0.0.1]>",
            "<user/x@local.test>",
        ] {
            assert!(refused(rcpt(trick)), "{trick}");
        }
    }

    #[test]
    fn a_trusted_arc_sealer_outweighs_a_dmarc_failure() {
        use AuthResult::*;
        let p = InboundPolicy::Dmarc;
        let mut r = results(Fail, Fail, Fail, DmarcPolicy::Reject);
        r.arc = Pass;
        r.arc_sealer = Some("lists.example.test".into());
        let trusted = vec!["lists.example.test".to_string()];
        assert_eq!(inbound_disposition(p, &r, &trusted), Ok(Accept::default()));
        assert!(inbound_disposition(p, &r, &[]).is_err());
        let other = vec!["elsewhere.test".to_string()];
        assert!(inbound_disposition(p, &r, &other).is_err());
    }
}
