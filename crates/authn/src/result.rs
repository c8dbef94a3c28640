//! One authentication result in the words of RFC 8601 §2.7, and its
//! conversions to and from mail-auth's SPF types.

use mail_auth::{SpfOutput, SpfResult};

/// One result in the words of RFC 8601 §2.7.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthResult {
    Pass,
    Fail,
    SoftFail,
    Neutral,
    None,
    TempError,
    PermError,
}

impl AuthResult {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthResult::Pass => "pass",
            AuthResult::Fail => "fail",
            AuthResult::SoftFail => "softfail",
            AuthResult::Neutral => "neutral",
            AuthResult::None => "none",
            AuthResult::TempError => "temperror",
            AuthResult::PermError => "permerror",
        }
    }

    /// The inverse of [`AuthResult::as_str`]; a word it does not know is
    /// `none`.
    pub fn parse(word: &str) -> AuthResult {
        [
            AuthResult::Pass,
            AuthResult::Fail,
            AuthResult::SoftFail,
            AuthResult::Neutral,
            AuthResult::TempError,
            AuthResult::PermError,
        ]
        .into_iter()
        .find(|r| r.as_str() == word)
        .unwrap_or(AuthResult::None)
    }
}

impl From<SpfResult> for AuthResult {
    fn from(r: SpfResult) -> Self {
        match r {
            SpfResult::Pass => AuthResult::Pass,
            SpfResult::Fail => AuthResult::Fail,
            SpfResult::SoftFail => AuthResult::SoftFail,
            SpfResult::Neutral => AuthResult::Neutral,
            SpfResult::TempError => AuthResult::TempError,
            SpfResult::PermError => AuthResult::PermError,
            SpfResult::None => AuthResult::None,
        }
    }
}

/// Our result in mail-auth's words, for its Authentication-Results and
/// DMARC code.
impl AuthResult {
    /// An SPF output about `domain` with this result, as mail-auth's
    /// header writer takes it (tests and tools that make up results).
    pub fn spf_output(self, domain: &str) -> SpfOutput {
        SpfOutput::new(domain.to_owned()).with_result(spf_result(self))
    }
}

pub(crate) fn spf_result(r: AuthResult) -> SpfResult {
    match r {
        AuthResult::Pass => SpfResult::Pass,
        AuthResult::Fail => SpfResult::Fail,
        AuthResult::SoftFail => SpfResult::SoftFail,
        AuthResult::Neutral => SpfResult::Neutral,
        AuthResult::TempError => SpfResult::TempError,
        AuthResult::PermError => SpfResult::PermError,
        AuthResult::None => SpfResult::None,
    }
}
