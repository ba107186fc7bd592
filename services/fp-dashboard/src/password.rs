//! Password checks against the argon2id PHC strings in `users.password_hash`.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use ring::rand::{SecureRandom, SystemRandom};

#[derive(Debug, thiserror::Error)]
pub enum PasswordSetupError {
    #[error("the system random generator failed")]
    Random,
    #[error("could not hash the placeholder password: {0}")]
    Hash(argon2::password_hash::Error),
}

/// Checks passwords. When no user has the email it still runs one full argon2 verification (against
/// a hash of a random password), so the response time does not tell whether the email exists.
pub struct PasswordChecker {
    placeholder_hash: String,
}

impl PasswordChecker {
    pub fn new(rng: &SystemRandom) -> Result<Self, PasswordSetupError> {
        let mut salt = [0u8; 16];
        let mut password = [0u8; 32];
        rng.fill(&mut salt)
            .map_err(|_| PasswordSetupError::Random)?;
        rng.fill(&mut password)
            .map_err(|_| PasswordSetupError::Random)?;
        let salt = SaltString::encode_b64(&salt).map_err(PasswordSetupError::Hash)?;
        let placeholder_hash = Argon2::default()
            .hash_password(&password, &salt)
            .map_err(PasswordSetupError::Hash)?
            .to_string();
        Ok(PasswordChecker { placeholder_hash })
    }

    /// Whether `password` matches `stored_hash`; `None` means no such user (always false). Slow by
    /// design: call it off the async workers.
    pub fn matches(&self, stored_hash: Option<&str>, password: &str) -> bool {
        match stored_hash {
            Some(stored_hash) => verify(stored_hash, password),
            None => {
                // Only for the time it takes; the answer is "no" whatever it says.
                let _ = verify(&self.placeholder_hash, password);
                false
            }
        }
    }
}

fn verify(stored_hash: &str, password: &str) -> bool {
    match PasswordHash::new(stored_hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(error) => {
            // A row the api or fpctl wrote wrongly; the user cannot log in until it is reset.
            tracing::warn!(%error, "stored password hash is not a valid PHC string");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_password_matches() {
        let salt = SaltString::encode_b64(b"sixteen byte slt").expect("salt");
        let stored = Argon2::default()
            .hash_password(b"correct horse", &salt)
            .expect("hash")
            .to_string();
        assert!(stored.starts_with("$argon2id$"), "{stored}");

        let checker = PasswordChecker::new(&SystemRandom::new()).expect("checker");
        assert!(checker.matches(Some(&stored), "correct horse"));
        assert!(!checker.matches(Some(&stored), "correct horse "));
        assert!(!checker.matches(Some("not a phc string"), "correct horse"));
        assert!(!checker.matches(None, "correct horse"));
    }
}
