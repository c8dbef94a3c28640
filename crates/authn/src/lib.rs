//! Message authentication around the `mail-auth` crate: DKIM keys and
//! signing for submitted mail (RFC 6376, RFC 8463), and (for inbound mail)
//! SPF, DKIM, DMARC verification and the Authentication-Results header.
//!
//! This crate decides nothing about accepting mail; it computes results.
//! Private keys are read from the data dir and never logged.

pub mod dmarc;
mod inbound;
mod keys;
mod lists;
mod offline;
mod psl;
mod result;
mod rotation;
mod rotation_task;
mod sending;
pub mod spf;

pub use dmarc::{DmarcEvaluation, DmarcRecord, Mechanism, parse_record as parse_dmarc_record};
pub use lists::{DomainRating, Listing, RatingAnswer, dnsbl_query, parse_rating};
/// An SPF result as mail-auth's Authentication-Results writer takes it.
pub use mail_auth::SpfOutput;
pub use offline::TxtRecords;
pub use psl::{SuffixList, SuffixListError};
pub use sending::SourceCheck;

pub use inbound::{
    AuthResult, DmarcPolicy, MessageResults, ResolverError, SpfCheck, Verifier,
    strip_forged_results,
};

pub use keys::{
    DkimAlgorithm, DkimKeys, KeyError, generate_key, key_dir_fingerprint, published_records,
};
pub use rotation::{
    activate, pending_public_key, pending_selectors, record_carries_key, retire, rotate_if_due,
    rotate_key,
};
pub use rotation_task::{RotationSettings, run_rotation};
