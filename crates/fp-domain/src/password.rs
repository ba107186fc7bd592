//! Dashboard users' passwords, stored as argon2id PHC strings in `users.password_hash`. The caller
//! draws the salt; hashing and checking are slow by design, so callers run them off async workers.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

pub const MIN_CHARS: usize = 10;
/// Longer input only costs hashing time; no passphrase needs more.
pub const MAX_CHARS: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("the password must be at least {MIN_CHARS} characters")]
    TooShort,
    #[error("the password must be at most {MAX_CHARS} characters")]
    TooLong,
    #[error("could not hash the password: {0}")]
    Hash(String),
    /// A row written wrongly; its user cannot log in until the password is reset.
    #[error("the stored password hash is not a valid PHC string: {0}")]
    StoredHashInvalid(String),
}

/// Whether `password` may be set as a new password.
pub fn check_new(password: &str) -> Result<(), PasswordError> {
    let chars = password.chars().count();
    if chars < MIN_CHARS {
        return Err(PasswordError::TooShort);
    }
    if chars > MAX_CHARS {
        return Err(PasswordError::TooLong);
    }
    Ok(())
}

/// The PHC string of `password` with a salt of 16 random bytes the caller drew.
pub fn hash(password: &str, salt: [u8; 16]) -> Result<String, PasswordError> {
    let salt =
        SaltString::encode_b64(&salt).map_err(|error| PasswordError::Hash(error.to_string()))?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|error| PasswordError::Hash(error.to_string()))?
        .to_string())
}

/// Whether `password` matches the PHC string `stored_hash`.
pub fn matches(stored_hash: &str, password: &str) -> Result<bool, PasswordError> {
    let parsed = PasswordHash::new(stored_hash)
        .map_err(|error| PasswordError::StoredHashInvalid(error.to_string()))?;
    Ok(Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_password_matches_its_argon2id_hash() {
        let stored = hash("correct horse", *b"sixteen byte slt").expect("hash");
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert_eq!(matches(&stored, "correct horse"), Ok(true));
        assert_eq!(matches(&stored, "correct horse "), Ok(false));
        assert!(matches!(
            matches("not a phc string", "correct horse"),
            Err(PasswordError::StoredHashInvalid(_))
        ));
    }

    #[test]
    fn new_passwords_have_a_length_range() {
        assert_eq!(check_new("123456789"), Err(PasswordError::TooShort));
        assert_eq!(check_new("1234567890"), Ok(()));
        assert_eq!(
            check_new(&"x".repeat(MAX_CHARS + 1)),
            Err(PasswordError::TooLong)
        );
    }
}
