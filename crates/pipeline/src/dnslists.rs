//! DNS block and reputation lists (RFC 5782) and domain rating zones (the
//! slides' `DOMAIN.rating.example TXT`) applied at the stage that knows
//! the name: client address at connect, MAIL FROM domain at MAIL, DKIM d=
//! domains at the end of data. A list that does not answer counts as not
//! listed (and is logged), so a list outage stops no mail.

use crate::{Accept, Checks, StageResult};
use portcullis_authn::{DomainRating, Listing, RatingAnswer, dnsbl_query};
use portcullis_config::{DnsList, ListAction, ListKind};
use portcullis_smtp::{Reply, Status};
use std::net::IpAddr;
use tracing::warn;

/// One list's verdict on a name: listed (with a rating zone's rating and
/// status), not listed, or no answer.
enum Verdict {
    Listed(String),
    NotListed,
    Unavailable,
}

async fn check(
    checks: &dyn Checks,
    lists: &[DnsList],
    kinds: &[ListKind],
    subject: &str,
    query: impl Fn(&DnsList) -> String,
    refusal: impl Fn(&DnsList, &str) -> Reply,
) -> StageResult {
    let mut labels = Vec::new();
    let mut refused = None;
    for list in lists.iter().filter(|l| kinds.contains(&l.kind)) {
        let verdict = match list.kind {
            ListKind::Rating => rating_verdict(checks, list, subject).await,
            _ => match checks.dns_list(&query(list)).await {
                Listing::Listed => Verdict::Listed(String::new()),
                Listing::NotListed => Verdict::NotListed,
                Listing::Unavailable => Verdict::Unavailable,
            },
        };
        match verdict {
            Verdict::Listed(what) => match list.action {
                ListAction::Reject if refused.is_none() => refused = Some(refusal(list, &what)),
                ListAction::Reject => {}
                ListAction::Label => labels.push(match list.kind {
                    ListKind::Rating => {
                        format!(
                            "X-DNSBL: {} rates {subject} {what}\r\n",
                            list.display_name()
                        )
                    }
                    _ => format!("X-DNSBL: {} listed {subject}\r\n", list.display_name()),
                }),
            },
            Verdict::NotListed => {}
            Verdict::Unavailable => {
                warn!(event = "dns_list_unavailable", list = %list.zone, subject = %subject)
            }
        }
    }
    // The `X-DNSBL:` lines of the label lists that list the name, or the
    // refusal of the first reject list that does.
    match refused {
        Some(r) => Err(r),
        None => Ok(Accept::with_lines(labels)),
    }
}

/// A rating zone's answer: bad when its status says "Bad" or its rating
/// is under the list's `min_rating`.
async fn rating_verdict(checks: &dyn Checks, list: &DnsList, domain: &str) -> Verdict {
    match checks.domain_rating(domain, &list.zone).await {
        RatingAnswer::Rated(r) if is_bad(&r, list.min_rating) => Verdict::Listed(format!(
            "{} ({})",
            r.rating.map_or_else(|| "-".to_owned(), |n| n.to_string()),
            r.status.as_deref().unwrap_or("no status")
        )),
        RatingAnswer::Rated(_) | RatingAnswer::Unrated => Verdict::NotListed,
        RatingAnswer::Unavailable => Verdict::Unavailable,
    }
}

fn is_bad(r: &DomainRating, min_rating: Option<i64>) -> bool {
    r.status
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("bad"))
        || matches!((r.rating, min_rating), (Some(n), Some(min)) if n < min)
}

/// Address lists, at connect.
pub(crate) async fn client(checks: &dyn Checks, lists: &[DnsList], ip: IpAddr) -> StageResult {
    check(checks, lists, &[ListKind::Address], &format!("[{ip}]"), |l| dnsbl_query(ip, &l.zone), |l, _| {
        if l.dynamic {
            // OP25B, receiving side: this address should not be sending on
            // port 25 at all.
            Reply::new(
                554,
                Status(5, 7, 1),
                format!(
                    "[{ip}] is a dynamic address ({}): send your mail through your provider's submission service (port 587 with authentication)",
                    l.display_name()
                ),
            )
        } else {
            Reply::new(554, Status(5, 7, 1), format!("Service unavailable: [{ip}] is listed by {}", l.display_name()))
        }
    })
    .await
}

/// Domain lists, for a sender or signing domain.
pub(crate) async fn domain(
    checks: &dyn Checks,
    lists: &[DnsList],
    domain: &str,
    role: &str,
) -> StageResult {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    check(
        checks,
        lists,
        &[ListKind::Domain, ListKind::Rating],
        &domain,
        |l| format!("{domain}.{}.", l.zone.trim_end_matches('.')),
        |l, what| {
            let text = match l.kind {
                ListKind::Rating => {
                    format!(
                        "{role} domain {domain} is rated {what} by {}",
                        l.display_name()
                    )
                }
                _ => format!("{role} domain {domain} is listed by {}", l.display_name()),
            };
            Reply::new(554, Status(5, 7, 1), text)
        },
    )
    .await
}
