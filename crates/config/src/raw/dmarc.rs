//! `[dmarc]`: the checks serde cannot make on the report settings
//! (addresses are addresses, excluded domains are domain names).

use super::{Invalid, checked_domain};
use crate::DmarcSettings;
use std::path::Path;
use toml::Spanned;

pub(super) fn checked_dmarc(
    d: Spanned<DmarcSettings>,
    base: &Path,
) -> Result<DmarcSettings, Invalid> {
    let at = d.span().start;
    let d = d.into_inner();
    let address = |key: &str, a: Option<String>| -> Result<Option<String>, Invalid> {
        let Some(a) = a else { return Ok(None) };
        let bad = || (at, format!("{key}: {a:?} is not an address (local@domain)"));
        let (local, domain) = a.rsplit_once('@').ok_or_else(bad)?;
        if local.is_empty() || local.contains(char::is_whitespace) {
            return Err(bad());
        }
        let domain = checked_domain(&Spanned::new(0..0, domain.to_owned())).map_err(|_| bad())?;
        Ok(Some(format!("{local}@{domain}")))
    };
    let exclude = d
        .report_exclude
        .iter()
        .map(|n| {
            checked_domain(&Spanned::new(at..at, n.clone()))
                .map_err(|(_, why)| (at, format!("report_exclude: {why}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if d.report_max_ratio < 2 {
        return Err((at, "report_max_ratio must be at least 2".into()));
    }
    Ok(DmarcSettings {
        public_suffix_list: d.public_suffix_list.map(|p| base.join(p)),
        report_mailbox: address("report_mailbox", d.report_mailbox)?,
        report_from: address("report_from", d.report_from)?,
        report_exclude: exclude,
        report_interval_secs: d.report_interval_secs.max(1),
        ..d
    })
}
