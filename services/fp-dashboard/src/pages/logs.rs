//! Webhook Logs: the list with filters, chart and keyset paging; an attempt's detail page with the
//! delivery's timeline; redelivery through the api. The tenant's pages are here, and the admin
//! view (`admin.rs`) runs the same handlers with [`Scope::Platform`].

pub mod chart;
pub mod filter;
mod health;
mod recover;

use std::collections::{BTreeMap, HashMap};

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use fp_domain::time_zone::Tz;
use fp_store::attempts::{self, AttemptRow};
use fp_store::payload_retention;
use serde::Deserialize;
use uuid::Uuid;

use self::filter::{EVENT_TYPES, FilterParams};
use super::{SignedInUser, html_response, see_other};
use crate::AppState;
use crate::error::PageError;
use crate::i18n::Lang;
use crate::local_time::{LocalTime, Precision};
use crate::session::CsrfPurpose;
use crate::views::logs::{
    AttemptView, LogDetailPage, LogListPage, Notice, PayloadClearedView, RangeView, RedeliverForm,
    SummaryView, TenantLabel,
};

pub const TENANT_LIST_PATH: &str = "/webhooks/logs";
pub const ADMIN_LIST_PATH: &str = "/admin/webhook-logs";
/// Tenants named in the admin summary.
const MOST_FAILING_TENANTS: i64 = 5;

pub fn routes(config: &mut web::ServiceConfig) {
    // First: `/webhooks/logs/{id}` would take its paths for attempt ids.
    recover::routes(config);
    config
        .route(TENANT_LIST_PATH, web::get().to(tenant_list))
        .route("/webhooks/logs/{id}", web::get().to(tenant_detail))
        .route("/webhooks/logs/{id}/redeliver", web::post().to(redeliver));
}

/// Whose attempts a page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The signed-in user's tenant: nothing else is ever read.
    Tenant(Uuid),
    /// Every tenant (superadmins), with a tenant column, filter and summary.
    Platform,
}

impl Scope {
    fn list_path(self) -> &'static str {
        match self {
            Scope::Tenant(_) => TENANT_LIST_PATH,
            Scope::Platform => ADMIN_LIST_PATH,
        }
    }

    fn nav(self) -> &'static str {
        match self {
            Scope::Tenant(_) => "webhook_logs",
            Scope::Platform => "admin",
        }
    }

    fn tenant_id(self) -> Option<Uuid> {
        match self {
            Scope::Tenant(tenant_id) => Some(tenant_id),
            Scope::Platform => None,
        }
    }
}

async fn tenant_list(
    state: web::Data<AppState>,
    request: HttpRequest,
    user: SignedInUser,
    params: web::Query<FilterParams>,
) -> Result<HttpResponse, PageError> {
    let scope = Scope::Tenant(user.tenant_id()?);
    list_page(&state, &request, &user, scope, &params).await
}

/// The list of `scope`'s attempts matching `params`; bad filters are answered with the form and
/// a message next to each bad field (400).
pub async fn list_page(
    state: &AppState,
    request: &HttpRequest,
    user: &SignedInUser,
    scope: Scope,
    params: &FilterParams,
) -> Result<HttpResponse, PageError> {
    let list_path = scope.list_path();
    let zone = user.time_zone(request);
    let mut page = LogListPage {
        layout: state.layout(request, Some(user), scope.nav()),
        admin: scope == Scope::Platform,
        list_path,
        params,
        errors: BTreeMap::new(),
        event_types: &EVENT_TYPES,
        range: None,
        entries: Vec::new(),
        first_page_href: None,
        next_page_href: None,
        chart: None,
        summary: None,
        health: None,
        time_zone: zone.name(),
        recover: (scope != Scope::Platform).then(|| recover::form(zone, chrono::Utc::now())),
        retention: None,
    };
    let now = chrono::Utc::now();
    let filters = match params.parse(now, scope == Scope::Platform, zone) {
        Ok(filters) => filters,
        Err(errors) => {
            page.errors = errors
                .into_iter()
                .map(|(field, text)| (field, state.text(request, text)))
                .collect();
            let html = state.templates.render("logs_list.html", &page)?;
            return Ok(html_response(StatusCode::BAD_REQUEST).body(html));
        }
    };
    // The tenant view is scoped by the session alone; only the platform view takes a tenant
    // from the request.
    let tenant_id = scope.tenant_id().or(filters.tenant);
    let statistics = filters.statistics_filter(tenant_id);
    let bucket_seconds = chart::bucket_seconds(filters.from, filters.to);

    let mut conn = state.connection().await?;
    let (rows, more) = attempts::page(&mut conn, &filters.page_query(tenant_id)).await?;
    let counts = attempts::counts_per_bucket(&mut conn, &statistics, bucket_seconds).await?;
    if scope == Scope::Platform {
        let summary = attempts::summary(&mut conn, &statistics).await?;
        let most_failing =
            attempts::most_failing_tenants(&mut conn, &statistics, MOST_FAILING_TENANTS).await?;
        let mut tenant_ids: Vec<Uuid> = rows.iter().map(|row| row.tenant_id).collect();
        tenant_ids.sort_unstable();
        tenant_ids.dedup();
        let names: HashMap<Uuid, String> = attempts::tenant_names(&mut conn, &tenant_ids)
            .await?
            .into_iter()
            .collect();
        page.summary = Some(SummaryView {
            attempts: summary.attempts,
            success_rate: success_rate(summary.succeeded, summary.attempts, Lang::of(request)),
            p95_ms: summary.p95_duration_ms.map(|ms| ms.round() as i64),
            most_failing: most_failing
                .into_iter()
                .map(|tenant| {
                    tenant_label(params, tenant.tenant_id, Some(tenant.name), tenant.failures)
                })
                .collect(),
        });
        page.entries = entries(&rows, list_path, zone, |tenant_id| {
            Some(tenant_label(
                params,
                tenant_id,
                names.get(&tenant_id).cloned(),
                0,
            ))
        });
    } else {
        page.entries = entries(&rows, list_path, zone, |_| None);
    }
    if let Scope::Tenant(tenant_id) = scope {
        page.health = Some(
            health::health(
                &mut conn,
                tenant_id,
                state.disable_failing_endpoints_after,
                now,
                Lang::of(request),
                zone,
            )
            .await?,
        );
    }
    drop(conn);
    // Through the api, so no database connection waits on it.
    if scope != Scope::Platform {
        page.retention = Some(super::retention::load(state, user).await?);
    }

    page.range = Some(RangeView {
        from: LocalTime::new(filters.from, zone, Precision::Minutes),
        to: LocalTime::new(filters.to, zone, Precision::Minutes),
        default: filters.default_range,
    });
    page.chart = Some(chart::chart(
        filters.from,
        filters.to,
        bucket_seconds,
        &counts,
        zone,
    ));
    page.next_page_href = rows.last().filter(|_| more).map(|last| {
        let cursor = attempts::encode_cursor(last.attempted_at, last.id);
        format!("{list_path}{}", params.query_string(Some(&cursor)))
    });
    page.first_page_href = filters
        .cursor
        .map(|_| format!("{list_path}{}", params.query_string(None)));
    let html = state.templates.render("logs_list.html", &page)?;
    Ok(html_response(StatusCode::OK).body(html))
}

fn entries(
    rows: &[AttemptRow],
    list_path: &str,
    zone: Tz,
    tenant: impl Fn(Uuid) -> Option<TenantLabel>,
) -> Vec<AttemptView> {
    rows.iter()
        .map(|row| AttemptView {
            tenant: tenant(row.tenant_id),
            ..AttemptView::new(row, list_path, zone)
        })
        .collect()
}

/// A tenant on the admin view, linking to the list with the same filters for that tenant.
fn tenant_label(
    params: &FilterParams,
    tenant_id: Uuid,
    name: Option<String>,
    count: i64,
) -> TenantLabel {
    let filtered = FilterParams {
        tenant: tenant_id.to_string(),
        ..params.clone()
    };
    TenantLabel {
        id: tenant_id.to_string(),
        name,
        filter_href: format!("{ADMIN_LIST_PATH}{}", filtered.query_string(None)),
        count,
    }
}

/// The share of 2xx answers in percent with one decimal, written as the language writes
/// decimals; `None` without attempts.
fn success_rate(succeeded: i64, attempts: i64, lang: Lang) -> Option<String> {
    if attempts <= 0 {
        return None;
    }
    let rate = format!("{:.1}", succeeded as f64 * 100.0 / attempts as f64);
    Some(match lang {
        Lang::En => rate,
        Lang::De => rate.replace('.', ","),
    })
}

#[derive(Deserialize)]
struct DetailQuery {
    /// Set after a redelivery was queued: the attempt number it will have.
    redelivered: Option<String>,
}

async fn tenant_detail(
    state: web::Data<AppState>,
    request: HttpRequest,
    user: SignedInUser,
    path: web::Path<String>,
    query: web::Query<DetailQuery>,
) -> Result<HttpResponse, PageError> {
    let scope = Scope::Tenant(user.tenant_id()?);
    // Only a number is shown, so a crafted link cannot put words on the page.
    let notice = query
        .redelivered
        .as_deref()
        .and_then(|number| number.parse::<u32>().ok())
        .map(|number| {
            (
                StatusCode::OK,
                Notice {
                    success: true,
                    text: state.text(&request, "logs.detail.redelivered"),
                    detail: Some(number.to_string()),
                },
            )
        });
    detail_page(&state, &request, &user, scope, &path, notice).await
}

/// One attempt of `scope` with every attempt of its delivery; another tenant's attempt is not
/// found, like one that does not exist. `notice` (with the answer's status) reports a redelivery.
pub async fn detail_page(
    state: &AppState,
    request: &HttpRequest,
    user: &SignedInUser,
    scope: Scope,
    id: &str,
    notice: Option<(StatusCode, Notice<'_>)>,
) -> Result<HttpResponse, PageError> {
    let id = Uuid::parse_str(id).map_err(|_| PageError::NotFound)?;
    let mut conn = state.connection().await?;
    let row = attempts::find(&mut conn, id, scope.tenant_id())
        .await?
        .ok_or(PageError::NotFound)?;
    // The row's own tenant: on the tenant view it is the session's, on the admin view any.
    let timeline = attempts::of_delivery(&mut conn, row.tenant_id, row.delivery_id).await?;
    let payload_cleared = payload_retention::cleared_among(
        &mut conn,
        Some(row.tenant_id),
        &[(row.id, row.attempted_at)],
    )
    .await?
    .pop();
    let tenant_name = match scope {
        Scope::Tenant(_) => None,
        Scope::Platform => attempts::tenant_names(&mut conn, &[row.tenant_id])
            .await?
            .pop()
            .map(|(_, name)| name),
    };
    drop(conn);

    let list_path = scope.list_path();
    let zone = user.time_zone(request);
    let mut page = LogDetailPage::new(
        state.layout(request, Some(user), scope.nav()),
        scope == Scope::Platform,
        list_path,
        &row,
        &timeline,
        zone,
    );
    // A cleared attempt has no stored request left to send again.
    let redeliverable = payload_cleared.is_none();
    page.payload_cleared = payload_cleared.map(|clearing| PayloadClearedView {
        at: LocalTime::new(clearing.cleared_at, zone, Precision::Seconds),
        days: clearing.retention_days,
    });
    match scope {
        // Superadmins may look but not redeliver (the api takes redeliveries from tenants only).
        Scope::Tenant(_) if !redeliverable => {}
        Scope::Tenant(_) => {
            page.redeliver = Some(RedeliverForm {
                action: format!("{TENANT_LIST_PATH}/{id}/redeliver"),
                csrf_token: user.csrf_token(state, CsrfPurpose::Redeliver),
            });
        }
        Scope::Platform => {
            page.attempt.tenant = Some(tenant_label(
                &FilterParams::default(),
                row.tenant_id,
                tenant_name,
                0,
            ));
        }
    }
    let status = match notice {
        Some((status, notice)) => {
            page.notice = Some(notice);
            status
        }
        None => StatusCode::OK,
    };
    let html = state.templates.render("log_detail.html", &page)?;
    Ok(html_response(status).body(html))
}

#[derive(Deserialize)]
struct RedeliverFormData {
    #[serde(default)]
    csrf_token: String,
}

/// Why the api refused a redelivery with a 409, as a catalog path: the api's message is English
/// and names its routes, so the page asks the config which of the three reasons it was.
async fn redelivery_conflict(
    state: &AppState,
    user: &SignedInUser,
) -> Result<&'static str, PageError> {
    let config = state
        .api
        .call(
            &user.session,
            reqwest::Method::GET,
            "/api/v2/webhooks/config",
            None,
        )
        .await?;
    Ok(match config.status {
        404 => "logs.detail.redeliver_no_config",
        200 if config.body["enabled"] == false => "logs.detail.redeliver_disabled",
        // The URL now names an endpoint of another format than the stored body was made for.
        _ => "logs.detail.redeliver_format_changed",
    })
}

/// Asks the api, as the signed-in user, to send the attempt's delivery again; then back to the
/// attempt (redirect on success, so a reload does not send it twice; the page with the reason
/// otherwise).
async fn redeliver(
    state: web::Data<AppState>,
    request: HttpRequest,
    user: SignedInUser,
    path: web::Path<String>,
    // Optional, so a post without a form body is refused like one without a token.
    form: Option<web::Form<RedeliverFormData>>,
) -> Result<HttpResponse, PageError> {
    let token = form
        .map(|form| form.into_inner().csrf_token)
        .unwrap_or_default();
    user.check_csrf(&state, CsrfPurpose::Redeliver, &token)?;
    let scope = Scope::Tenant(user.tenant_id()?);
    let id = Uuid::parse_str(&path).map_err(|_| PageError::NotFound)?;
    let answer = state
        .api
        .call(
            &user.session,
            reqwest::Method::POST,
            &format!("/api/v2/webhooks/logs/{id}/redeliver"),
            None,
        )
        .await?;
    let failure = |status: StatusCode, text: &'static str, detail: Option<String>| {
        let notice = Notice {
            success: false,
            text: state.text(&request, text),
            detail,
        };
        Some((status, notice))
    };
    let notice = match answer.status {
        202 => {
            let number = answer.body["attempt_number"].as_u64().unwrap_or_default();
            let location = format!("{TENANT_LIST_PATH}/{id}?redelivered={number}");
            return Ok(see_other(&location).finish());
        }
        404 => return Err(PageError::NotFound),
        // The config is gone, disabled or points elsewhere now.
        409 => {
            let reason = redelivery_conflict(&state, &user).await?;
            failure(
                StatusCode::CONFLICT,
                "logs.detail.redeliver_refused",
                Some(state.text(&request, reason).to_owned()),
            )
        }
        // Over the tenant's redelivery limit.
        429 => failure(
            StatusCode::TOO_MANY_REQUESTS,
            "logs.detail.redeliver_rate_limited",
            None,
        ),
        503 => failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "logs.detail.redeliver_unavailable",
            None,
        ),
        status => {
            tracing::error!(status, body = %answer.body, "the api refused a redelivery");
            failure(
                StatusCode::BAD_GATEWAY,
                "logs.detail.redeliver_failed",
                None,
            )
        }
    };
    detail_page(&state, &request, &user, scope, &path, notice).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_rates_are_written_in_the_pages_language() {
        assert_eq!(success_rate(39, 40, Lang::En).as_deref(), Some("97.5"));
        assert_eq!(success_rate(39, 40, Lang::De).as_deref(), Some("97,5"));
        assert_eq!(success_rate(2, 3, Lang::En).as_deref(), Some("66.7"));
        assert_eq!(success_rate(0, 0, Lang::En), None);
    }

    #[test]
    fn tenant_links_keep_the_filters_but_start_at_the_top() {
        let tenant_id = Uuid::now_v7();
        let params = FilterParams {
            status: "5xx".into(),
            cursor: "abc".into(),
            tenant: "other".into(),
            ..FilterParams::default()
        };
        let label = tenant_label(&params, tenant_id, None, 3);
        assert_eq!(
            label.filter_href,
            format!("/admin/webhook-logs?status=5xx&tenant={tenant_id}")
        );
    }
}
