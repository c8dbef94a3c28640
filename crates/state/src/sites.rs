//! The outbound sites' ledger every node shares (issue 30): with Redis,
//! one per site (`redis::sites`); the embedded backend keeps none (the
//! node's own site state is the whole truth), so it answers None and the
//! node decides alone, as it does when Redis does not answer.

use crate::Store;
use portcullis_shaping::suppress::BoxFuture;
use portcullis_shaping::{LedgerAnswer, LedgerClaim, SharedPause, SiteLedger};

impl Store {
    /// Whether the sites' limits are shared with other nodes.
    pub fn shares_sites(&self) -> bool {
        self.redis.is_some()
    }
}

impl SiteLedger for Store {
    fn take(
        &self,
        site: &str,
        claim: LedgerClaim,
        now: u64,
    ) -> BoxFuture<'_, Option<LedgerAnswer>> {
        let site = site.to_owned();
        Box::pin(async move {
            let r = self.redis.as_ref()?;
            r.site_take(&site, claim, now).await
        })
    }

    fn pause(&self, site: &str, pause: SharedPause) -> BoxFuture<'_, Option<()>> {
        let site = site.to_owned();
        Box::pin(async move { self.redis.as_ref()?.site_pause(&site, &pause).await })
    }
}
