//! Deliveries: `GET /api/v2/webhooks/deliveries` (one entry per delivery, the attempts of one
//! event for one endpoint, by its latest attempt, newest first) and `/deliveries/{delivery_id}`
//! (one delivery with every attempt). The states are `fp_domain::delivery_state`'s.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use fp_domain::delivery_state::DeliveryState;
use fp_domain::explanation;
use fp_store::attempts;
use fp_store::deliveries::{self, DeliveryQuery, DeliveryRow, DeliverySearch, SEARCH_PATTERN};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::logs::{self, AttemptError, AttemptExplanation, LogEntry, LogPage};
use super::{refuse_unknown_parameters, uuid_in_path};
use crate::AppState;
use crate::auth::AuthenticatedTenant;
use crate::error::{ApiError, ErrorBody};

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

/// Query string of `GET /api/v2/webhooks/deliveries`; every filter is optional and they combine.
/// Values are read as text and parsed here, so a bad one gets a 422 naming its parameter.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryListQuery {
    /// Deliveries per page, 1 to 200 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// Only deliveries in this state.
    #[param(schema_with = state_names)]
    state: Option<String>,
    /// A delivery id or an event id (a UUID), or a submission id (an integer): the deliveries
    /// of that delivery, event or submission.
    #[param(schema_with = search_forms)]
    q: Option<String>,
    /// Deliveries whose latest attempt is at or after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// Deliveries whose latest attempt is before this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The states, as the filter takes them and entries carry them.
fn state_names() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(DeliveryState::ALL.map(DeliveryState::as_str)))
        .build()
}

/// The forms `q` takes: the store's pattern, so the document says what the parser reads.
fn search_forms() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(SEARCH_PATTERN))
        .build()
}

/// One delivery: an event for one endpoint, and how its attempts went.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DeliveryEntry {
    /// As in the `X-FeedbackPulse-Delivery` header: the same on every attempt and redelivery.
    delivery_id: Uuid,
    event_id: Uuid,
    event_type: String,
    url: String,
    /// `delivered` (some attempt got a 2xx), `retrying` (the next attempt is at
    /// `next_retry_at`), `failed` (no 2xx and none planned: the endpoint answered for good, the
    /// retries ran out or a redelivery failed), `blocked` (the URL points to a private or
    /// reserved address), `manual` (a redelivery you asked for is in flight) or `pending` (an
    /// attempt is in flight).
    #[schema(schema_with = state_names)]
    state: &'static str,
    /// How many attempts were made, redeliveries included.
    attempt_count: i64,
    first_attempt_at: DateTime<Utc>,
    last_attempt_at: DateTime<Utc>,
    /// When the next attempt is due; only while `retrying`.
    next_retry_at: Option<DateTime<Utc>>,
    /// The log entry (`GET /api/v2/webhooks/logs/{id}`) of the latest attempt.
    last_attempt_id: Uuid,
    /// The latest attempt's answer; absent when it got none.
    last_response_code: Option<i32>,
    /// Why the latest attempt failed before or without an answer.
    last_error: Option<AttemptError>,
    /// Why the latest attempt failed and the fix; absent on success and while in flight.
    last_explanation: Option<AttemptExplanation>,
}

impl From<DeliveryRow> for DeliveryEntry {
    fn from(row: DeliveryRow) -> Self {
        let state = row.state(fp_contracts::INTERRUPTED_ERROR_KIND);
        let last_explanation = explanation::explain(
            row.last_error_kind.as_deref(),
            row.last_response_status
                .and_then(|status| u16::try_from(status).ok()),
        )
        .map(AttemptExplanation::from);
        DeliveryEntry {
            delivery_id: row.delivery_id,
            event_id: row.event_id,
            event_type: row.event_type,
            url: row.url,
            state: state.as_str(),
            attempt_count: row.attempts,
            first_attempt_at: row.first_attempted_at,
            last_attempt_at: row.last_attempted_at,
            next_retry_at: row
                .next_retry_at
                .filter(|_| state == DeliveryState::Retrying),
            last_attempt_id: row.last_attempt_id,
            last_response_code: row.last_response_status,
            last_error: row.last_error_kind.map(|kind| AttemptError {
                kind,
                message: row.last_error_message.unwrap_or_default(),
            }),
            last_explanation,
        }
    }
}

/// One delivery with every attempt.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DeliveryDetail {
    #[serde(flatten)]
    delivery: DeliveryEntry,
    /// Every attempt, first to last, each with its explanation.
    attempts: Vec<LogEntry>,
}

#[utoipa::path(
    get,
    path = "/api/v2/webhooks/deliveries",
    tag = "logs",
    params(DeliveryListQuery),
    responses(
        (status = 200, description = "The tenant's deliveries, the most recently attempted first", body = LogPage<DeliveryEntry>),
        (status = 422, description = "A parameter is invalid or unknown; `field` names it", body = ErrorBody),
    ),
)]
pub async fn list(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant_id): AuthenticatedTenant,
    request: HttpRequest,
    query: web::Query<DeliveryListQuery>,
) -> Result<HttpResponse, ApiError> {
    refuse_unknown_parameters::<DeliveryListQuery>(&request, &[])?;
    let query = delivery_query(tenant_id, &query)?;
    let mut conn = state.pool.get().await.map_err(fp_store::StoreError::from)?;
    let (rows, more) =
        deliveries::page(&mut conn, &query, fp_contracts::INTERRUPTED_ERROR_KIND).await?;
    let next_cursor = rows.last().filter(|_| more).map(DeliveryRow::cursor);
    Ok(HttpResponse::Ok().json(LogPage {
        data: rows.into_iter().map(DeliveryEntry::from).collect(),
        next_cursor,
    }))
}

#[utoipa::path(
    get,
    path = "/api/v2/webhooks/deliveries/{delivery_id}",
    tag = "logs",
    params(("delivery_id" = Uuid, Path, description = "A delivery's `delivery_id`")),
    responses(
        (status = 200, description = "The delivery and every attempt of it", body = DeliveryDetail),
        (status = 404, description = "No such delivery for this tenant", body = ErrorBody),
    ),
)]
pub async fn detail(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant_id): AuthenticatedTenant,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let delivery_id = uuid_in_path(&path, "delivery")?;
    let mut conn = state.pool.get().await.map_err(fp_store::StoreError::from)?;
    let row = deliveries::find(
        &mut conn,
        tenant_id,
        delivery_id,
        fp_contracts::INTERRUPTED_ERROR_KIND,
    )
    .await?
    .ok_or(ApiError::NotFound("delivery"))?;
    let attempts = attempts::of_delivery(&mut conn, tenant_id, delivery_id).await?;
    Ok(HttpResponse::Ok().json(DeliveryDetail {
        delivery: DeliveryEntry::from(row),
        attempts: logs::entries(&mut conn, Some(tenant_id), attempts).await?,
    }))
}

/// The store query a request asks for, every parameter validated with its name in the error.
fn delivery_query(tenant_id: Uuid, query: &DeliveryListQuery) -> Result<DeliveryQuery, ApiError> {
    let state = query
        .state
        .as_deref()
        .map(|text| {
            text.parse::<DeliveryState>()
                .map_err(|error| ApiError::invalid("state", error.to_string()))
        })
        .transpose()?;
    let search = query
        .q
        .as_deref()
        .map(|text| {
            text.parse::<DeliverySearch>()
                .map_err(|error| ApiError::invalid("q", error.to_string()))
        })
        .transpose()?;
    Ok(DeliveryQuery {
        tenant_id,
        state,
        search,
        from: query
            .from
            .as_deref()
            .map(|text| logs::parse_time("from", text))
            .transpose()?,
        to: query
            .to
            .as_deref()
            .map(|text| logs::parse_time("to", text))
            .transpose()?,
        after: query
            .cursor
            .as_deref()
            .map(logs::decode_cursor)
            .transpose()?,
        limit: super::page_limit(query.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?,
    })
}
