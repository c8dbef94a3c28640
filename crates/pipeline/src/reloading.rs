//! A value read from files and read again when they change: the CLI edits
//! accounts and keys while the server runs, and the next use sees the edit
//! without a restart. A file that has become unreadable keeps the last good
//! value (and is logged), so a half-edited file never locks everyone out.

use std::sync::{Arc, RwLock};

pub(crate) struct Reloading<T, F: PartialEq> {
    what: &'static str,
    current: RwLock<(Arc<T>, F)>,
}

impl<T: Default, F: PartialEq> Reloading<T, F> {
    pub(crate) fn new(what: &'static str, value: T, fingerprint: F) -> Self {
        Reloading {
            what,
            current: RwLock::new((Arc::new(value), fingerprint)),
        }
    }

    /// The value for `fingerprint` (modification times), loading it again
    /// with `load` if the fingerprint moved.
    pub(crate) fn get<E: std::fmt::Display>(
        &self,
        fingerprint: F,
        load: impl FnOnce() -> Result<T, E>,
    ) -> Arc<T> {
        if let Ok(g) = self.current.read()
            && g.1 == fingerprint
        {
            return g.0.clone();
        }
        match load() {
            Ok(v) => {
                let v = Arc::new(v);
                if let Ok(mut g) = self.current.write() {
                    *g = (v.clone(), fingerprint);
                }
                v
            }
            Err(e) => {
                tracing::warn!(event = "reload_failed", what = self.what, error = %e, "keeping what was read before");
                self.current.read().map(|g| g.0.clone()).unwrap_or_default()
            }
        }
    }
}
