//! The configuration in force, shared by every task of a running server.
//! SIGHUP swaps it as a whole; a reader takes the whole value at once, so
//! a connection or a report run keeps one consistent config to its end.

use crate::Config;
use std::sync::{Arc, RwLock};

/// A cell holding the config in force; clones share the cell.
#[derive(Clone)]
pub struct LiveConfig(Arc<RwLock<Arc<Config>>>);

impl LiveConfig {
    pub fn new(config: Config) -> LiveConfig {
        LiveConfig(Arc::new(RwLock::new(Arc::new(config))))
    }

    /// The config in force now.
    pub fn get(&self) -> Arc<Config> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Put `config` in force for everything that reads from now on.
    pub fn set(&self, config: Config) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }
}
