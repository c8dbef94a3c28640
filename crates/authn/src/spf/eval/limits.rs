//! The processing limits of RFC 7208 §4.6.4: at most 10 DNS-querying
//! terms per check_host(), at most two void lookups, at most 10 names
//! from an MX or PTR answer. Exceeding one is a permerror; this file only
//! counts, it does no DNS.

use super::{Abort, Evaluation, perm};
use crate::spf::SpfDns;

/// §4.6.4: at most 10 terms that cause DNS queries, and (SHOULD) at most
/// two of them answering with nothing.
const MAX_LOOKUPS: u32 = 10;
const MAX_VOID_LOOKUPS: u32 = 2;
/// §4.6.4: an MX answer with more names, or PTR names beyond this many.
pub(super) const MAX_NAMES: usize = 10;

impl<D: SpfDns> Evaluation<'_, D> {
    pub(super) fn count_lookup(&mut self) -> Result<(), Abort> {
        self.lookups += 1;
        if self.lookups > MAX_LOOKUPS {
            return Err(perm("more than 10 DNS-querying terms"));
        }
        Ok(())
    }

    /// A query that answered with nothing (§4.6.4).
    pub(super) fn count_void(&mut self) -> Result<(), Abort> {
        self.voids += 1;
        if self.voids > MAX_VOID_LOOKUPS {
            return Err(perm("more than 2 void lookups"));
        }
        Ok(())
    }
}
