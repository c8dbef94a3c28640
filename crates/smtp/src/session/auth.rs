//! SMTP AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms.
//! Offered and accepted only on submission listeners and only under TLS
//! (RFC 8314, spamops §3.1): a password must never cross the network in
//! clear. The session only decodes; the driver checks the password.

use super::{Action, Answer, Mode, Pending, Session};
use crate::reply::{Reply, Status, canned};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// RFC 4954 4: an AUTH line may be up to 12288 octets.
pub(super) const AUTH_LINE: usize = 12288;

/// A username and password to check. `Debug` does not show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// The SASL mechanism used (`PLAIN`, `LOGIN`), for milters' `{auth_type}`.
    pub mechanism: &'static str,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug)]
pub(super) enum AuthStage {
    PlainResponse,
    LoginUser,
    LoginPassword(String),
}

impl<X> Session<X> {
    pub(super) fn auth_offered(&self) -> bool {
        self.cfg.role.is_submission() && self.tls.is_some() && self.auth.is_none()
    }

    pub(super) fn auth(&mut self, mechanism: String, initial: Option<String>) {
        if !self.cfg.role.is_submission() {
            return self.fail(canned::bad_sequence("AUTH is not available on this port"));
        }
        if self.tls.is_none() {
            let r = Reply::new(
                538,
                Status(5, 7, 11),
                "Encryption required: use STARTTLS before AUTH",
            );
            return self.fail(r);
        }
        if self.auth.is_some() {
            return self.fail(canned::bad_sequence("Already authenticated"));
        }
        if self.helo.is_none() {
            return self.fail(canned::bad_sequence("Send EHLO first"));
        }
        if self.txn.is_some() {
            return self.fail(canned::bad_sequence(
                "AUTH not allowed during a mail transaction",
            ));
        }
        match (mechanism.as_str(), initial) {
            ("PLAIN", Some(resp)) => self.auth_line(AuthStage::PlainResponse, &resp),
            ("PLAIN", None) => self.challenge(AuthStage::PlainResponse, ""),
            ("LOGIN", Some(user)) => self.auth_line(AuthStage::LoginUser, &user),
            // base64("Username:")
            ("LOGIN", None) => self.challenge(AuthStage::LoginUser, "VXNlcm5hbWU6"),
            _ => self.fail(Reply::new(
                504,
                Status(5, 5, 4),
                "Unrecognized authentication type; use PLAIN or LOGIN",
            )),
        }
    }

    fn challenge(&mut self, stage: AuthStage, text: &str) {
        self.reply(Reply::bare(334, text));
        self.mode = Mode::Auth(stage);
    }

    /// One client line of the exchange (an initial response counts too).
    pub(super) fn auth_line(&mut self, stage: AuthStage, line: &str) {
        self.mode = Mode::Command;
        if line == "*" {
            return self.fail(Reply::new(501, Status(5, 0, 0), "Authentication cancelled"));
        }
        // RFC 4954 4: "=" is an empty initial response.
        let decoded = if line == "=" {
            Ok(Vec::new())
        } else {
            B64.decode(line.trim())
        };
        let Ok(bytes) = decoded else {
            return self.fail(Reply::new(
                501,
                Status(5, 5, 2),
                "Cannot decode the response as base64",
            ));
        };
        let Ok(text) = String::from_utf8(bytes) else {
            return self.fail(Reply::new(
                501,
                Status(5, 5, 2),
                "Credentials are not UTF-8",
            ));
        };
        match stage {
            AuthStage::PlainResponse => match plain(&text) {
                Some(c) => self.authenticate(c),
                None => self.fail(Reply::new(501, Status(5, 5, 2), "Malformed PLAIN response")),
            },
            // base64("Password:")
            AuthStage::LoginUser => self.challenge(AuthStage::LoginPassword(text), "UGFzc3dvcmQ6"),
            AuthStage::LoginPassword(username) => self.authenticate(Credentials {
                username,
                password: text,
                mechanism: "LOGIN",
            }),
        }
    }

    fn authenticate(&mut self, c: Credentials) {
        if c.username.is_empty() || c.username.len() > 256 {
            return self.fail(Reply::new(
                535,
                Status(5, 7, 8),
                "Authentication credentials invalid",
            ));
        }
        self.out.push_back(Action::Authenticate(c));
        self.pending = Some(Pending::Auth);
    }

    /// The driver's verdict on the credentials.
    /// The answer to `Action::Authenticate`: the identity authenticated
    /// as, or the refusal.
    pub fn answer_auth(&mut self, answer: Answer<String>) {
        if !matches!(self.pending, Some(Pending::Auth)) {
            return;
        }
        self.pending = None;
        match answer {
            Ok(identity) => {
                self.auth = Some(identity);
                self.reply(Reply::new(
                    235,
                    Status(2, 7, 0),
                    "Authentication successful",
                ));
            }
            Err(r) => self.fail(r),
        }
    }

    /// The authenticated identity, if any.
    pub fn authenticated(&self) -> Option<&str> {
        self.auth.as_deref()
    }
}

/// RFC 4616: `[authzid] NUL authcid NUL passwd`. An authorization
/// identity other than the login itself is not supported.
fn plain(text: &str) -> Option<Credentials> {
    let mut parts = text.split('\0');
    let (authz, user, pass) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || (!authz.is_empty() && authz != user) {
        return None;
    }
    Some(Credentials {
        username: user.to_owned(),
        password: pass.to_owned(),
        mechanism: "PLAIN",
    })
}
