//! Password checks for log-ins and password changes (`fp_domain::password` does the hashing).

use fp_domain::password::{self, PasswordError};
use ring::rand::{SecureRandom, SystemRandom};

#[derive(Debug, thiserror::Error)]
pub enum PasswordSetupError {
    #[error("the system random generator failed")]
    Random,
    #[error(transparent)]
    Hash(#[from] PasswordError),
}

/// Checks passwords. When no user has the email it still runs one full argon2 verification (against
/// a hash of a random password), so the response time does not tell whether the email exists.
pub struct PasswordChecker {
    placeholder_hash: String,
}

impl PasswordChecker {
    pub fn new(rng: &SystemRandom) -> Result<Self, PasswordSetupError> {
        let mut salt = [0u8; 16];
        let mut random_password = [0u8; 32];
        rng.fill(&mut salt)
            .map_err(|_| PasswordSetupError::Random)?;
        rng.fill(&mut random_password)
            .map_err(|_| PasswordSetupError::Random)?;
        let random_password: String = random_password
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let placeholder_hash = password::hash(&random_password, salt)?;
        Ok(PasswordChecker { placeholder_hash })
    }

    /// Whether `password` matches `stored_hash`; `None` means no such user (always false). Slow by
    /// design: call it off the async workers.
    pub fn matches(&self, stored_hash: Option<&str>, password: &str) -> bool {
        let (hash, known_user) = match stored_hash {
            Some(stored_hash) => (stored_hash, true),
            // Only for the time it takes; the answer is "no" whatever it says.
            None => (self.placeholder_hash.as_str(), false),
        };
        match password::matches(hash, password) {
            Ok(matched) => matched && known_user,
            Err(error) => {
                tracing::warn!(%error, "log-in refused");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_user_never_matches() {
        let checker = PasswordChecker::new(&SystemRandom::new()).expect("checker");
        let stored = password::hash("correct horse", [1; 16]).expect("hash");
        assert!(checker.matches(Some(&stored), "correct horse"));
        assert!(!checker.matches(Some(&stored), "wrong horse"));
        assert!(!checker.matches(Some("not a phc string"), "correct horse"));
        assert!(!checker.matches(None, "correct horse"));
    }
}
