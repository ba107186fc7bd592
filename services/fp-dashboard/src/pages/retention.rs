//! Einstellungen > Data retention: how long the tenant's delivery records are kept (the
//! platform's maximum) and how long their payloads are (the tenant's choice, within it).
//!
//! A settings page of its own, beside Integrations and Event types: the choice is the tenant's,
//! not one user's (so not Account), and it holds whether or not an endpoint is configured (so not
//! the endpoint's form). Read and written through the api with the user's session; the words of a
//! refusal come from the same rule the api checks, `fp_domain::retention`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use fp_domain::retention::{self, PayloadDaysRefused};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{SignedInUser, html_response, see_other};
use crate::AppState;
use crate::error::PageError;
use crate::session::CsrfPurpose;
use crate::views::Layout;
use crate::views::logs::RetentionView;

pub const PAGE_PATH: &str = "/settings/retention";
const RETENTION_API: &str = "/api/v2/webhooks/retention";

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route(PAGE_PATH, web::get().to(show))
        .route(PAGE_PATH, web::post().to(save));
}

/// The tenant's retention, through the api with the user's session.
pub async fn load(state: &AppState, user: &SignedInUser) -> Result<RetentionView, PageError> {
    let answer = state
        .api
        .call(&user.session, Method::GET, RETENTION_API, None)
        .await?;
    if !answer.is_success() {
        return Err(PageError::refused_by_api(&answer));
    }
    serde_json::from_value(answer.body).map_err(|error| PageError::ApiRefused {
        status: answer.status,
        message: format!("unexpected retention answer: {error}"),
    })
}

#[derive(Serialize)]
struct RetentionPage<'a> {
    #[serde(flatten)]
    layout: Layout<'a>,
    retention: RetentionView,
    csrf_token: String,
    /// The field as typed (after a refusal) or as stored; empty: no choice of the tenant's.
    payload_days: String,
    saved: bool,
    /// Why the choice was not saved.
    error: Option<&'a str>,
}

#[derive(Deserialize)]
struct PageQuery {
    saved: Option<String>,
}

async fn show(
    state: web::Data<AppState>,
    request: HttpRequest,
    user: SignedInUser,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, PageError> {
    user.tenant_id()?;
    let retention = load(&state, &user).await?;
    let typed = retention
        .payload_days
        .map(|days| days.to_string())
        .unwrap_or_default();
    let shown = Shown {
        retention,
        payload_days: typed,
        saved: query.saved.is_some(),
        error: None,
    };
    render(&state, &request, &user, shown, StatusCode::OK)
}

/// What the page shows besides its layout.
struct Shown {
    retention: RetentionView,
    payload_days: String,
    saved: bool,
    error: Option<&'static str>,
}

#[derive(Deserialize)]
struct RetentionForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    payload_days: String,
}

/// What a typed value asks for: `None` to keep payloads as long as the records.
fn requested_days(typed: &str, max_days: u32) -> Result<Option<u32>, &'static str> {
    let typed = typed.trim();
    if typed.is_empty() {
        return Ok(None);
    }
    let days = typed
        .parse::<i64>()
        .map_err(|_| "retention.errors.not_a_number")?;
    retention::check_payload_days(days, max_days)
        .map(Some)
        .map_err(|refusal| match refusal {
            PayloadDaysRefused::BelowMinimum { .. } => "retention.errors.below_minimum",
            PayloadDaysRefused::AboveMaximum { .. } => "retention.errors.above_maximum",
        })
}

async fn save(
    state: web::Data<AppState>,
    request: HttpRequest,
    user: SignedInUser,
    form: web::Form<RetentionForm>,
) -> Result<HttpResponse, PageError> {
    user.check_csrf(&state, CsrfPurpose::SetPayloadRetention, &form.csrf_token)?;
    user.tenant_id()?;
    let retention = load(&state, &user).await?;
    let refused = |key: &'static str| {
        let shown = Shown {
            retention,
            payload_days: form.payload_days.clone(),
            saved: false,
            error: Some(key),
        };
        render(
            &state,
            &request,
            &user,
            shown,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
    };
    let days = match requested_days(&form.payload_days, retention.record_days) {
        Ok(days) => days,
        Err(key) => return refused(key),
    };
    let answer = state
        .api
        .call(
            &user.session,
            Method::PUT,
            RETENTION_API,
            Some(&json!({ "payload_days": days })),
        )
        .await?;
    match answer.status {
        200 => {
            tracing::info!(user_id = %user.user.id, payload_days = ?days, "payload retention set");
            Ok(see_other(&format!("{PAGE_PATH}?saved=1")).finish())
        }
        // The maximum changed between reading and saving: the rule's words with the new one.
        422 => refused("retention.errors.above_maximum"),
        _ => Err(PageError::refused_by_api(&answer)),
    }
}

fn render(
    state: &AppState,
    request: &HttpRequest,
    user: &SignedInUser,
    shown: Shown,
    status: StatusCode,
) -> Result<HttpResponse, PageError> {
    let page = RetentionPage {
        layout: state.layout(request, Some(user), "retention"),
        retention: shown.retention,
        csrf_token: user.csrf_token(state, CsrfPurpose::SetPayloadRetention),
        payload_days: shown.payload_days,
        saved: shown.saved,
        error: shown.error.map(|key| state.text(request, key)),
    };
    let html = state.templates.render("retention.html", &page)?;
    Ok(html_response(status).body(html))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_field_keeps_payloads_as_long_as_the_records() {
        assert_eq!(requested_days("", 30), Ok(None));
        assert_eq!(requested_days("  ", 30), Ok(None));
    }

    #[test]
    fn typed_days_are_checked_by_the_domains_rule() {
        assert_eq!(requested_days(" 7 ", 30), Ok(Some(7)));
        assert_eq!(requested_days("30", 30), Ok(Some(30)));
        assert_eq!(
            requested_days("0", 30),
            Err("retention.errors.below_minimum")
        );
        assert_eq!(
            requested_days("31", 30),
            Err("retention.errors.above_maximum")
        );
        assert_eq!(
            requested_days("7.5", 30),
            Err("retention.errors.not_a_number")
        );
        assert_eq!(
            requested_days("seven", 30),
            Err("retention.errors.not_a_number")
        );
    }
}
