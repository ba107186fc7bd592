//! Request handlers: log-in, log-out and the tenant's webhook log.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, CacheControl, CacheDirective, ContentType};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use fp_store::{attempts, identity};
use serde::Deserialize;
use uuid::Uuid;

use crate::AppState;
use crate::error::PageError;
use crate::session::{
    CsrfPurpose, LOGIN_NONCE_COOKIE, SESSION_COOKIE, SESSION_LIFETIME_SECS, login_nonce_cookie,
    new_login_nonce, removal_cookie, session_cookie,
};
use crate::views::{AttemptView, LoginPage, STYLESHEET, SignedIn, WebhookLogsPage};

const LOGIN_PATH: &str = "/login";
const WEBHOOK_LOGS_PATH: &str = "/webhooks/logs";
/// The first dashboard shows one page of the newest attempts; paging comes with the full viewer.
const WEBHOOK_LOGS_LIMIT: i64 = 100;
/// The same words whichever of email or password was wrong, so the form does not reveal which
/// emails have accounts.
const INVALID_CREDENTIALS: &str = "Invalid email or password";
const LOGIN_FORM_EXPIRED: &str = "The log-in form expired. Please try again.";

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/", web::get().to(home))
        .route("/healthz", web::get().to(healthz))
        .route("/static/app.css", web::get().to(stylesheet))
        .route(LOGIN_PATH, web::get().to(login_form))
        .route(LOGIN_PATH, web::post().to(log_in))
        .route("/logout", web::post().to(log_out))
        .route(WEBHOOK_LOGS_PATH, web::get().to(webhook_logs));
}

async fn home() -> HttpResponse {
    see_other(WEBHOOK_LOGS_PATH).finish()
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::plaintext())
        .body("ok")
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
) -> Result<HttpResponse, PageError> {
    if signed_in_user(&state, &request).is_some() {
        return Ok(see_other(WEBHOOK_LOGS_PATH).finish());
    }
    let nonce = new_login_nonce(&state.rng)?;
    let html = render_login(&state, &nonce, "", None)?;
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
        let html = render_login(&state, &fresh_nonce, &email, Some(LOGIN_FORM_EXPIRED))?;
        return Ok(html_response(StatusCode::FORBIDDEN)
            .cookie(login_nonce_cookie(fresh_nonce))
            .body(html));
    };

    let user = {
        let mut conn = state.connection().await?;
        identity::user_by_email(&mut conn, &email).await?
    };
    // Argon2 is deliberately slow: run it on the blocking pool, not on an async worker.
    let stored_hash = user.as_ref().map(|user| user.password_hash.clone());
    let checker = state.clone();
    let password_matches =
        web::block(move || checker.passwords.matches(stored_hash.as_deref(), &password)).await?;

    match user {
        Some(user) if password_matches => {
            let expires_at = chrono::Utc::now().timestamp() + SESSION_LIFETIME_SECS;
            let session = state.signer.sign_session(user.id, expires_at);
            tracing::info!(user_id = %user.id, "user logged in");
            Ok(see_other(WEBHOOK_LOGS_PATH)
                .cookie(session_cookie(session))
                .cookie(removal_cookie(LOGIN_NONCE_COOKIE))
                .finish())
        }
        _ => {
            tracing::info!("log-in refused: invalid email or password");
            let html = render_login(&state, &nonce, &email, Some(INVALID_CREDENTIALS))?;
            Ok(html_response(StatusCode::UNAUTHORIZED).body(html))
        }
    }
}

#[derive(Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf_token: String,
}

/// Sessions are stateless, so logging out makes the browser forget its cookie; a copy taken
/// earlier stays valid until it expires.
async fn log_out(
    state: web::Data<AppState>,
    request: HttpRequest,
    form: web::Form<LogoutForm>,
) -> Result<HttpResponse, PageError> {
    // Without a valid session there is nothing to protect: just clear whatever cookie is left.
    if let Some((session, _)) = signed_in_user(&state, &request)
        && !state
            .signer
            .verify_csrf(CsrfPurpose::LogOut, &session, &form.csrf_token)
    {
        return Err(PageError::StaleForm);
    }
    Ok(signed_out_redirect())
}

async fn webhook_logs(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, PageError> {
    let Some((session, user_id)) = signed_in_user(&state, &request) else {
        return Ok(see_other(LOGIN_PATH).finish());
    };
    let mut conn = state.connection().await?;
    let Some(user) = identity::user_by_id(&mut conn, user_id).await? else {
        // Deleted since logging in.
        return Ok(signed_out_redirect());
    };
    // Scoped by the tenant of the signed-in user, never by anything in the request.
    let attempts = match user.tenant_id {
        Some(tenant_id) => attempts::newest_for_tenant(&mut conn, tenant_id, WEBHOOK_LOGS_LIMIT)
            .await?
            .iter()
            .map(AttemptView::from)
            .collect(),
        None => Vec::new(),
    };
    drop(conn);

    let page = WebhookLogsPage {
        signed_in: Some(SignedIn {
            email: user.email,
            logout_csrf_token: state.signer.csrf_token(CsrfPurpose::LogOut, &session),
        }),
        active_nav: "webhook_logs",
        is_superadmin: user.tenant_id.is_none(),
        limit: WEBHOOK_LOGS_LIMIT,
        attempts,
    };
    let html = state.templates.render("webhook_logs.html", &page)?;
    Ok(html_response(StatusCode::OK).body(html))
}

/// The session cookie's value and the user it names, if it is ours and still valid.
fn signed_in_user(state: &AppState, request: &HttpRequest) -> Option<(String, Uuid)> {
    let cookie = request.cookie(SESSION_COOKIE)?;
    let now = chrono::Utc::now().timestamp();
    match state.signer.verify_session(cookie.value(), now) {
        Ok(user_id) => Some((cookie.value().to_owned(), user_id)),
        Err(reason) => {
            tracing::debug!(%reason, "session cookie refused");
            None
        }
    }
}

fn render_login(
    state: &AppState,
    nonce: &str,
    email: &str,
    error: Option<&str>,
) -> Result<String, PageError> {
    let csrf_token = state.signer.csrf_token(CsrfPurpose::LogIn, nonce);
    let page = LoginPage {
        signed_in: None,
        csrf_token: &csrf_token,
        email,
        error,
    };
    Ok(state.templates.render("login.html", &page)?)
}

/// Pages show tenant data, so no cache (browser or proxy) keeps a copy.
fn html_response(status: StatusCode) -> HttpResponseBuilder {
    let mut response = HttpResponse::build(status);
    response
        .content_type(ContentType::html())
        .insert_header(CacheControl(vec![CacheDirective::NoStore]));
    response
}

/// 303, so the browser follows with a GET even after a POST.
fn see_other(location: &'static str) -> HttpResponseBuilder {
    let mut response = HttpResponse::SeeOther();
    response.insert_header((header::LOCATION, location));
    response
}

fn signed_out_redirect() -> HttpResponse {
    see_other(LOGIN_PATH)
        .cookie(removal_cookie(SESSION_COOKIE))
        .finish()
}
