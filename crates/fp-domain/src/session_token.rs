//! Dashboard sessions: `<user_id>.<expiry unix secs>.<hex HMAC-SHA256 of "user_id.expiry">`.
//!
//! The dashboard sets one as an HttpOnly cookie when a user logs in; the api accepts the same token
//! (`Authorization: Session <token>`) for the writes the dashboard makes on that user's behalf, so
//! the dashboard holds no credential of its own that could act for every tenant. Both verify with
//! the shared `dashboard.session_key`.

use ring::hmac;
use uuid::Uuid;

/// Shorter keys would weaken HMAC-SHA256 below its 256-bit strength.
pub const MIN_KEY_BYTES: usize = 32;

/// Why a session token was refused. Callers treat every case as "not signed in".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("malformed session token")]
    Malformed,
    #[error("session token signature does not match")]
    BadSignature,
    #[error("session expired")]
    Expired,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionKeyError {
    #[error("dashboard.session_key is not valid hex: {0}")]
    NotHex(#[from] hex::FromHexError),
    #[error("dashboard.session_key must be at least {MIN_KEY_BYTES} bytes of hex, got {0} bytes")]
    TooShort(usize),
}

/// Signs and checks session tokens.
#[derive(Clone)]
pub struct SessionKey {
    key: hmac::Key,
}

impl SessionKey {
    pub fn from_hex(hex_key: &str) -> Result<Self, SessionKeyError> {
        let key = hex::decode(hex_key.trim())?;
        if key.len() < MIN_KEY_BYTES {
            return Err(SessionKeyError::TooShort(key.len()));
        }
        Ok(Self::from_bytes(&key))
    }

    pub fn from_bytes(key: &[u8]) -> Self {
        SessionKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// An HMAC of `label` under this key: material for keys derived from it (so, for example, a
    /// CSRF token can never pass as a session signature).
    pub fn derive(&self, label: &[u8]) -> hmac::Tag {
        hmac::sign(&self.key, label)
    }

    /// The token for `user_id`, valid until `expires_at` (unix seconds).
    pub fn sign(&self, user_id: Uuid, expires_at: i64) -> String {
        let message = format!("{user_id}.{expires_at}");
        let tag = hmac::sign(&self.key, message.as_bytes());
        format!("{message}.{}", hex::encode(tag.as_ref()))
    }

    /// The user a token names, if its signature is ours and it has not expired at `now`.
    pub fn verify(&self, token: &str, now: i64) -> Result<Uuid, SessionError> {
        let (message, tag_hex) = token.rsplit_once('.').ok_or(SessionError::Malformed)?;
        let tag = hex::decode(tag_hex).map_err(|_| SessionError::Malformed)?;
        // Check the signature before parsing, so nothing unauthenticated is interpreted.
        hmac::verify(&self.key, message.as_bytes(), &tag)
            .map_err(|_| SessionError::BadSignature)?;
        let (user_id, expires_at) = message.split_once('.').ok_or(SessionError::Malformed)?;
        let user_id = Uuid::parse_str(user_id).map_err(|_| SessionError::Malformed)?;
        let expires_at: i64 = expires_at.parse().map_err(|_| SessionError::Malformed)?;
        if expires_at <= now {
            return Err(SessionError::Expired);
        }
        Ok(user_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn key() -> SessionKey {
        SessionKey::from_bytes(&[7u8; 32])
    }

    #[test]
    fn a_signed_session_verifies_until_it_expires() {
        let user_id = Uuid::now_v7();
        let token = key().sign(user_id, NOW + 60);
        assert_eq!(key().verify(&token, NOW), Ok(user_id));
        assert_eq!(key().verify(&token, NOW + 60), Err(SessionError::Expired));
    }

    #[test]
    fn the_token_has_the_documented_shape() {
        let user_id = Uuid::now_v7();
        let token = key().sign(user_id, NOW);
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "{token}");
        assert_eq!(parts[0], user_id.to_string());
        assert_eq!(parts[1], NOW.to_string());
        let expected = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &[7u8; 32]),
            format!("{user_id}.{NOW}").as_bytes(),
        );
        assert_eq!(parts[2], hex::encode(expected.as_ref()));
    }

    #[test]
    fn a_tampered_session_is_refused() {
        let token = key().sign(Uuid::now_v7(), NOW + 60);
        let (message, tag) = token.rsplit_once('.').expect("three parts");

        // Someone else's user id, or a later expiry, with the original signature.
        let other_user = format!("{}{}", Uuid::now_v7(), &message[36..]);
        let later = format!("{}.{}", &message[..36], NOW + 1_000_000);
        for forged in [other_user, later] {
            assert_eq!(
                key().verify(&format!("{forged}.{tag}"), NOW),
                Err(SessionError::BadSignature)
            );
        }

        let mut flipped = tag.to_owned().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).expect("hex stays ascii");
        assert_eq!(
            key().verify(&format!("{message}.{flipped}"), NOW),
            Err(SessionError::BadSignature)
        );

        let other_key = SessionKey::from_bytes(&[8u8; 32]);
        assert_eq!(
            other_key.verify(&token, NOW),
            Err(SessionError::BadSignature)
        );
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for token in ["", ".", "..", "abc", "a.b.c", "a.b.zz", "x.y.00"] {
            assert!(key().verify(token, NOW).is_err(), "{token}");
        }
    }

    #[test]
    fn configured_keys_must_be_long_hex() {
        assert!(matches!(
            SessionKey::from_hex("zz"),
            Err(SessionKeyError::NotHex(_))
        ));
        assert!(matches!(
            SessionKey::from_hex(&"ab".repeat(31)),
            Err(SessionKeyError::TooShort(31))
        ));
        assert!(SessionKey::from_hex(&"ab".repeat(32)).is_ok());
    }
}
