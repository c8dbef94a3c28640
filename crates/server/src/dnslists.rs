//! DNS block and reputation lists (RFC 5782) applied at the stage that
//! knows the name: client address at connect, MAIL FROM domain at MAIL,
//! DKIM d= domains at the end of data. A list that does not answer counts
//! as not listed (and is logged), so a list outage stops no mail.

use portcullis_authn::{Listing, Verifier, dnsbl_query};
use portcullis_config::{DnsList, ListAction, ListKind};
use portcullis_smtp::{Reply, Status};
use std::net::IpAddr;
use tracing::warn;

/// What the lists said about one name.
#[derive(Debug, Default)]
pub(crate) struct ListOutcome {
    /// The first refusal, if a reject list has the name.
    pub refusal: Option<Reply>,
    /// `X-DNSBL:` header lines for label lists that have the name.
    pub labels: Vec<String>,
}

async fn check(
    verifier: &Verifier,
    lists: &[DnsList],
    kind: ListKind,
    query: impl Fn(&DnsList) -> String,
    subject: &str,
    refusal: impl Fn(&DnsList) -> Reply,
) -> ListOutcome {
    let mut out = ListOutcome::default();
    for list in lists.iter().filter(|l| l.kind == kind) {
        match verifier.dns_list(&query(list)).await {
            Listing::Listed => match list.action {
                ListAction::Reject if out.refusal.is_none() => out.refusal = Some(refusal(list)),
                ListAction::Reject => {}
                ListAction::Label => out.labels.push(format!(
                    "X-DNSBL: {} listed {subject}\r\n",
                    list.display_name()
                )),
            },
            Listing::NotListed => {}
            Listing::Unavailable => {
                warn!(event = "dns_list_unavailable", list = %list.zone, subject = %subject)
            }
        }
    }
    out
}

/// Address lists, at connect.
pub(crate) async fn client(verifier: &Verifier, lists: &[DnsList], ip: IpAddr) -> ListOutcome {
    check(verifier, lists, ListKind::Address, |l| dnsbl_query(ip, &l.zone), &format!("[{ip}]"), |l| {
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
    verifier: &Verifier,
    lists: &[DnsList],
    domain: &str,
    role: &str,
) -> ListOutcome {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    check(
        verifier,
        lists,
        ListKind::Domain,
        |l| format!("{domain}.{}.", l.zone.trim_end_matches('.')),
        &domain,
        |l| {
            Reply::new(
                554,
                Status(5, 7, 1),
                format!("{role} domain {domain} is listed by {}", l.display_name()),
            )
        },
    )
    .await
}
