//! `POST /api/v2/submissions` and `PATCH /api/v2/submissions/{id}`.
//!
//! Each write commits the submission and the outbox row of its event in one transaction, so an
//! event exists exactly when its change does. New submissions are committed in batches by
//! [`crate::submission_writer`].

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use fp_domain::{Change, Event, Submission, SubmissionStatus};
use fp_store::outbox::OutboxEvent;
use fp_store::submissions::{self, SubmissionRow};
use fp_store::{AsyncConnection, StoreError};
use fp_telemetry::propagation::StoredContext;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::AppState;
use crate::auth::AuthenticatedTenant;
use crate::error::{ApiError, ErrorBody};
use crate::json_body::JsonBody;
use crate::submission_writer::PendingSubmission;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    #[schema(minimum = 1)]
    campaign_id: i64,
    #[schema(minimum = 1, maximum = 5)]
    star_rating: i32,
    #[schema(max_length = 10000)]
    text_feedback: String,
    #[schema(max_length = 200)]
    customer_name: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    /// `pending`, `approved`, `rejected` or `archived`.
    #[schema(pattern = "^(pending|approved|rejected|archived)$")]
    status: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SubmissionResponse {
    id: i64,
    campaign_id: i64,
    star_rating: i32,
    text_feedback: String,
    customer_name: Option<String>,
    status: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<SubmissionRow> for SubmissionResponse {
    fn from(row: SubmissionRow) -> Self {
        SubmissionResponse {
            id: row.id,
            campaign_id: row.campaign_id,
            star_rating: row.star_rating,
            text_feedback: row.text_feedback,
            customer_name: row.customer_name,
            status: row.status,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

fn validate(request: &CreateRequest) -> Result<(), ApiError> {
    // The same limits hold for events other services publish (fp_domain::inbound_event).
    fp_domain::submission::check_submission_fields(
        request.campaign_id,
        request.star_rating,
        &request.text_feedback,
        request.customer_name.as_deref(),
    )
    .map_err(|invalid| ApiError::invalid(invalid.field, invalid.message))
}

pub(super) fn domain_submission(row: &SubmissionRow) -> Result<Submission, StoreError> {
    let status = row.status.parse::<SubmissionStatus>().map_err(|err| {
        StoreError::Query(diesel_error(format!("submission {} has {err}", row.id)))
    })?;
    Ok(Submission {
        id: row.id,
        campaign_id: row.campaign_id,
        star_rating: row.star_rating,
        text_feedback: row.text_feedback.clone(),
        customer_name: row.customer_name.clone(),
        status,
    })
}

fn diesel_error(message: String) -> fp_store::DieselError {
    fp_store::DieselError::DeserializationError(message.into())
}

/// The outbox row announcing `change`, recorded by the request being served: it stores the
/// context of the request's span, so the event continues the caller's trace through every service.
pub(super) fn outbox_event(
    tenant_id: Uuid,
    occurred_at: DateTime<Utc>,
    change: Change,
) -> OutboxEvent {
    outbox_event_in(
        StoredContext::of_span(&tracing::Span::current()),
        tenant_id,
        occurred_at,
        change,
    )
}

/// The outbox row announcing `change`, recorded by the request whose trace context is `trace`.
fn outbox_event_in(
    trace: StoredContext,
    tenant_id: Uuid,
    occurred_at: DateTime<Utc>,
    change: Change,
) -> OutboxEvent {
    let event = Event {
        id: Uuid::now_v7(),
        tenant_id,
        occurred_at,
        change,
    };
    tracing::info!(event_id = %event.id, trace_id = %trace.trace_id(), event_type = %event.event_type(), "event recorded");
    OutboxEvent {
        event_id: event.id,
        tenant_id,
        event_type: event.event_type().as_str().to_owned(),
        payload: fp_contracts::encode_event(&event),
        traceparent: trace.traceparent,
        tracestate: trace.tracestate,
        submission_id: event.submission_id(),
    }
}

/// The outbox row of `submission.created` for `row`, stored by the request whose trace context
/// is `trace`.
pub(crate) fn created_event(
    row: &SubmissionRow,
    trace: StoredContext,
) -> Result<OutboxEvent, StoreError> {
    let change = Change::SubmissionCreated {
        submission: domain_submission(row)?,
    };
    Ok(outbox_event_in(
        trace,
        row.tenant_id,
        row.created_at,
        change,
    ))
}

#[utoipa::path(
    post,
    path = "/api/v2/submissions",
    tag = "submissions",
    request_body = CreateRequest,
    responses(
        (status = 201, description = "Stored; `submission.created` is on its way", body = SubmissionResponse),
        (status = 422, description = "A field is invalid; `field` names it", body = ErrorBody),
    ),
)]
pub async fn create(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant_id): AuthenticatedTenant,
    JsonBody(request): JsonBody<CreateRequest>,
) -> Result<HttpResponse, ApiError> {
    validate(&request)?;
    // Stored by a writer task, committed together with other requests' submissions (group
    // commit); the answer waits for that commit.
    let row = state
        .submissions
        .write(PendingSubmission {
            tenant_id,
            campaign_id: request.campaign_id,
            star_rating: request.star_rating,
            text_feedback: request.text_feedback,
            customer_name: request.customer_name,
            trace: StoredContext::of_span(&tracing::Span::current()),
        })
        .await?;
    Ok(HttpResponse::Created().json(SubmissionResponse::from(row)))
}

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 200;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Submissions per page, 1 to 200 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SubmissionPage {
    data: Vec<SubmissionResponse>,
    next_cursor: Option<String>,
}

/// Another tenant's id and a malformed id answer alike: nothing reveals what exists.
pub(super) fn submission_id(text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .map_err(|_| ApiError::NotFound("submission"))
}

#[utoipa::path(
    get,
    path = "/api/v2/submissions/{id}",
    tag = "submissions",
    params(("id" = i64, Path, description = "The submission's `id`")),
    responses(
        (status = 200, description = "The submission", body = SubmissionResponse),
        (status = 404, description = "No such submission for this tenant", body = ErrorBody),
    ),
)]
pub async fn get(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant_id): AuthenticatedTenant,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = submission_id(&path)?;
    let mut conn = state.pool.get().await.map_err(StoreError::from)?;
    let row = submissions::find(&mut conn, tenant_id, id)
        .await?
        .ok_or(ApiError::NotFound("submission"))?;
    Ok(HttpResponse::Ok().json(SubmissionResponse::from(row)))
}

#[utoipa::path(
    get,
    path = "/api/v2/submissions",
    tag = "submissions",
    params(ListQuery),
    responses(
        (status = 200, description = "The tenant's submissions, newest first", body = SubmissionPage),
        (status = 422, description = "A parameter is invalid or unknown; `field` names it", body = ErrorBody),
    ),
)]
pub async fn list(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant_id): AuthenticatedTenant,
    request: HttpRequest,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    super::refuse_unknown_parameters::<ListQuery>(&request, &[])?;
    let limit = super::page_limit(query.limit.as_deref(), DEFAULT_PAGE, MAX_PAGE)?;
    let before = query
        .cursor
        .as_deref()
        .map(|cursor| {
            cursor
                .parse::<i64>()
                .map_err(|_| ApiError::invalid("cursor", "is not a cursor this api returned"))
        })
        .transpose()?;
    let mut conn = state.pool.get().await.map_err(StoreError::from)?;
    let (rows, more) = submissions::newest(&mut conn, tenant_id, before, limit).await?;
    let next_cursor = more
        .then(|| rows.last().map(|row| row.id.to_string()))
        .flatten();
    Ok(HttpResponse::Ok().json(SubmissionPage {
        data: rows.into_iter().map(SubmissionResponse::from).collect(),
        next_cursor,
    }))
}

#[utoipa::path(
    patch,
    path = "/api/v2/submissions/{id}",
    tag = "submissions",
    params(("id" = i64, Path, description = "The submission's `id`")),
    request_body = StatusRequest,
    responses(
        (status = 200, description = "The submission; a change emits `submission.status_changed`, the same status emits nothing", body = SubmissionResponse),
        (status = 404, description = "No such submission for this tenant", body = ErrorBody),
        (status = 422, description = "A field is invalid; `field` names it", body = ErrorBody),
    ),
)]
pub async fn change_status(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant_id): AuthenticatedTenant,
    path: web::Path<String>,
    JsonBody(request): JsonBody<StatusRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = submission_id(&path)?;
    let status = request
        .status
        .parse::<SubmissionStatus>()
        .map_err(|err| ApiError::invalid("status", err.to_string()))?;
    let mut conn = state.pool.get().await.map_err(StoreError::from)?;
    let outcome = conn
        .transaction(async |conn| {
            let Some(current) = submissions::find_for_update(conn, tenant_id, id).await? else {
                return Ok::<_, StoreError>(None);
            };
            let previous_status = domain_submission(&current)?.status;
            if previous_status == status {
                // Nothing changed, so nothing is announced.
                return Ok(Some((current, None)));
            }
            let now = Utc::now();
            let updated = submissions::set_status(conn, id, status.as_str(), now).await?;
            let change = Change::SubmissionStatusChanged {
                submission: domain_submission(&updated)?,
                previous_status,
            };
            let event = outbox_event(tenant_id, now, change);
            fp_store::outbox::insert(conn, &event).await?;
            Ok(Some((updated, Some(event))))
        })
        .await?;
    let (row, event) = outcome.ok_or(ApiError::NotFound("submission"))?;
    if let Some(event) = event {
        state.outbox.committed(vec![event]);
    }
    Ok(HttpResponse::Ok().json(SubmissionResponse::from(row)))
}
