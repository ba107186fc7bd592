//! Recovering failed deliveries from the tenant's log. The list's "Recover failed deliveries
//! since…" form leads to a preview (`GET /webhooks/logs/recover?since=`): the api counts what a
//! bulk redelivery of `[since, now)` would send (`GET /api/v2/webhooks/logs/redeliver/preview`),
//! sending nothing. Its Confirm (`POST /webhooks/logs/recover`, CSRF-protected) asks the api to
//! queue exactly that range (`POST /api/v2/webhooks/logs/redeliver`) and leads to the recovery's
//! progress (`/webhooks/logs/recoveries/{id}`), which is read from the database like every page.
//! No JavaScript: the progress page has a Refresh link, and reloads itself while deliveries are
//! pending.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, NaiveDateTime, SecondsFormat, SubsecRound, TimeDelta, Utc};
use fp_domain::time_zone::Tz;
use fp_store::recoveries;
use serde::Deserialize;
use uuid::Uuid;

use super::{TENANT_LIST_PATH, redelivery_conflict};
use crate::AppState;
use crate::error::PageError;
use crate::local_time::{LocalTime, Precision, from_wall_clock};
use crate::pages::{SignedInUser, html_response, percent_encode_query_value, see_other};
use crate::session::CsrfPurpose;
use crate::views::recover::{
    ConfirmForm, PreviewView, Problem, RecoverForm, RecoverPreviewPage, RecoveryPage,
};

pub const RECOVER_PATH: &str = "/webhooks/logs/recover";
const RECOVERIES_PATH: &str = "/webhooks/logs/recoveries";
/// The form's default: failures of the last day.
const DEFAULT_SINCE_HOURS: i64 = 24;
/// The longest range the api recovers in one call.
const MAX_RANGE_DAYS: i64 = 31;
/// How often the progress page reloads itself while deliveries are pending.
const REFRESH_SECONDS: u32 = 5;
/// What a `datetime-local` input holds.
const INPUT_FORMAT: &str = "%Y-%m-%dT%H:%M";

/// Before the log's own routes: `/webhooks/logs/{id}` would take `recover` for an attempt id.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route(RECOVER_PATH, web::get().to(preview))
        .route(RECOVER_PATH, web::post().to(confirm))
        .route(
            &format!("{RECOVERIES_PATH}/{{id}}"),
            web::get().to(progress),
        );
}

/// The form of the tenant's log list, at `now`: since 24 hours ago, in the user's zone.
pub fn form(zone: Tz, now: DateTime<Utc>) -> RecoverForm {
    RecoverForm {
        action: RECOVER_PATH,
        since: input_value(now - TimeDelta::hours(DEFAULT_SINCE_HOURS), zone),
        zone: zone.name(),
        error: None,
    }
}

/// `at` as a `datetime-local` value in `zone`.
fn input_value(at: DateTime<Utc>, zone: Tz) -> String {
    at.with_timezone(&zone).format(INPUT_FORMAT).to_string()
}

/// The instant `text` names in `zone` (`YYYY-MM-DDTHH:MM`, with seconds or a space too), checked
/// against `now`: in the past, and no more than the api recovers at once. The error is a key of
/// `recover.errors`.
fn since(text: &str, zone: Tz, now: DateTime<Utc>) -> Result<DateTime<Utc>, &'static str> {
    let text = text.trim();
    if text.is_empty() {
        return Err("since_missing");
    }
    let wall_clock = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .ok_or("since_invalid")?;
    let since = from_wall_clock(wall_clock, zone).ok_or("since_invalid")?;
    if since >= now {
        return Err("since_future");
    }
    if now - since > TimeDelta::days(MAX_RANGE_DAYS) {
        return Err("since_too_old");
    }
    Ok(since)
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[derive(Deserialize)]
struct PreviewQuery {
    #[serde(default)]
    since: String,
}

/// The page around a preview, before the api is asked.
fn preview_page<'a>(
    state: &'a AppState,
    request: &HttpRequest,
    user: &SignedInUser,
    recover: RecoverForm,
) -> RecoverPreviewPage<'a> {
    RecoverPreviewPage {
        layout: state.layout(request, Some(user), "webhook_logs"),
        list_path: TENANT_LIST_PATH,
        recover,
        from: None,
        to: None,
        preview: None,
        confirm: None,
        problem: None,
    }
}

fn render_preview(
    state: &AppState,
    status: StatusCode,
    page: &RecoverPreviewPage<'_>,
) -> Result<HttpResponse, PageError> {
    let html = state.templates.render("logs_recover_preview.html", page)?;
    Ok(html_response(status).body(html))
}

/// `GET /webhooks/logs/recover?since=`: what recovering `[since, now)` would send, and the
/// Confirm button (only when it would send something).
async fn preview(
    state: web::Data<AppState>,
    request: HttpRequest,
    user: SignedInUser,
    query: web::Query<PreviewQuery>,
) -> Result<HttpResponse, PageError> {
    user.tenant_id()?;
    let zone = user.time_zone(&request);
    let now = Utc::now().trunc_subsecs(0);
    let mut page = preview_page(
        &state,
        &request,
        &user,
        RecoverForm {
            since: query.since.trim().to_owned(),
            ..form(zone, now)
        },
    );
    let from = match since(&query.since, zone, now) {
        Ok(from) => from,
        Err(error) => {
            page.recover.error = Some(error);
            return render_preview(&state, StatusCode::BAD_REQUEST, &page);
        }
    };
    page.from = Some(LocalTime::new(from, zone, Precision::Minutes));
    page.to = Some(LocalTime::new(now, zone, Precision::Minutes));
    let (from, to) = (rfc3339(from), rfc3339(now));
    let answer = state
        .api
        .call(
            &user.session,
            reqwest::Method::GET,
            &format!(
                "/api/v2/webhooks/logs/redeliver/preview?from={}&to={}",
                percent_encode_query_value(&from),
                percent_encode_query_value(&to)
            ),
            None,
        )
        .await?;
    let status = match answer.status {
        200 => {
            let body = &answer.body;
            let count = |name: &str| body[name].as_i64().unwrap_or_default();
            let preview = PreviewView {
                failed: count("failed"),
                would_redeliver: count("would_redeliver"),
                skipped_format_changed: count("skipped_format_changed"),
                more: body["more"] == true,
                url: body["url"].as_str().unwrap_or_default().to_owned(),
            };
            if preview.would_redeliver > 0 {
                page.confirm = Some(ConfirmForm {
                    action: RECOVER_PATH,
                    csrf_token: user.csrf_token(&state, CsrfPurpose::Redeliver),
                    from,
                    to,
                });
            }
            page.preview = Some(preview);
            StatusCode::OK
        }
        // No endpoint, or it is switched off.
        409 => {
            let reason = redelivery_conflict(&state, &user).await?;
            page.problem = Some(Problem {
                text: state.text(&request, "recover.refused"),
                detail: Some(state.text(&request, reason)),
            });
            StatusCode::CONFLICT
        }
        // The time was checked here already; the api's clock may see it otherwise.
        422 => {
            page.recover.error = Some("since_too_old");
            StatusCode::BAD_REQUEST
        }
        _ => return Err(PageError::refused_by_api(&answer)),
    };
    render_preview(&state, status, &page)
}

#[derive(Deserialize, Default)]
struct ConfirmData {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

/// `POST /webhooks/logs/recover`: queues the range previewed, then to its progress (a redirect,
/// so a reload does not queue it twice); the preview page with the reason otherwise.
async fn confirm(
    state: web::Data<AppState>,
    request: HttpRequest,
    user: SignedInUser,
    // Optional, so a post without a form body is refused like one without a token.
    form_data: Option<web::Form<ConfirmData>>,
) -> Result<HttpResponse, PageError> {
    let data = form_data.map(web::Form::into_inner).unwrap_or_default();
    // The same purpose as a single redelivery: both ask the api to send deliveries again.
    user.check_csrf(&state, CsrfPurpose::Redeliver, &data.csrf_token)?;
    user.tenant_id()?;
    let zone = user.time_zone(&request);
    let parse = |text: &str| {
        DateTime::parse_from_rfc3339(text.trim())
            .ok()
            .map(|at| at.with_timezone(&Utc))
    };
    let range = parse(&data.from).zip(parse(&data.to));
    let mut page = preview_page(&state, &request, &user, form(zone, Utc::now()));
    let Some((from, to)) = range else {
        // Not a form this page wrote: start again from the form.
        page.recover.error = Some("since_invalid");
        return render_preview(&state, StatusCode::BAD_REQUEST, &page);
    };
    page.recover.since = input_value(from, zone);
    page.from = Some(LocalTime::new(from, zone, Precision::Minutes));
    page.to = Some(LocalTime::new(to, zone, Precision::Minutes));
    let body = serde_json::json!({ "from": rfc3339(from), "to": rfc3339(to) });
    let answer = state
        .api
        .call(
            &user.session,
            reqwest::Method::POST,
            "/api/v2/webhooks/logs/redeliver",
            Some(&body),
        )
        .await?;
    let refused = |text: &'static str, detail: Option<&'static str>| Problem {
        text: state.text(&request, text),
        detail: detail.map(|path| state.text(&request, path)),
    };
    let (status, problem) = match answer.status {
        202 => {
            let id = answer.body["recovery_id"]
                .as_str()
                .and_then(|id| Uuid::parse_str(id).ok())
                .ok_or_else(|| PageError::ApiRefused {
                    status: answer.status,
                    message: "a bulk redelivery without its recovery_id".to_owned(),
                })?;
            return Ok(see_other(&format!("{RECOVERIES_PATH}/{id}")).finish());
        }
        409 => {
            let reason = redelivery_conflict(&state, &user).await?;
            (
                StatusCode::CONFLICT,
                refused("recover.refused", Some(reason)),
            )
        }
        422 => {
            page.recover.error = Some("since_too_old");
            (
                StatusCode::BAD_REQUEST,
                refused("recover.refused", Some("recover.errors.since_too_old")),
            )
        }
        // Over the tenant's bulk redelivery limit.
        429 => (
            StatusCode::TOO_MANY_REQUESTS,
            refused("recover.rate_limited", None),
        ),
        503 => (
            StatusCode::SERVICE_UNAVAILABLE,
            refused("recover.unavailable", None),
        ),
        401 | 403 => return Err(PageError::refused_by_api(&answer)),
        status => {
            tracing::error!(status, body = %answer.body, "the api refused a bulk redelivery");
            (StatusCode::BAD_GATEWAY, refused("recover.failed", None))
        }
    };
    page.problem = Some(problem);
    render_preview(&state, status, &page)
}

/// `GET /webhooks/logs/recoveries/{id}`: how far the tenant's recovery got; another tenant's is
/// not found, like one that does not exist.
async fn progress(
    state: web::Data<AppState>,
    request: HttpRequest,
    user: SignedInUser,
    path: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let tenant_id = user.tenant_id()?;
    let id = Uuid::parse_str(&path).map_err(|_| PageError::NotFound)?;
    let mut conn = state.connection().await?;
    let recovery = recoveries::find(&mut conn, tenant_id, id)
        .await?
        .ok_or(PageError::NotFound)?;
    let progress =
        recoveries::progress(&mut conn, &recovery, fp_contracts::INTERRUPTED_ERROR_KIND).await?;
    drop(conn);
    let zone = user.time_zone(&request);
    let page = RecoveryPage {
        layout: state.layout(&request, Some(&user), "webhook_logs"),
        list_path: TENANT_LIST_PATH,
        href: format!("{RECOVERIES_PATH}/{id}"),
        from: LocalTime::new(recovery.range_from, zone, Precision::Minutes),
        to: LocalTime::new(recovery.range_to, zone, Precision::Minutes),
        requested_at: LocalTime::new(recovery.requested_at, zone, Precision::Seconds),
        redelivered: i64::try_from(recovery.delivery_ids.len()).unwrap_or(i64::MAX),
        delivered: progress.delivered,
        failed: progress.failed,
        pending: progress.pending,
        skipped_format_changed: recovery.skipped_format_changed,
        more: recovery.more,
        refresh_seconds: (progress.pending > 0).then_some(REFRESH_SECONDS),
    };
    let html = state.templates.render("logs_recovery.html", &page)?;
    Ok(html_response(StatusCode::OK).body(html))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 4, 12, 0, 0)
            .single()
            .expect("valid time")
    }

    #[test]
    fn the_default_is_a_day_ago_in_the_users_zone() {
        let utc = form(Tz::UTC, now());
        assert_eq!(utc.since, "2026-12-03T12:00");
        assert_eq!(utc.zone, "UTC");
        let berlin = form(Tz::Europe__Berlin, now());
        assert_eq!(berlin.since, "2026-12-03T13:00");
        assert_eq!(
            since(&berlin.since, Tz::Europe__Berlin, now()),
            Ok(now() - TimeDelta::days(1))
        );
    }

    #[test]
    fn since_is_read_in_the_zone_and_checked() {
        let at = |hour| {
            Utc.with_ymd_and_hms(2026, 12, 4, hour, 30, 0)
                .single()
                .expect("time")
        };
        assert_eq!(since("2026-12-04T10:30", Tz::UTC, now()), Ok(at(10)));
        assert_eq!(since(" 2026-12-04 10:30 ", Tz::UTC, now()), Ok(at(10)));
        assert_eq!(
            since("2026-12-04T10:30:00", Tz::Europe__Berlin, now()),
            Ok(at(9))
        );
        assert_eq!(since("", Tz::UTC, now()), Err("since_missing"));
        assert_eq!(since("yesterday", Tz::UTC, now()), Err("since_invalid"));
        assert_eq!(
            since("2026-12-04T12:00", Tz::UTC, now()),
            Err("since_future")
        );
        assert_eq!(
            since("2026-11-01T12:00", Tz::UTC, now()),
            Err("since_too_old")
        );
        assert!(since("2026-11-03T12:00", Tz::UTC, now()).is_ok());
    }

    #[test]
    fn every_error_has_a_text_in_both_languages() {
        let catalog = crate::i18n::Catalog::load().expect("texts load");
        for lang in crate::i18n::Lang::ALL {
            for error in [
                "since_missing",
                "since_invalid",
                "since_future",
                "since_too_old",
            ] {
                let path = format!("recover.errors.{error}");
                assert_ne!(catalog.text(lang, &path), path, "{lang:?}");
            }
        }
    }
}
