//! The account page: the user's sessions (where and when each was started and last used; any
//! other one can be ended), the zone the dashboard shows times in, and the password change, which
//! ends every session, this one included. All go through the api, which owns the sessions and the
//! users.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use fp_domain::time_zone;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::account::signed_out_redirect;
use super::{SignedInUser, html_response, see_other};
use crate::AppState;
use crate::error::PageError;
use crate::local_time::{self, LocalTime, Precision};
use crate::session::CsrfPurpose;
use crate::views::{AccountPage, SessionView, TimeZoneForm};

pub const ACCOUNT_PATH: &str = "/account";

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route(ACCOUNT_PATH, web::get().to(show))
        .route("/account/sessions/{id}/end", web::post().to(end_session))
        .route("/account/password", web::post().to(change_password))
        .route("/account/time-zone", web::post().to(set_time_zone));
}

/// A session as `GET /api/v2/sessions` lists it.
#[derive(Deserialize)]
struct ListedSession {
    id: Uuid,
    created_at: DateTime<Utc>,
    last_used_at: DateTime<Utc>,
    client_address: String,
    user_agent: String,
    current: bool,
}

#[derive(Deserialize)]
struct SessionList {
    data: Vec<ListedSession>,
}

async fn show(
    state: web::Data<AppState>,
    request: HttpRequest,
    user: SignedInUser,
) -> Result<HttpResponse, PageError> {
    render(&state, &request, &user, StatusCode::OK, Refused::Nothing).await
}

/// Which form of the page was refused, and why.
enum Refused<'a> {
    Nothing,
    Password(&'a str),
    TimeZone(&'a str),
}

/// The page with the user's sessions as the api lists them now, and the reason a form was refused
/// next to that form.
async fn render(
    state: &AppState,
    request: &HttpRequest,
    user: &SignedInUser,
    status: StatusCode,
    refused: Refused<'_>,
) -> Result<HttpResponse, PageError> {
    let answer = state
        .api
        .call(&user.session, Method::GET, "/api/v2/sessions", None)
        .await?;
    if !answer.is_success() {
        return Err(PageError::refused_by_api(&answer));
    }
    let listed: SessionList =
        serde_json::from_value(answer.body).map_err(|error| PageError::ApiRefused {
            status: answer.status,
            message: format!("unexpected session list: {error}"),
        })?;
    let zone = user.time_zone(request);
    let time = |at| LocalTime::new(at, zone, Precision::Minutes);
    let page = AccountPage {
        layout: state.layout(request, Some(user), "account"),
        sessions: listed
            .data
            .into_iter()
            .map(|session| SessionView {
                id: session.id.to_string(),
                created_at: time(session.created_at),
                last_used_at: time(session.last_used_at),
                client_address: session.client_address,
                user_agent: session.user_agent,
                current: session.current,
            })
            .collect(),
        end_session_csrf_token: user.csrf_token(state, CsrfPurpose::EndSession),
        password_csrf_token: user.csrf_token(state, CsrfPurpose::ChangePassword),
        error: match refused {
            Refused::Password(message) => Some(message),
            _ => None,
        },
        time_zone: TimeZoneForm {
            csrf_token: user.csrf_token(state, CsrfPurpose::SetTimeZone),
            current: zone.name(),
            chosen: user.user.time_zone.as_deref(),
            automatic: local_time::browser_zone(request).name(),
            zones: time_zone::names(),
            error: match refused {
                Refused::TimeZone(message) => Some(message),
                _ => None,
            },
        },
    };
    Ok(html_response(status).body(state.templates.render("account.html", &page)?))
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf_token: String,
}

/// Ends another of the user's sessions (the current one ends with the log-out button).
async fn end_session(
    state: web::Data<AppState>,
    user: SignedInUser,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, PageError> {
    user.check_csrf(&state, CsrfPurpose::EndSession, &form.csrf_token)?;
    let session_id = Uuid::parse_str(&path).map_err(|_| PageError::NotFound)?;
    let answer = state
        .api
        .call(
            &user.session,
            Method::DELETE,
            &format!("/api/v2/sessions/{session_id}"),
            None,
        )
        .await?;
    match answer.status {
        // 404: it had ended already.
        204 | 404 => Ok(see_other(ACCOUNT_PATH).finish()),
        _ => Err(PageError::refused_by_api(&answer)),
    }
}

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    csrf_token: String,
    current_password: String,
    new_password: String,
}

/// Changes the password; every session ends with it, so the user logs in again with the new one.
async fn change_password(
    state: web::Data<AppState>,
    request: HttpRequest,
    user: SignedInUser,
    form: web::Form<PasswordForm>,
) -> Result<HttpResponse, PageError> {
    user.check_csrf(&state, CsrfPurpose::ChangePassword, &form.csrf_token)?;
    let body = json!({
        "current_password": form.current_password,
        "new_password": form.new_password,
    });
    let answer = state
        .api
        .call(
            &user.session,
            Method::POST,
            "/api/v2/account/password",
            Some(&body),
        )
        .await?;
    match answer.status {
        200 => {
            tracing::info!(user_id = %user.user.id, "password changed");
            Ok(signed_out_redirect())
        }
        422 => {
            let text = match answer.error().1 {
                Some("current_password") => "account.password.wrong_current",
                _ => "account.password.too_short",
            };
            let message = state.text(&request, text);
            render(
                &state,
                &request,
                &user,
                StatusCode::UNPROCESSABLE_ENTITY,
                Refused::Password(message),
            )
            .await
        }
        429 => {
            let message = state.text(&request, "common.login.throttled");
            let mut response = render(
                &state,
                &request,
                &user,
                StatusCode::TOO_MANY_REQUESTS,
                Refused::Password(message),
            )
            .await?;
            if let Some(retry_after) = answer
                .retry_after
                .and_then(|value| header::HeaderValue::from_str(&value).ok())
            {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, retry_after);
            }
            Ok(response)
        }
        _ => Err(PageError::refused_by_api(&answer)),
    }
}

#[derive(Deserialize)]
struct TimeZoneFormData {
    #[serde(default)]
    csrf_token: String,
    /// A zone name, or empty for automatic (the browser's language region).
    #[serde(default)]
    time_zone: String,
}

/// Saves the zone the user reads times in (through the api, which checks the name), then shows
/// the page again in it.
async fn set_time_zone(
    state: web::Data<AppState>,
    request: HttpRequest,
    user: SignedInUser,
    form: web::Form<TimeZoneFormData>,
) -> Result<HttpResponse, PageError> {
    user.check_csrf(&state, CsrfPurpose::SetTimeZone, &form.csrf_token)?;
    let chosen = Some(form.time_zone.trim()).filter(|name| !name.is_empty());
    let body = json!({ "time_zone": chosen });
    let answer = state
        .api
        .call(
            &user.session,
            Method::PUT,
            "/api/v2/account/time-zone",
            Some(&body),
        )
        .await?;
    match answer.status {
        200 => {
            tracing::info!(user_id = %user.user.id, time_zone = ?chosen, "time zone set");
            Ok(see_other(ACCOUNT_PATH).finish())
        }
        422 => {
            let message = state.text(&request, "account.time_zone.unknown");
            render(
                &state,
                &request,
                &user,
                StatusCode::UNPROCESSABLE_ENTITY,
                Refused::TimeZone(message),
            )
            .await
        }
        _ => Err(PageError::refused_by_api(&answer)),
    }
}
