//! Delivery logs: `GET /api/v2/webhooks/logs` (the tenant's attempts, newest first) and
//! `/logs/{id}` (one attempt with its headers and the whole delivery), and the same two for
//! superadmins under `/api/v2/admin/webhooks/logs`, across tenants.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use fp_domain::EventType;
use fp_domain::explanation::{self, Explanation};
use fp_store::attempts::{self, AttemptQuery, AttemptRow, StatusFilter, StoredHeaders};
use fp_store::payload_retention::{self, PayloadClearing};
use fp_store::{PgConnection, StoreError};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{refuse_unknown_parameters, uuid_in_path};
use crate::AppState;
use crate::auth::{AuthenticatedTenant, Superadmin};
use crate::error::{ApiError, ErrorBody};

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

/// Query string of `GET /api/v2/webhooks/logs`; every filter is optional and they combine.
/// Values are read as text and parsed here, so a bad one gets a 422 naming its parameter.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Entries per page, 1 to 200 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// Only this event type.
    #[param(schema_with = event_type_filter)]
    event_type: Option<String>,
    /// An exact code (`404`), a class (`5xx`), or `none` for attempts that got no answer.
    #[param(pattern = "^([1-5][0-9][0-9]|[1-5]xx|none)$")]
    status: Option<String>,
    /// Attempts at or after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// Attempts before this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The filter takes every event type, `webhook.test` included.
fn event_type_filter() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(super::event_type_names()))
        .build()
}

/// The admin view's query: the tenant's filters plus an optional tenant.
#[derive(Deserialize)]
pub struct AdminLogQuery {
    #[serde(flatten)]
    filters: LogQuery,
    tenant_id: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct LogPage<T> {
    pub(super) data: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub(super) next_cursor: Option<String>,
}

/// An entry of the admin view: whose delivery it was, and the entry itself.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AdminLogEntry<T> {
    tenant_id: Uuid,
    #[serde(flatten)]
    entry: T,
}

/// An HTTP header as sent or received, in order.
#[derive(Serialize, utoipa::ToSchema)]
struct Header {
    name: String,
    value: String,
}

/// One attempt with what only a detail view needs: the headers, and every attempt of its delivery.
#[derive(Serialize, utoipa::ToSchema)]
pub struct LogDetail {
    #[serde(flatten)]
    entry: LogEntry,
    request_headers: Vec<Header>,
    response_headers: Vec<Header>,
    /// Every attempt of this delivery, first to last (this one included).
    attempts: Vec<LogEntry>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct AttemptError {
    /// `blocked`, `dns`, `connection_refused`, `connect`, `tls_unknown_authority`,
    /// `tls_self_signed`, `tls_expired`, `tls_wrong_host`, `tls` (any other TLS failure, and
    /// attempts before the reasons were told apart), `timeout`, `other`, `redirect`,
    /// `http_status`, `interrupted` (no outcome was recorded), or `cancelled` (nothing was
    /// sent: the event's submission was erased, `POST /api/v2/submissions/{id}/erase`).
    pub(super) kind: String,
    /// The technical detail, in English.
    pub(super) message: String,
}

/// Why an attempt failed and how to fix it.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct AttemptExplanation {
    /// Stable: key translations or handling on it.
    #[schema(schema_with = explanation_ids)]
    id: &'static str,
    /// What went wrong and the fix, in English.
    text: &'static str,
}

impl From<Explanation> for AttemptExplanation {
    fn from(explanation: Explanation) -> Self {
        AttemptExplanation {
            id: explanation.id(),
            text: explanation.english(),
        }
    }
}

/// The `id` schema, listing exactly the explanations the domain has.
fn explanation_ids() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(Explanation::ALL.map(Explanation::id)))
        .build()
}

/// One attempt, with everything the product page lists plus what debugging needs.
#[derive(Serialize, utoipa::ToSchema)]
pub struct LogEntry {
    id: Uuid,
    delivery_id: Uuid,
    event_id: Uuid,
    event_type: String,
    url: String,
    response_code: Option<i32>,
    /// The exact body sent, as text (bodies are always UTF-8 JSON).
    payload: String,
    response_body: String,
    response_body_truncated: bool,
    timestamp: DateTime<Utc>,
    duration_ms: i64,
    attempt_number: i32,
    #[serde(rename = "final")]
    is_final: bool,
    /// When the next attempt of this delivery is due; absent on final attempts.
    next_retry_at: Option<DateTime<Utc>>,
    /// A redelivery the tenant asked for, rather than an attempt of the retry schedule.
    manual: bool,
    error: Option<AttemptError>,
    /// Why the attempt failed and the fix, from `error.kind` and `response_code`; absent on
    /// success and while the outcome is unknown (`interrupted`).
    explanation: Option<AttemptExplanation>,
    /// Whether the tenant's payload retention cleared this attempt's request and response bodies
    /// and headers: `payload`, `response_body` and the headers are then empty, not what was sent
    /// or received. The rest of the entry stays.
    payload_cleared: bool,
    /// When the payload was cleared; absent unless `payload_cleared`.
    payload_cleared_at: Option<DateTime<Utc>>,
    /// The payload retention (in days) it was cleared under; absent unless `payload_cleared`.
    payload_retention_days: Option<i32>,
}

impl LogEntry {
    /// The entry of `row`, whose payload was cleared as `clearing` says, if it was.
    pub(super) fn new(row: AttemptRow, clearing: Option<PayloadClearing>) -> Self {
        let explanation = explanation::explain(
            row.error_kind.as_deref(),
            row.response_status
                .and_then(|status| u16::try_from(status).ok()),
        )
        .map(AttemptExplanation::from);
        LogEntry {
            id: row.id,
            delivery_id: row.delivery_id,
            event_id: row.event_id,
            event_type: row.event_type,
            url: row.url,
            response_code: row.response_status,
            payload: String::from_utf8_lossy(&row.request_body).into_owned(),
            response_body: String::from_utf8_lossy(&row.response_body).into_owned(),
            response_body_truncated: row.response_truncated,
            timestamp: row.attempted_at,
            duration_ms: row.duration_ms,
            attempt_number: row.attempt_number,
            is_final: row.is_final,
            next_retry_at: row.next_retry_at,
            manual: row.manual,
            error: row.error_kind.map(|kind| AttemptError {
                kind,
                message: row.error_message.unwrap_or_default(),
            }),
            explanation,
            payload_cleared: clearing.is_some(),
            payload_cleared_at: clearing.map(|clearing| clearing.cleared_at),
            payload_retention_days: clearing.map(|clearing| clearing.retention_days),
        }
    }
}

/// Each of `rows` with how its payload was cleared, if it was (looked up beside the rows' own
/// query, by primary key).
pub(super) async fn with_clearings(
    conn: &mut PgConnection,
    tenant_id: Option<Uuid>,
    rows: Vec<AttemptRow>,
) -> Result<Vec<(AttemptRow, Option<PayloadClearing>)>, StoreError> {
    let keys: Vec<(Uuid, DateTime<Utc>)> =
        rows.iter().map(|row| (row.id, row.attempted_at)).collect();
    let clearings = payload_retention::cleared_among(conn, tenant_id, &keys).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let clearing = clearings
                .iter()
                .find(|clearing| clearing.attempt_id == row.id)
                .copied();
            (row, clearing)
        })
        .collect())
}

/// The log entries of `rows`, in their order.
pub(super) async fn entries(
    conn: &mut PgConnection,
    tenant_id: Option<Uuid>,
    rows: Vec<AttemptRow>,
) -> Result<Vec<LogEntry>, StoreError> {
    Ok(with_clearings(conn, tenant_id, rows)
        .await?
        .into_iter()
        .map(|(row, clearing)| LogEntry::new(row, clearing))
        .collect())
}

#[utoipa::path(
    get,
    path = "/api/v2/webhooks/logs",
    tag = "logs",
    params(LogQuery),
    responses(
        (status = 200, description = "The tenant's attempts, newest first", body = LogPage<LogEntry>),
        (status = 422, description = "A parameter is invalid or unknown; `field` names it", body = ErrorBody),
    ),
)]
pub async fn list(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant_id): AuthenticatedTenant,
    request: HttpRequest,
    query: web::Query<LogQuery>,
) -> Result<HttpResponse, ApiError> {
    refuse_unknown_parameters::<LogQuery>(&request, &[])?;
    let mut filter = attempt_query(&query)?;
    filter.tenant_id = Some(tenant_id);
    respond_with_page(&state, &filter, LogEntry::new).await
}

#[utoipa::path(
    get,
    path = "/api/v2/webhooks/logs/{id}",
    tag = "logs",
    params(("id" = Uuid, Path, description = "A log entry's `id`")),
    responses(
        (status = 200, description = "The attempt, its headers and every attempt of its delivery", body = LogDetail),
        (status = 404, description = "No such entry for this tenant", body = ErrorBody),
    ),
)]
pub async fn detail(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant_id): AuthenticatedTenant,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let owned = load_detail(&state, &path, Some(tenant_id)).await?;
    Ok(HttpResponse::Ok().json(owned.detail))
}

#[utoipa::path(
    get,
    path = "/api/v2/admin/webhooks/logs",
    tag = "admin",
    params(
        LogQuery,
        ("tenant_id" = Option<Uuid>, Query, description = "Only this tenant's attempts"),
    ),
    responses(
        (status = 200, description = "Every tenant's attempts, newest first", body = LogPage<AdminLogEntry<LogEntry>>),
        (status = 422, description = "A parameter is invalid or unknown; `field` names it", body = ErrorBody),
    ),
)]
pub async fn admin_list(
    state: web::Data<AppState>,
    _: Superadmin,
    request: HttpRequest,
    query: web::Query<AdminLogQuery>,
) -> Result<HttpResponse, ApiError> {
    refuse_unknown_parameters::<LogQuery>(&request, &["tenant_id"])?;
    let mut filter = attempt_query(&query.filters)?;
    filter.tenant_id = query
        .tenant_id
        .as_deref()
        .map(|text| {
            Uuid::parse_str(text.trim())
                .map_err(|_| ApiError::invalid("tenant_id", "must be a tenant id (a UUID)"))
        })
        .transpose()?;
    respond_with_page(&state, &filter, |row, clearing| AdminLogEntry {
        tenant_id: row.tenant_id,
        entry: LogEntry::new(row, clearing),
    })
    .await
}

#[utoipa::path(
    get,
    path = "/api/v2/admin/webhooks/logs/{id}",
    tag = "admin",
    params(("id" = Uuid, Path, description = "A log entry's `id`")),
    responses(
        (status = 200, description = "The attempt with its tenant, headers and delivery", body = AdminLogEntry<LogDetail>),
        (status = 404, description = "No such entry", body = ErrorBody),
    ),
)]
pub async fn admin_detail(
    state: web::Data<AppState>,
    _: Superadmin,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let owned = load_detail(&state, &path, None).await?;
    Ok(HttpResponse::Ok().json(AdminLogEntry {
        tenant_id: owned.tenant_id,
        entry: owned.detail,
    }))
}

async fn respond_with_page<T: Serialize>(
    state: &AppState,
    filter: &AttemptQuery,
    to_entry: impl Fn(AttemptRow, Option<PayloadClearing>) -> T,
) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.get().await.map_err(fp_store::StoreError::from)?;
    let (rows, more) = attempts::page(&mut conn, filter).await?;
    let next_cursor = more
        .then(|| {
            rows.last()
                .map(|row| attempts::encode_cursor(row.attempted_at, row.id))
        })
        .flatten();
    let rows = with_clearings(&mut conn, filter.tenant_id, rows).await?;
    Ok(HttpResponse::Ok().json(LogPage {
        data: rows
            .into_iter()
            .map(|(row, clearing)| to_entry(row, clearing))
            .collect(),
        next_cursor,
    }))
}

struct OwnedDetail {
    tenant_id: Uuid,
    detail: LogDetail,
}

/// The attempt `{id}` names, if `tenant_id` is `None` (superadmin) or owns it; otherwise 404.
async fn load_detail(
    state: &AppState,
    id: &str,
    tenant_id: Option<Uuid>,
) -> Result<OwnedDetail, ApiError> {
    let not_found = || ApiError::NotFound("log entry");
    let id = uuid_in_path(id, "log entry")?;
    let mut conn = state.pool.get().await.map_err(fp_store::StoreError::from)?;
    let row = attempts::find(&mut conn, id, tenant_id)
        .await?
        .ok_or_else(not_found)?;
    let delivery = attempts::of_delivery(&mut conn, row.tenant_id, row.delivery_id).await?;
    let owner = row.tenant_id;
    let request_headers = header_list(&row.request_headers);
    let response_headers = header_list(&row.response_headers);
    // The attempt is one of its delivery's, so its clearing comes with theirs.
    let delivery = with_clearings(&mut conn, Some(owner), delivery).await?;
    let clearing = delivery
        .iter()
        .find(|(attempt, _)| attempt.id == row.id)
        .and_then(|(_, clearing)| *clearing);
    Ok(OwnedDetail {
        tenant_id: owner,
        detail: LogDetail {
            entry: LogEntry::new(row, clearing),
            request_headers,
            response_headers,
            attempts: delivery
                .into_iter()
                .map(|(attempt, clearing)| LogEntry::new(attempt, clearing))
                .collect(),
        },
    })
}

fn header_list(stored: &StoredHeaders) -> Vec<Header> {
    stored
        .pairs()
        .into_iter()
        .map(|(name, value)| Header { name, value })
        .collect()
}

/// The store query a request asks for, every parameter validated with its name in the error.
fn attempt_query(query: &LogQuery) -> Result<AttemptQuery, ApiError> {
    let limit = super::page_limit(query.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let event_type = query
        .event_type
        .as_deref()
        .map(|name| {
            name.parse::<EventType>()
                .map(|event| event.as_str().to_owned())
                .map_err(|err| ApiError::invalid("event_type", err.to_string()))
        })
        .transpose()?;
    Ok(AttemptQuery {
        tenant_id: None,
        event_type,
        status: query.status.as_deref().map(parse_status).transpose()?,
        from: query
            .from
            .as_deref()
            .map(|text| parse_time("from", text))
            .transpose()?,
        to: query
            .to
            .as_deref()
            .map(|text| parse_time("to", text))
            .transpose()?,
        after: query.cursor.as_deref().map(decode_cursor).transpose()?,
        limit,
    })
}

fn parse_status(text: &str) -> Result<StatusFilter, ApiError> {
    text.parse()
        .map_err(|error: attempts::InvalidStatusFilter| {
            ApiError::invalid("status", error.to_string())
        })
}

pub(super) fn parse_time(field: &'static str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|err| {
            ApiError::invalid(
                field,
                format!("must be an RFC 3339 time such as 2024-03-15T10:30:00Z: {err}"),
            )
        })
}

pub(super) fn decode_cursor(cursor: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    attempts::decode_cursor(cursor)
        .ok_or_else(|| ApiError::invalid("cursor", "is not a cursor this api returned"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_filters_parse_codes_classes_and_none() {
        assert_eq!(parse_status("404").ok(), Some(StatusFilter::Exact(404)));
        assert_eq!(parse_status("5xx").ok(), Some(StatusFilter::Class(5)));
        assert_eq!(parse_status("2XX").ok(), Some(StatusFilter::Class(2)));
        assert_eq!(parse_status("none").ok(), Some(StatusFilter::NoResponse));
        for bad in ["6xx", "99", "600", "abc", "xx", ""] {
            assert!(parse_status(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let at = DateTime::from_timestamp_micros(1_710_498_600_123_456).expect("time");
        let id = Uuid::now_v7();
        assert_eq!(
            decode_cursor(&attempts::encode_cursor(at, id)).ok(),
            Some((at, id))
        );
        assert!(decode_cursor("not-a-cursor").is_err());
    }
}
