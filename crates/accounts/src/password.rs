//! Password hashes: argon2id for everything we create, and verification of
//! the schemes Dovecot passwd-files carry so operators can migrate with the
//! passwords their users already have (OP25B draft: one password for
//! POP/IMAP and SMTP AUTH).

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand_core::OsRng;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    #[error("unsupported password scheme {0}")]
    UnsupportedScheme(String),
    #[error("malformed password hash")]
    Malformed,
    #[error("cannot hash password: {0}")]
    Hashing(String),
}

/// A new argon2id hash in PHC format (`$argon2id$v=19$...`).
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hashing(e.to_string()))
}

/// Whether `password` matches `stored`. `stored` is a PHC string or a
/// Dovecot `{SCHEME}hash`. The comparison inside each scheme's library is
/// constant-time.
pub fn verify_password(stored: &str, password: &str) -> Result<bool, PasswordError> {
    let (scheme, hash) = split_scheme(stored);
    match scheme.as_deref() {
        None | Some("ARGON2ID") | Some("ARGON2I") => {
            let parsed = PasswordHash::new(hash).map_err(|_| PasswordError::Malformed)?;
            Ok(Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok())
        }
        Some("BLF-CRYPT") => bcrypt::verify(password, hash).map_err(|_| PasswordError::Malformed),
        Some("SHA512-CRYPT") => Ok(sha_crypt::sha512_check(password, hash).is_ok()),
        Some("SHA256-CRYPT") => Ok(sha_crypt::sha256_check(password, hash).is_ok()),
        Some(other) => Err(PasswordError::UnsupportedScheme(other.to_owned())),
    }
}

/// Whether `stored` is a hash this module can verify.
pub(crate) fn is_supported(stored: &str) -> bool {
    let (scheme, hash) = split_scheme(stored);
    match scheme.as_deref() {
        None | Some("ARGON2ID") | Some("ARGON2I") => PasswordHash::new(hash).is_ok(),
        Some("BLF-CRYPT") => hash.starts_with("$2"),
        Some("SHA512-CRYPT") => hash.starts_with("$6$"),
        Some("SHA256-CRYPT") => hash.starts_with("$5$"),
        Some(_) => false,
    }
}

fn split_scheme(stored: &str) -> (Option<String>, &str) {
    match stored.strip_prefix('{').and_then(|r| r.split_once('}')) {
        Some((scheme, hash)) => (Some(scheme.to_ascii_uppercase()), hash),
        None => (None, stored),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_round_trip() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "s3cret").unwrap());
        assert!(!verify_password(&h, "wrong").unwrap());
        assert!(verify_password(&format!("{{ARGON2ID}}{h}"), "s3cret").unwrap());
    }

    #[test]
    fn dovecot_crypt_schemes_verify() {
        let sha512 =
            sha_crypt::sha512_simple("pw", &sha_crypt::Sha512Params::new(5000).unwrap()).unwrap();
        let sha256 =
            sha_crypt::sha256_simple("pw", &sha_crypt::Sha256Params::new(5000).unwrap()).unwrap();
        let blf = bcrypt::hash("pw", 4).unwrap();
        for stored in [
            format!("{{SHA512-CRYPT}}{sha512}"),
            format!("{{SHA256-CRYPT}}{sha256}"),
            format!("{{BLF-CRYPT}}{blf}"),
        ] {
            assert!(verify_password(&stored, "pw").unwrap(), "{stored}");
            assert!(!verify_password(&stored, "nope").unwrap(), "{stored}");
            assert!(is_supported(&stored));
        }
    }

    #[test]
    fn known_dovecot_sha512_crypt_vector() {
        // glibc crypt(3) of "test" with salt "saltsalt", as Dovecot stores it.
        let stored = "{SHA512-CRYPT}$6$saltsalt$JcVDtuB6d1BHhCd5RPBh8g8xX/1CbY8EU2PN0MTaj2/Mypw4P./C6dN4j0HALhzBDTocyW1Jm.gYaTPjFGCV40";
        assert!(verify_password(stored, "test").unwrap());
    }

    #[test]
    fn unknown_scheme_is_an_error() {
        assert_eq!(
            verify_password("{PLAIN}secret", "secret"),
            Err(PasswordError::UnsupportedScheme("PLAIN".into()))
        );
    }
}
