//! Stateless sessions and CSRF tokens.
//!
//! The dashboard's database role can only read, so a session cannot be a row: it is a signed
//! cookie `<user_id>.<expiry unix secs>.<hex HMAC-SHA256 of "user_id.expiry">`. CSRF tokens are
//! HMACs too, bound to a value the browser holds in an HttpOnly cookie (the session cookie, or a
//! random nonce before log-in), so a page on another site can neither read nor forge one.

use actix_web::cookie::time::Duration as CookieDuration;
use actix_web::cookie::{Cookie, SameSite};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use uuid::Uuid;

pub const SESSION_COOKIE: &str = "fp_session";
/// Holds the nonce the log-in form's CSRF token is bound to.
pub const LOGIN_NONCE_COOKIE: &str = "fp_login_nonce";
pub const SESSION_LIFETIME_SECS: i64 = 12 * 60 * 60;
/// Long enough to type a password, short enough that a stale form page is soon useless.
const LOGIN_NONCE_LIFETIME_SECS: i64 = 60 * 60;
/// Shorter keys would weaken HMAC-SHA256 below its 256-bit strength.
const MIN_KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SessionKeyError {
    #[error("dashboard.session_key is not valid hex: {0}")]
    NotHex(#[from] hex::FromHexError),
    #[error("dashboard.session_key must be at least {MIN_KEY_BYTES} bytes of hex, got {0} bytes")]
    TooShort(usize),
    #[error("the system random generator failed")]
    Random,
}

/// Why a session cookie was refused. The caller treats every case as "not logged in".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("malformed session cookie")]
    Malformed,
    #[error("session cookie signature does not match")]
    BadSignature,
    #[error("session expired")]
    Expired,
}

/// What a CSRF token authorises; part of the signed message, so a token for one form is useless
/// for another.
#[derive(Debug, Clone, Copy)]
pub enum CsrfPurpose {
    LogIn,
    LogOut,
}

impl CsrfPurpose {
    fn label(self) -> &'static str {
        match self {
            CsrfPurpose::LogIn => "login",
            CsrfPurpose::LogOut => "logout",
        }
    }
}

/// Signs and checks session cookies and CSRF tokens.
pub struct SessionSigner {
    session_key: hmac::Key,
    /// Derived from the session key, so a CSRF token can never pass as a session signature.
    csrf_key: hmac::Key,
}

impl SessionSigner {
    /// Uses the configured hex key, or a random one when it is empty (sessions then end when the
    /// process restarts). Returns whether the key was generated, so the caller can warn.
    pub fn from_config(hex_key: &str, rng: &SystemRandom) -> Result<(Self, bool), SessionKeyError> {
        let hex_key = hex_key.trim();
        if hex_key.is_empty() {
            let mut key = [0u8; MIN_KEY_BYTES];
            rng.fill(&mut key).map_err(|_| SessionKeyError::Random)?;
            return Ok((Self::from_key_bytes(&key), true));
        }
        let key = hex::decode(hex_key)?;
        if key.len() < MIN_KEY_BYTES {
            return Err(SessionKeyError::TooShort(key.len()));
        }
        Ok((Self::from_key_bytes(&key), false))
    }

    pub fn from_key_bytes(key: &[u8]) -> Self {
        let session_key = hmac::Key::new(hmac::HMAC_SHA256, key);
        let csrf_key_bytes = hmac::sign(&session_key, b"fp-dashboard csrf key");
        let csrf_key = hmac::Key::new(hmac::HMAC_SHA256, csrf_key_bytes.as_ref());
        SessionSigner {
            session_key,
            csrf_key,
        }
    }

    /// The cookie value for `user_id`, valid until `expires_at` (unix seconds).
    pub fn sign_session(&self, user_id: Uuid, expires_at: i64) -> String {
        let message = format!("{user_id}.{expires_at}");
        let tag = hmac::sign(&self.session_key, message.as_bytes());
        format!("{message}.{}", hex::encode(tag.as_ref()))
    }

    /// The user a cookie value names, if its signature is ours and it has not expired at `now`.
    pub fn verify_session(&self, value: &str, now: i64) -> Result<Uuid, SessionError> {
        let (message, tag_hex) = value.rsplit_once('.').ok_or(SessionError::Malformed)?;
        let tag = hex::decode(tag_hex).map_err(|_| SessionError::Malformed)?;
        // Check the signature before parsing, so nothing unauthenticated is interpreted.
        hmac::verify(&self.session_key, message.as_bytes(), &tag)
            .map_err(|_| SessionError::BadSignature)?;
        let (user_id, expires_at) = message.split_once('.').ok_or(SessionError::Malformed)?;
        let user_id = Uuid::parse_str(user_id).map_err(|_| SessionError::Malformed)?;
        let expires_at: i64 = expires_at.parse().map_err(|_| SessionError::Malformed)?;
        if expires_at <= now {
            return Err(SessionError::Expired);
        }
        Ok(user_id)
    }

    /// A token for a form of `purpose`, bound to `binding` (a cookie value the browser holds).
    pub fn csrf_token(&self, purpose: CsrfPurpose, binding: &str) -> String {
        let tag = hmac::sign(&self.csrf_key, csrf_message(purpose, binding).as_bytes());
        hex::encode(tag.as_ref())
    }

    /// Compares in constant time.
    pub fn verify_csrf(&self, purpose: CsrfPurpose, binding: &str, token: &str) -> bool {
        let Ok(tag) = hex::decode(token) else {
            return false;
        };
        hmac::verify(
            &self.csrf_key,
            csrf_message(purpose, binding).as_bytes(),
            &tag,
        )
        .is_ok()
    }
}

fn csrf_message(purpose: CsrfPurpose, binding: &str) -> String {
    format!("{}.{binding}", purpose.label())
}

/// A fresh random nonce (hex) for the log-in form's CSRF binding.
pub fn new_login_nonce(rng: &SystemRandom) -> Result<String, SessionKeyError> {
    let mut nonce = [0u8; 32];
    rng.fill(&mut nonce).map_err(|_| SessionKeyError::Random)?;
    Ok(hex::encode(nonce))
}

/// HttpOnly so scripts cannot read it; SameSite=Strict so other sites cannot send it.
fn private_cookie(name: &'static str, value: String, lifetime_secs: i64) -> Cookie<'static> {
    Cookie::build(name, value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .max_age(CookieDuration::seconds(lifetime_secs))
        .finish()
}

pub fn session_cookie(value: String) -> Cookie<'static> {
    private_cookie(SESSION_COOKIE, value, SESSION_LIFETIME_SECS)
}

pub fn login_nonce_cookie(nonce: String) -> Cookie<'static> {
    private_cookie(LOGIN_NONCE_COOKIE, nonce, LOGIN_NONCE_LIFETIME_SECS)
}

/// A cookie that makes the browser forget `name` (same attributes, expired).
pub fn removal_cookie(name: &'static str) -> Cookie<'static> {
    let mut cookie = private_cookie(name, String::new(), 0);
    cookie.make_removal();
    cookie
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn signer() -> SessionSigner {
        SessionSigner::from_key_bytes(&[7u8; 32])
    }

    #[test]
    fn a_signed_session_verifies_until_it_expires() {
        let user_id = Uuid::now_v7();
        let value = signer().sign_session(user_id, NOW + 60);
        assert_eq!(signer().verify_session(&value, NOW), Ok(user_id));
        assert_eq!(
            signer().verify_session(&value, NOW + 60),
            Err(SessionError::Expired)
        );
    }

    #[test]
    fn the_cookie_has_the_documented_shape() {
        let user_id = Uuid::now_v7();
        let value = signer().sign_session(user_id, NOW);
        let parts: Vec<&str> = value.split('.').collect();
        assert_eq!(parts.len(), 3, "{value}");
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
        let value = signer().sign_session(Uuid::now_v7(), NOW + 60);
        let (message, tag) = value.rsplit_once('.').expect("three parts");

        // Someone else's user id, or a later expiry, with the original signature.
        let other_user = format!("{}{}", Uuid::now_v7(), &message[36..]);
        let later = format!("{}.{}", &message[..36], NOW + 1_000_000);
        for forged in [other_user, later] {
            assert_eq!(
                signer().verify_session(&format!("{forged}.{tag}"), NOW),
                Err(SessionError::BadSignature)
            );
        }

        let mut flipped = tag.to_owned().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).expect("hex stays ascii");
        assert_eq!(
            signer().verify_session(&format!("{message}.{flipped}"), NOW),
            Err(SessionError::BadSignature)
        );

        let other_key = SessionSigner::from_key_bytes(&[8u8; 32]);
        assert_eq!(
            other_key.verify_session(&value, NOW),
            Err(SessionError::BadSignature)
        );
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for value in ["", ".", "..", "abc", "a.b.c", "a.b.zz", "x.y.00"] {
            assert!(signer().verify_session(value, NOW).is_err(), "{value}");
        }
    }

    #[test]
    fn csrf_tokens_are_bound_to_purpose_and_binding() {
        let token = signer().csrf_token(CsrfPurpose::LogOut, "session-a");
        assert!(signer().verify_csrf(CsrfPurpose::LogOut, "session-a", &token));
        assert!(!signer().verify_csrf(CsrfPurpose::LogOut, "session-b", &token));
        assert!(!signer().verify_csrf(CsrfPurpose::LogIn, "session-a", &token));
        assert!(!signer().verify_csrf(CsrfPurpose::LogOut, "session-a", "not hex"));
        assert!(!signer().verify_csrf(CsrfPurpose::LogOut, "session-a", ""));
    }

    #[test]
    fn a_csrf_token_is_not_a_session_signature() {
        let user_id = Uuid::now_v7();
        let message = format!("{user_id}.{}", NOW + 60);
        let token = signer().csrf_token(CsrfPurpose::LogIn, &message);
        assert!(
            signer()
                .verify_session(&format!("{message}.{token}"), NOW)
                .is_err()
        );
    }

    #[test]
    fn configured_keys_must_be_long_hex() {
        let rng = SystemRandom::new();
        assert!(matches!(
            SessionSigner::from_config("zz", &rng),
            Err(SessionKeyError::NotHex(_))
        ));
        assert!(matches!(
            SessionSigner::from_config(&"ab".repeat(31), &rng),
            Err(SessionKeyError::TooShort(31))
        ));
        let (_, generated) =
            SessionSigner::from_config(&"ab".repeat(32), &rng).expect("32-byte key");
        assert!(!generated);
        let (_, generated) = SessionSigner::from_config("", &rng).expect("random key");
        assert!(generated);
    }

    #[test]
    fn session_cookies_are_http_only_strict_and_last_twelve_hours() {
        let cookie = session_cookie("v".into());
        assert_eq!(cookie.http_only(), Some(true));
        assert_eq!(cookie.same_site(), Some(SameSite::Strict));
        assert_eq!(cookie.path(), Some("/"));
        assert_eq!(cookie.max_age(), Some(CookieDuration::hours(12)));
    }
}
