//! Log-in, log-out, the language switch, and the routes every site has (home, health, styles).

use actix_web::http::StatusCode;
use actix_web::http::header::{self, CacheControl, CacheDirective};
use actix_web::{HttpRequest, HttpResponse, web};
use fp_domain::client_address::{FORWARDED_FOR, client_address};
use reqwest::Method;
use serde::Deserialize;

use super::{LOGIN_PATH, SignedInUser, html_response, see_other, session_cookie_of};
use crate::AppState;
use crate::api_client::Browser;
use crate::error::PageError;
use crate::i18n::{Lang, lang_cookie};
use crate::session::{
    CsrfPurpose, LOGIN_NONCE_COOKIE, SESSION_COOKIE, login_nonce_cookie, new_login_nonce,
    removal_cookie, session_cookie,
};
use crate::views::{LoginPage, STYLESHEET};

/// Where a signed-in user lands: the tenant's log, or the platform's for a superadmin.
const HOME_PATH: &str = "/webhooks/logs";
const ADMIN_HOME_PATH: &str = "/admin/webhook-logs";
/// The same words whichever of email or password was wrong, so the form does not reveal which
/// emails have accounts.
const INVALID_CREDENTIALS: &str = "common.login.invalid_credentials";
const LOGIN_FORM_EXPIRED: &str = "common.login.form_expired";
const THROTTLED: &str = "common.login.throttled";

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/", web::get().to(home))
        .route("/static/app.css", web::get().to(stylesheet))
        .route(LOGIN_PATH, web::get().to(login_form))
        .route(LOGIN_PATH, web::post().to(log_in))
        .route("/logout", web::post().to(log_out))
        .route("/lang/{code}", web::get().to(switch_language));
}

/// A superadmin's home is the platform's log; everyone else's is their tenant's.
async fn home(user: Option<SignedInUser>) -> HttpResponse {
    match user {
        Some(user) if user.user.tenant_id.is_none() => see_other(ADMIN_HOME_PATH).finish(),
        _ => see_other(HOME_PATH).finish(),
    }
}

async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(CacheControl(vec![CacheDirective::MaxAge(3600)]))
        .body(STYLESHEET)
}

pub async fn not_found() -> Result<HttpResponse, PageError> {
    Err(PageError::NotFound)
}

async fn login_form(
    state: web::Data<AppState>,
    request: HttpRequest,
    user: Option<SignedInUser>,
) -> Result<HttpResponse, PageError> {
    if user.is_some() {
        return Ok(see_other("/").finish());
    }
    let nonce = new_login_nonce(&state.rng)?;
    let html = render_login(&state, &request, &nonce, "", None)?;
    Ok(html_response(StatusCode::OK)
        .cookie(login_nonce_cookie(nonce))
        .body(html))
}

#[derive(Deserialize)]
struct LoginForm {
    email: String,
    password: String,
    /// Defaulted so a missing token is answered like a wrong one, with a fresh form.
    #[serde(default)]
    csrf_token: String,
}

async fn log_in(
    state: web::Data<AppState>,
    request: HttpRequest,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, PageError> {
    let LoginForm {
        email,
        password,
        csrf_token,
    } = form.into_inner();
    let email = email.trim().to_owned();

    let nonce = request
        .cookie(LOGIN_NONCE_COOKIE)
        .map(|cookie| cookie.value().to_owned())
        .filter(|nonce| {
            state
                .signer
                .verify_csrf(CsrfPurpose::LogIn, nonce, &csrf_token)
        });
    let Some(nonce) = nonce else {
        let fresh_nonce = new_login_nonce(&state.rng)?;
        let message = state.text(&request, LOGIN_FORM_EXPIRED);
        let html = render_login(&state, &request, &fresh_nonce, &email, Some(message))?;
        return Ok(html_response(StatusCode::FORBIDDEN)
            .cookie(login_nonce_cookie(fresh_nonce))
            .body(html));
    };

    // The api checks the password and throttles by the browser's address: the peer's, or what a
    // trusted proxy in front of us forwards; never a header any client could set to a fresh value.
    let user_agent = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let browser = Browser {
        address: client_address(
            request.peer_addr().map(|address| address.ip()),
            request
                .headers()
                .get(FORWARDED_FOR)
                .and_then(|value| value.to_str().ok()),
            &state.trusted_proxies,
        ),
        user_agent,
    };
    let answer = state.api.log_in(&email, &password, &browser).await?;
    match answer.status {
        201 => {
            let token = answer.body["token"]
                .as_str()
                .ok_or_else(|| PageError::ApiRefused {
                    status: answer.status,
                    message: "the log-in answer has no token".to_owned(),
                })?;
            tracing::info!(user_id = %answer.body["user"]["id"], "user logged in");
            Ok(see_other("/")
                .cookie(session_cookie(token.to_owned()))
                .cookie(removal_cookie(LOGIN_NONCE_COOKIE))
                .finish())
        }
        401 => {
            metrics::counter!("fp_dashboard_failed_logins_total", "reason" => "credentials")
                .increment(1);
            tracing::info!("log-in refused: invalid email or password");
            let message = state.text(&request, INVALID_CREDENTIALS);
            let html = render_login(&state, &request, &nonce, &email, Some(message))?;
            Ok(html_response(StatusCode::UNAUTHORIZED).body(html))
        }
        429 => {
            metrics::counter!("fp_dashboard_failed_logins_total", "reason" => "throttled")
                .increment(1);
            tracing::warn!(
                retry_after_secs = answer.retry_after.as_deref().unwrap_or_default(),
                "log-in refused: too many failed attempts"
            );
            let message = state.text(&request, THROTTLED);
            let html = render_login(&state, &request, &nonce, &email, Some(message))?;
            Ok(html_response(StatusCode::TOO_MANY_REQUESTS)
                .insert_header((
                    header::RETRY_AFTER,
                    answer.retry_after.unwrap_or_else(|| "1".to_owned()),
                ))
                .body(html))
        }
        _ => Err(PageError::refused_by_api(&answer)),
    }
}

#[derive(Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf_token: String,
}

/// Ends the session at the api, so a copy of the cookie taken earlier stops working too, and makes
/// the browser forget its cookie.
async fn log_out(
    state: web::Data<AppState>,
    request: HttpRequest,
    form: web::Form<LogoutForm>,
) -> Result<HttpResponse, PageError> {
    // Without a session cookie there is nothing to protect or end: just clear whatever is left.
    let Some(session) = session_cookie_of(&request) else {
        return Ok(signed_out_redirect());
    };
    if !state
        .signer
        .verify_csrf(CsrfPurpose::LogOut, &session, &form.csrf_token)
    {
        return Err(PageError::StaleForm);
    }
    let answer = state
        .api
        .call(&session, Method::DELETE, "/api/v2/sessions/current", None)
        .await?;
    // 401: the session had ended already.
    if !answer.is_success() && answer.status != 401 {
        return Err(PageError::refused_by_api(&answer));
    }
    Ok(signed_out_redirect())
}

fn render_login(
    state: &AppState,
    request: &HttpRequest,
    nonce: &str,
    email: &str,
    error: Option<&str>,
) -> Result<String, PageError> {
    let csrf_token = state.signer.csrf_token(CsrfPurpose::LogIn, nonce);
    let page = LoginPage {
        layout: state.layout(request, None, ""),
        csrf_token: &csrf_token,
        email,
        error,
    };
    Ok(state.templates.render("login.html", &page)?)
}

pub(super) fn signed_out_redirect() -> HttpResponse {
    see_other(LOGIN_PATH)
        .cookie(removal_cookie(SESSION_COOKIE))
        .finish()
}

#[derive(Deserialize)]
struct LanguageSwitch {
    back: Option<String>,
}

/// Remembers the chosen language and returns to the page the switch was clicked on.
async fn switch_language(
    path: web::Path<String>,
    query: web::Query<LanguageSwitch>,
) -> Result<HttpResponse, PageError> {
    let lang = Lang::from_code(&path).ok_or(PageError::NotFound)?;
    let back = query
        .back
        .as_deref()
        .and_then(same_site_path)
        .unwrap_or("/");
    Ok(see_other(back).cookie(lang_cookie(lang)).finish())
}

/// `back` when it is a path on this site, never an open redirect: it starts with one `/`, and has
/// no backslash and no control or whitespace character (browsers drop a tab or a line break,
/// which turns `/\t/evil.example` into `//evil.example`, another origin; a line break would also
/// be refused as a header value).
fn same_site_path(back: &str) -> Option<&str> {
    let plain = !back.contains('\\') && !back.chars().any(|c| c.is_control() || c.is_whitespace());
    (plain && back.starts_with('/') && !back.starts_with("//")).then_some(back)
}

#[cfg(test)]
mod tests {
    use super::same_site_path;

    #[test]
    fn only_paths_on_this_site_are_redirect_targets() {
        for ok in ["/", "/webhooks/logs?page=2", "/integrations#slack"] {
            assert_eq!(same_site_path(ok), Some(ok), "{ok}");
        }
        for bad in [
            "",
            "https://evil.example/x",
            "//evil.example/x",
            "/\t/evil.example/x",
            "/\\evil.example",
            "\\evil.example",
            "/\r\nX:y",
            "/ /evil.example",
            "evil.example",
        ] {
            assert_eq!(same_site_path(bad), None, "{bad:?}");
        }
    }
}
