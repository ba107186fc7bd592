//! Session cookies, CSRF tokens, and what https means for the answers.
//!
//! A session is a row of the api (`user_sessions`): the cookie holds its random token, which the
//! dashboard checks with the api on every page and sends as `Authorization: Session <token>`.
//! CSRF tokens are HMACs under a key derived from `dashboard.session_key`, bound to a value the
//! browser holds in an HttpOnly cookie (the session cookie, or a random nonce before log-in), so
//! a page on another site can neither read nor forge one.

use actix_web::body::MessageBody;
use actix_web::cookie::time::Duration as CookieDuration;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

pub const SESSION_COOKIE: &str = "fp_session";
/// Holds the nonce the log-in form's CSRF token is bound to.
pub const LOGIN_NONCE_COOKIE: &str = "fp_login_nonce";
/// Long enough to type a password, short enough that a stale form page is soon useless.
const LOGIN_NONCE_LIFETIME_SECS: i64 = 60 * 60;
/// Shorter keys would weaken HMAC-SHA256 below its 256-bit strength.
const MIN_KEY_BYTES: usize = 32;
/// Two years, as browsers' preload lists ask; the dashboard's own host only.
const STRICT_TRANSPORT_SECURITY: &str = "max-age=63072000";

/// The system random generator failed (the log-in nonce could not be drawn).
#[derive(Debug, thiserror::Error)]
#[error("the system random generator failed")]
pub struct RandomFailed;

#[derive(Debug, thiserror::Error)]
pub enum CsrfKeyError {
    #[error("dashboard.session_key is not valid hex: {0}")]
    NotHex(#[from] hex::FromHexError),
    #[error("dashboard.session_key must be at least {MIN_KEY_BYTES} bytes of hex, got {0} bytes")]
    TooShort(usize),
}

/// What a CSRF token authorises; part of the signed message, so a token for one form is useless
/// for another.
#[derive(Debug, Clone, Copy)]
pub enum CsrfPurpose {
    LogIn,
    LogOut,
    SaveIntegration,
    SendTestEvent,
    Redeliver,
    EndSession,
    ChangePassword,
    SetTimeZone,
    SetPayloadRetention,
}

impl CsrfPurpose {
    fn label(self) -> &'static str {
        match self {
            CsrfPurpose::LogIn => "login",
            CsrfPurpose::LogOut => "logout",
            CsrfPurpose::SaveIntegration => "save-integration",
            CsrfPurpose::SendTestEvent => "send-test-event",
            CsrfPurpose::Redeliver => "redeliver",
            CsrfPurpose::EndSession => "end-session",
            CsrfPurpose::ChangePassword => "change-password",
            CsrfPurpose::SetTimeZone => "set-time-zone",
            CsrfPurpose::SetPayloadRetention => "set-payload-retention",
        }
    }
}

/// Signs and checks CSRF tokens.
pub struct CsrfSigner {
    key: hmac::Key,
}

impl CsrfSigner {
    /// The signer of `dashboard.session_key` (hex, at least 32 bytes).
    pub fn from_hex(hex_key: &str) -> Result<Self, CsrfKeyError> {
        let key = hex::decode(hex_key.trim())?;
        if key.len() < MIN_KEY_BYTES {
            return Err(CsrfKeyError::TooShort(key.len()));
        }
        Ok(Self::from_bytes(&key))
    }

    /// Derived from the configured key, so the configured key itself never signs anything a
    /// browser sees.
    pub fn from_bytes(configured: &[u8]) -> Self {
        let derived = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, configured),
            b"fp-dashboard csrf key",
        );
        CsrfSigner {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        }
    }

    /// A token for a form of `purpose`, bound to `binding` (a cookie value the browser holds).
    pub fn csrf_token(&self, purpose: CsrfPurpose, binding: &str) -> String {
        let tag = hmac::sign(&self.key, csrf_message(purpose, binding).as_bytes());
        hex::encode(tag.as_ref())
    }

    /// Compares in constant time.
    pub fn verify_csrf(&self, purpose: CsrfPurpose, binding: &str, token: &str) -> bool {
        let Ok(tag) = hex::decode(token) else {
            return false;
        };
        hmac::verify(&self.key, csrf_message(purpose, binding).as_bytes(), &tag).is_ok()
    }
}

fn csrf_message(purpose: CsrfPurpose, binding: &str) -> String {
    format!("{}.{binding}", purpose.label())
}

/// A fresh random nonce (hex) for the log-in form's CSRF binding.
pub fn new_login_nonce(rng: &SystemRandom) -> Result<String, RandomFailed> {
    let mut nonce = [0u8; 32];
    rng.fill(&mut nonce).map_err(|_| RandomFailed)?;
    Ok(hex::encode(nonce))
}

/// Whether browsers reach the dashboard over https: `dashboard.public_url` says so, never the
/// request (a scheme or `X-Forwarded-Proto` anyone between can set or drop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedOverHttps(pub bool);

/// When the dashboard is served over https: every cookie of every answer is `Secure` (never sent
/// back over plain http) and every answer carries `Strict-Transport-Security` (the browser never
/// tries plain http again). Over http (local development) neither.
pub async fn https_only_when_configured(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let https = request
        .app_data::<web::Data<ServedOverHttps>>()
        .is_some_and(|https| https.0);
    let mut response = next.call(request).await?;
    if https {
        let cookies: Vec<Cookie<'static>> = response
            .response()
            .cookies()
            .map(|cookie| {
                let mut cookie = cookie.into_owned();
                cookie.set_secure(true);
                cookie
            })
            .collect();
        for cookie in cookies {
            response.response_mut().del_cookie(cookie.name());
            response.response_mut().add_cookie(&cookie)?;
        }
        response.headers_mut().insert(
            HeaderName::from_static("strict-transport-security"),
            HeaderValue::from_static(STRICT_TRANSPORT_SECURITY),
        );
    }
    Ok(response)
}

/// HttpOnly so scripts cannot read it; SameSite=Strict so other sites cannot send it.
fn private_cookie(name: &'static str, value: String) -> Cookie<'static> {
    Cookie::build(name, value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .finish()
}

/// The session's token. No `Max-Age`: the api ends the session (idle and absolute timeouts,
/// log-out), and the browser drops the cookie when it closes.
pub fn session_cookie(token: String) -> Cookie<'static> {
    private_cookie(SESSION_COOKIE, token)
}

pub fn login_nonce_cookie(nonce: String) -> Cookie<'static> {
    let mut cookie = private_cookie(LOGIN_NONCE_COOKIE, nonce);
    cookie.set_max_age(CookieDuration::seconds(LOGIN_NONCE_LIFETIME_SECS));
    cookie
}

/// A cookie that makes the browser forget `name` (same attributes, expired).
pub fn removal_cookie(name: &'static str) -> Cookie<'static> {
    let mut cookie = private_cookie(name, String::new());
    cookie.make_removal();
    cookie
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> CsrfSigner {
        CsrfSigner::from_bytes(&[7u8; 32])
    }

    #[test]
    fn csrf_tokens_are_bound_to_purpose_and_binding() {
        let token = signer().csrf_token(CsrfPurpose::LogOut, "session-a");
        assert!(signer().verify_csrf(CsrfPurpose::LogOut, "session-a", &token));
        assert!(!signer().verify_csrf(CsrfPurpose::LogOut, "session-b", &token));
        assert!(!signer().verify_csrf(CsrfPurpose::LogIn, "session-a", &token));
        assert!(!signer().verify_csrf(CsrfPurpose::LogOut, "session-a", "not hex"));
        assert!(!signer().verify_csrf(CsrfPurpose::LogOut, "session-a", ""));
        assert!(!CsrfSigner::from_bytes(&[8u8; 32]).verify_csrf(
            CsrfPurpose::LogOut,
            "session-a",
            &token
        ));
    }

    #[test]
    fn the_configured_key_must_be_long_hex() {
        assert!(matches!(
            CsrfSigner::from_hex("zz"),
            Err(CsrfKeyError::NotHex(_))
        ));
        assert!(matches!(
            CsrfSigner::from_hex(&"ab".repeat(31)),
            Err(CsrfKeyError::TooShort(31))
        ));
        assert!(CsrfSigner::from_hex(&"ab".repeat(32)).is_ok());
    }

    #[test]
    fn session_cookies_are_http_only_strict_and_end_with_the_browser() {
        let cookie = session_cookie("v".into());
        assert_eq!(cookie.http_only(), Some(true));
        assert_eq!(cookie.same_site(), Some(SameSite::Strict));
        assert_eq!(cookie.path(), Some("/"));
        assert_eq!(cookie.max_age(), None);
    }
}
