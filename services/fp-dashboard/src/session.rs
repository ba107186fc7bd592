//! Stateless sessions and CSRF tokens.
//!
//! The dashboard's database role can only read, so a session cannot be a row: it is a signed
//! cookie, a token of `fp_domain::session_token` that the api accepts too. CSRF tokens are
//! HMACs too, bound to a value the browser holds in an HttpOnly cookie (the session cookie, or a
//! random nonce before log-in), so a page on another site can neither read nor forge one.

use actix_web::body::MessageBody;
use actix_web::cookie::time::Duration as CookieDuration;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use fp_domain::session_token::{SessionError, SessionKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use uuid::Uuid;

pub const SESSION_COOKIE: &str = "fp_session";
/// Holds the nonce the log-in form's CSRF token is bound to.
pub const LOGIN_NONCE_COOKIE: &str = "fp_login_nonce";
pub const SESSION_LIFETIME_SECS: i64 = 12 * 60 * 60;
/// Long enough to type a password, short enough that a stale form page is soon useless.
const LOGIN_NONCE_LIFETIME_SECS: i64 = 60 * 60;

/// The system random generator failed (the log-in nonce could not be drawn).
#[derive(Debug, thiserror::Error)]
#[error("the system random generator failed")]
pub struct RandomFailed;

/// What a CSRF token authorises; part of the signed message, so a token for one form is useless
/// for another.
#[derive(Debug, Clone, Copy)]
pub enum CsrfPurpose {
    LogIn,
    LogOut,
    SaveIntegration,
    SendTestEvent,
    Redeliver,
}

impl CsrfPurpose {
    fn label(self) -> &'static str {
        match self {
            CsrfPurpose::LogIn => "login",
            CsrfPurpose::LogOut => "logout",
            CsrfPurpose::SaveIntegration => "save-integration",
            CsrfPurpose::SendTestEvent => "send-test-event",
            CsrfPurpose::Redeliver => "redeliver",
        }
    }
}

/// Signs and checks session cookies and CSRF tokens.
pub struct SessionSigner {
    session_key: SessionKey,
    /// Derived from the session key, so a CSRF token can never pass as a session signature.
    csrf_key: hmac::Key,
}

impl SessionSigner {
    pub fn new(session_key: SessionKey) -> Self {
        let csrf_key_bytes = session_key.derive(b"fp-dashboard csrf key");
        let csrf_key = hmac::Key::new(hmac::HMAC_SHA256, csrf_key_bytes.as_ref());
        SessionSigner {
            session_key,
            csrf_key,
        }
    }

    /// The cookie value for `user_id`, valid until `expires_at` (unix seconds); the api accepts
    /// the same value as `Authorization: Session <value>`.
    pub fn sign_session(&self, user_id: Uuid, expires_at: i64) -> String {
        self.session_key.sign(user_id, expires_at)
    }

    /// The user a cookie value names, if its signature is ours and it has not expired at `now`.
    pub fn verify_session(&self, value: &str, now: i64) -> Result<Uuid, SessionError> {
        self.session_key.verify(value, now)
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
pub fn new_login_nonce(rng: &SystemRandom) -> Result<String, RandomFailed> {
    let mut nonce = [0u8; 32];
    rng.fill(&mut nonce).map_err(|_| RandomFailed)?;
    Ok(hex::encode(nonce))
}

/// Marks every cookie of the answer `Secure` when the request came over https (directly, or through
/// a proxy that says so with `X-Forwarded-Proto`/`Forwarded`), so a cookie set over https is never
/// sent back over plain http. Plain http (local development) keeps them usable.
pub async fn secure_cookies_over_https(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let https = request.connection_info().scheme() == "https";
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
    }
    Ok(response)
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
        SessionSigner::new(SessionKey::from_bytes(&[7u8; 32]))
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
    fn session_cookies_are_http_only_strict_and_last_twelve_hours() {
        let cookie = session_cookie("v".into());
        assert_eq!(cookie.http_only(), Some(true));
        assert_eq!(cookie.same_site(), Some(SameSite::Strict));
        assert_eq!(cookie.path(), Some("/"));
        assert_eq!(cookie.max_age(), Some(CookieDuration::hours(12)));
    }
}
