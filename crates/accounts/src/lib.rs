//! Accounts of the submission service: who may authenticate, with which
//! password, which addresses each may send as, and how much. Plus the two
//! pieces of per-account policy that need no network: brute-force
//! throttling of authentication and the recipient quota.
//!
//! Everything here is plain logic over values (time is passed in), except
//! [`AccountStore`], which reads and atomically rewrites one JSON file.
//! This crate must not log passwords or hashes, and never compares secrets
//! with early-exit equality.

mod password;
mod quota;
mod store;
mod throttle;

pub use password::{PasswordError, hash_password, verify_password};
pub use quota::{QuotaExceeded, QuotaLimits, RecipientQuota, Window, window_start};
pub use store::{Account, AccountStore, ImportReport, StoreError};
pub use throttle::{
    AuthGate, AuthThrottle, ThrottleConfig, decide as decide_auth_gate, key as throttle_key,
};
