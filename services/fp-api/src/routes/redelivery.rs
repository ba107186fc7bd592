//! Manual redelivery: `POST /api/v2/webhooks/logs/{id}/redeliver` sends the request of one logged
//! attempt again; `POST /api/v2/webhooks/logs/redeliver` does so for the failed deliveries of a
//! time range (a *recovery*), `GET /api/v2/webhooks/logs/redeliver/preview` counts what that would
//! send without sending anything, and `GET /api/v2/webhooks/recoveries/{id}` tells how far a
//! recovery got.
//!
//! What goes out is the exact body stored with the attempt (as Stripe and Svix redeliver), signed
//! anew with the endpoint's current secrets and a fresh timestamp, under the same delivery id, to
//! the endpoint's *current* URL (as retries go): a tenant who fixed a wrong URL recovers what
//! failed there. The stored body was made for the format of the URL it went to (custom JSON, Slack,
//! Discord: `fp_domain::format::takes_body_made_for`), so it goes only to an endpoint of that same
//! format; a single redelivery to another format answers 409, a bulk one leaves those out and
//! counts them. It is one attempt, marked manual, never retried automatically. The job is published
//! with publisher confirms straight to the dispatchers' retry queue, so a 202 means the broker has
//! it and a broker failure answers 503: no redelivery is lost without the caller knowing.
//!
//! Both are rate-limited per tenant (`api.rate_limits`): single redeliveries by count, bulk ones by
//! the deliveries they queue, so a tenant cannot aim a flood at any URL; over a limit, a 429.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use fp_broker::{BrokerError, OutgoingMessage};
use fp_contracts::{DeliveryJob, JobContent, StoredRequest};
use fp_domain::format;
use fp_domain::rate_limit::{LimitedAction, bulk_cost};
use fp_domain::{DeliveryId, EventType};
use fp_store::StoreError;
use fp_store::attempts::{self, StoredDelivery};
use fp_store::payload_retention;
use fp_store::recoveries::{self, RecoveryRow};
use fp_telemetry::propagation::StoredContext;
use futures_util::{StreamExt, stream};
use serde::{Deserialize, Deserializer, Serialize};
use tracing::Instrument;
use uuid::Uuid;

use super::test_event::enabled_config;
use super::{refuse_unknown_parameters, uuid_in_path};
use crate::AppState;
use crate::auth::AuthenticatedTenant;
use crate::error::{ApiError, ErrorBody};
use crate::json_body::JsonBody;
use crate::rate_limit;

/// Deliveries one bulk call redelivers at most.
const MAX_BULK: i64 = 1000;
/// Longest time range of one bulk call.
const MAX_BULK_RANGE_DAYS: i64 = 31;
/// Redelivery jobs awaiting their broker confirms at once during a bulk call.
const PUBLISH_CONCURRENCY: usize = 32;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Redelivered {
    delivery_id: Uuid,
    /// The attempt number the redelivery will have in the logs.
    attempt_number: u32,
}

#[utoipa::path(
    post,
    path = "/api/v2/webhooks/logs/{id}/redeliver",
    tag = "logs",
    params(("id" = Uuid, Path, description = "A log entry's `id`: its delivery is sent again")),
    responses(
        (status = 202, description = "One more attempt of the delivery is queued, to the endpoint's current URL (same delivery id and body, signed anew, marked manual)", body = Redelivered),
        (status = 404, description = "No such entry for this tenant", body = ErrorBody),
        (status = 409, description = "No webhook config, it is disabled, its URL now takes another format (custom JSON, Slack, Discord) than the one the stored body was made for, or the tenant's payload retention removed the stored body", body = ErrorBody),
        (status = 429, description = "The tenant's redelivery limit (`api.rate_limits.redelivery`) is used up; nothing was queued. `Retry-After` says when one is free again", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the action is allowed again"))),
        (status = 503, description = "The broker did not take the job; nothing was queued", body = ErrorBody),
    ),
)]
pub async fn redeliver_one(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant_id): AuthenticatedTenant,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let attempt_id = uuid_in_path(&path, "log entry")?;
    let mut conn = state.pool.get().await.map_err(StoreError::from)?;
    // Scoped by the tenant: another tenant's attempt is as unknown as one that never existed.
    let delivery = attempts::stored_delivery(&mut conn, tenant_id, attempt_id)
        .await?
        .ok_or(ApiError::NotFound("log entry"))?;
    if let Some(clearing) = payload_retention::clearing_of(&mut conn, tenant_id, attempt_id).await?
    {
        return Err(ApiError::Conflict(format!(
            "this attempt's payload was removed after {} days by the tenant's payload retention \
             (GET /api/v2/webhooks/retention), so there is nothing to send again",
            clearing.retention_days
        )));
    }
    let config = enabled_config(&mut conn, tenant_id).await?;
    // Sent to the current URL, whatever URL it went to, as long as the stored body suits it.
    if !format::takes_body_made_for(&config.url, &delivery.url) {
        return Err(ApiError::Conflict(format_changed(
            &delivery.url,
            &config.url,
        )));
    }
    rate_limit::take(
        &mut conn,
        tenant_id,
        LimitedAction::Redelivery,
        state.rate_limits.redelivery,
        1,
    )
    .await?;
    drop(conn);
    let (job, trace) = redelivery_job(tenant_id, delivery)?;
    publish(&state, &job, &trace).await.map_err(|error| {
        ApiError::Unavailable(format!(
            "the redelivery was not queued, try again later: {error}"
        ))
    })?;
    Ok(HttpResponse::Accepted().json(Redelivered {
        delivery_id: job.delivery_id.0,
        attempt_number: job.attempt_number,
    }))
}

/// Why a stored body does not go to the endpoint's current URL: it was made for another format.
fn format_changed(sent_to: &str, now: &str) -> String {
    let name = |url: &str| format::detect_text(url).map_or("unreadable", |format| format.as_str());
    format!(
        "the webhook URL now names a `{}` endpoint, and this delivery's stored body was made for the \
         `{}` endpoint it went to; a delivery is sent again, as it was stored, only to an endpoint of \
         the same format (custom JSON, Slack or Discord): send a test event \
         (POST /api/v2/webhooks/test) to check the new endpoint instead",
        name(now),
        name(sent_to)
    )
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// Inclusive (RFC 3339).
    #[serde(deserialize_with = "rfc3339")]
    from: DateTime<Utc>,
    /// Exclusive (RFC 3339); at most 31 days after `from`.
    #[serde(deserialize_with = "rfc3339")]
    to: DateTime<Utc>,
}

fn rfc3339<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_rfc3339(&text).map_err(serde::de::Error::custom)
}

fn parse_rfc3339(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|err| format!("must be an RFC 3339 time such as 2024-03-15T10:30:00Z: {err}"))
}

/// The range of a recovery (bulk call or preview), checked the same way for both: `to` after
/// `from`, at most 31 days apart.
fn check_range(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<(), ApiError> {
    if from >= to {
        return Err(ApiError::invalid("to", "must be later than `from`"));
    }
    if to - from > TimeDelta::days(MAX_BULK_RANGE_DAYS) {
        return Err(ApiError::invalid(
            "to",
            format!(
                "must be at most {MAX_BULK_RANGE_DAYS} days after `from`; redeliver a longer \
                 period in several calls"
            ),
        ));
    }
    Ok(())
}

/// How many deliveries one bulk call may queue when the tenant's bulk redelivery limit has `room`
/// left: at most [`MAX_BULK`].
fn bulk_cap(room: u32) -> i64 {
    MAX_BULK.min(i64::from(room))
}

/// Query string of the preview: the range a bulk call would get.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PreviewQuery {
    /// Inclusive (RFC 3339).
    #[param(required = true, value_type = String, format = DateTime)]
    from: Option<String>,
    /// Exclusive (RFC 3339); at most 31 days after `from`.
    #[param(required = true, value_type = String, format = DateTime)]
    to: Option<String>,
}

impl PreviewQuery {
    fn range(&self) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
        let time = |field: &'static str, text: &Option<String>| {
            let text = text
                .as_deref()
                .ok_or_else(|| ApiError::invalid(field, "is required (an RFC 3339 time)"))?;
            parse_rfc3339(text).map_err(|message| ApiError::invalid(field, message))
        };
        let (from, to) = (time("from", &self.from)?, time("to", &self.to)?);
        check_range(from, to)?;
        Ok((from, to))
    }
}

/// What a bulk call for the same range would do now.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RecoveryPreview {
    /// Failed deliveries of the range: no 2xx answer ever, and no longer being retried (those
    /// whose payload the tenant's retention removed are not counted: there is nothing to resend).
    failed: i64,
    /// How many of them a bulk call would queue again now: those the endpoint's current URL takes,
    /// up to 1000, and no more than the tenant's bulk redelivery limit has left.
    would_redeliver: i64,
    /// Failed deliveries whose stored body was made for another format (custom JSON, Slack,
    /// Discord) than the endpoint's current URL takes: a bulk call leaves them out.
    skipped_format_changed: i64,
    /// More would be redelivered than one call queues now: the rest waits for another call.
    more: bool,
    /// The endpoint's current URL: where they would go.
    url: String,
}

#[utoipa::path(
    get,
    path = "/api/v2/webhooks/logs/redeliver/preview",
    tag = "logs",
    params(PreviewQuery),
    responses(
        (status = 200, description = "What `POST /api/v2/webhooks/logs/redeliver` with the same range would queue now; nothing is queued, and no limit is spent", body = RecoveryPreview),
        (status = 409, description = "No webhook config, or it is disabled", body = ErrorBody),
        (status = 422, description = "A parameter is invalid, missing or unknown; `field` names it", body = ErrorBody),
    ),
)]
pub async fn preview(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant_id): AuthenticatedTenant,
    request: HttpRequest,
    query: web::Query<PreviewQuery>,
) -> Result<HttpResponse, ApiError> {
    refuse_unknown_parameters::<PreviewQuery>(&request, &[])?;
    let (from, to) = query.range()?;
    let mut conn = state.pool.get().await.map_err(StoreError::from)?;
    let config = enabled_config(&mut conn, tenant_id).await?;
    let counts = attempts::count_failed_deliveries(&mut conn, tenant_id, from, to, |sent_to| {
        format::takes_body_made_for(&config.url, sent_to)
    })
    .await?;
    // Read, not taken: with nothing left, nothing would be queued now.
    let room = fp_store::rate_limits::room(
        &mut conn,
        tenant_id,
        LimitedAction::BulkRedelivery,
        state.rate_limits.bulk_redelivery,
    )
    .await?
    .unwrap_or(0);
    let would_redeliver = counts.redeliverable.min(bulk_cap(room));
    Ok(HttpResponse::Ok().json(RecoveryPreview {
        failed: counts.total(),
        would_redeliver,
        skipped_format_changed: counts.skipped,
        more: counts.redeliverable > would_redeliver,
        url: config.url,
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct BulkRedelivered {
    /// This recovery: `GET /api/v2/webhooks/recoveries/{recovery_id}` tells how far it got.
    recovery_id: Uuid,
    redelivered: usize,
    delivery_ids: Vec<Uuid>,
    /// More failed deliveries of the range are left for another call (also when the tenant's bulk
    /// redelivery limit cut this call short).
    more: bool,
    /// Failed deliveries of the range left out because their stored body was made for another
    /// format (custom JSON, Slack, Discord) than the endpoint's current URL takes.
    skipped_format_changed: i64,
}

#[utoipa::path(
    post,
    path = "/api/v2/webhooks/logs/redeliver",
    tag = "logs",
    request_body = BulkRequest,
    responses(
        (status = 202, description = "The failed deliveries of the range (up to 1000, oldest first, and no more than the tenant's bulk redelivery limit has left) are queued again, to the endpoint's current URL; those whose stored body was made for another format are left out and counted. The recovery is recorded", body = BulkRedelivered),
        (status = 409, description = "No webhook config, or it is disabled", body = ErrorBody),
        (status = 422, description = "A field is invalid; `field` names it", body = ErrorBody),
        (status = 429, description = "The tenant's bulk redelivery limit (`api.rate_limits.bulk_redelivery`, counted in deliveries queued) is used up; nothing was queued. `Retry-After` says when one is free again", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the action is allowed again"))),
        (status = 503, description = "The broker did not take every job; the message says how many were queued, and no recovery is recorded", body = ErrorBody),
    ),
)]
pub async fn redeliver_failed(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant_id): AuthenticatedTenant,
    JsonBody(range): JsonBody<BulkRequest>,
) -> Result<HttpResponse, ApiError> {
    check_range(range.from, range.to)?;
    // Before any job is published: the manual attempts at or after it are this recovery's.
    let requested_at = Utc::now().trunc_subsecs(6);
    let mut conn = state.pool.get().await.map_err(StoreError::from)?;
    let config = enabled_config(&mut conn, tenant_id).await?;
    let limit = state.rate_limits.bulk_redelivery;
    // Read no more than the limit has left; the take below is what counts.
    let room = rate_limit::room(&mut conn, tenant_id, LimitedAction::BulkRedelivery, limit).await?;
    let mut failed = attempts::failed_deliveries(
        &mut conn,
        tenant_id,
        range.from,
        range.to,
        |sent_to| format::takes_body_made_for(&config.url, sent_to),
        bulk_cap(room),
    )
    .await?;
    let granted = rate_limit::take(
        &mut conn,
        tenant_id,
        LimitedAction::BulkRedelivery,
        limit,
        bulk_cost(failed.redeliverable.len()),
    )
    .await?;
    drop(conn);
    // Other calls may have spent part of the room in between: the rest waits for another call.
    let granted = usize::try_from(granted).unwrap_or(usize::MAX);
    if failed.redeliverable.len() > granted {
        failed.redeliverable.truncate(granted);
        failed.more = true;
    }
    let jobs = failed
        .redeliverable
        .into_iter()
        .map(|delivery| redelivery_job(tenant_id, delivery))
        .collect::<Result<Vec<_>, _>>()?;
    let total = jobs.len();
    let outcomes: Vec<(Uuid, Result<(), BrokerError>)> = stream::iter(&jobs)
        .map(|(job, trace)| async { (job.delivery_id.0, publish(&state, job, trace).await) })
        .buffered(PUBLISH_CONCURRENCY)
        .collect()
        .await;
    let mut delivery_ids = Vec::with_capacity(total);
    let mut first_error = None;
    for (delivery_id, outcome) in outcomes {
        match outcome {
            Ok(()) => delivery_ids.push(delivery_id),
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    if let Some(error) = first_error {
        return Err(ApiError::Unavailable(format!(
            "only {} of {total} redeliveries were queued: {error}; calling again queues the rest, \
             and may send those already queued a second time",
            delivery_ids.len()
        )));
    }
    let recovery = RecoveryRow {
        id: Uuid::now_v7(),
        tenant_id,
        range_from: range.from,
        range_to: range.to,
        requested_at,
        delivery_ids,
        skipped_format_changed: failed.counts.skipped,
        more: failed.more,
    };
    let mut conn = state.pool.get().await.map_err(StoreError::from)?;
    recoveries::insert(&mut conn, &recovery).await?;
    Ok(HttpResponse::Accepted().json(BulkRedelivered {
        recovery_id: recovery.id,
        redelivered: recovery.delivery_ids.len(),
        delivery_ids: recovery.delivery_ids,
        more: recovery.more,
        skipped_format_changed: recovery.skipped_format_changed,
    }))
}

/// How far a recovery got.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RecoveryStatus {
    id: Uuid,
    /// The range the bulk call covered: `from` inclusive, `to` exclusive.
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    /// When it was asked for: the manual attempts of its deliveries made since are its outcome.
    requested_at: DateTime<Utc>,
    /// The deliveries it queued again, oldest first.
    delivery_ids: Vec<Uuid>,
    /// Of those, a manual attempt since `requested_at` got a 2xx.
    delivered: i64,
    /// Of those, a manual attempt since `requested_at` ended without a 2xx.
    failed: i64,
    /// Of those, no manual attempt since `requested_at` has its outcome logged yet.
    pending: i64,
    /// Left out: their stored body was made for another format than the endpoint took then.
    skipped_format_changed: i64,
    /// More failed deliveries of the range were left for another call.
    more: bool,
}

#[utoipa::path(
    get,
    path = "/api/v2/webhooks/recoveries/{id}",
    tag = "logs",
    params(("id" = Uuid, Path, description = "A bulk redelivery's `recovery_id`")),
    responses(
        (status = 200, description = "The recovery and where its deliveries stand; `delivered + failed + pending` is the number it queued", body = RecoveryStatus),
        (status = 404, description = "No such recovery for this tenant", body = ErrorBody),
    ),
)]
pub async fn recovery(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant_id): AuthenticatedTenant,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = uuid_in_path(&path, "recovery")?;
    let mut conn = state.pool.get().await.map_err(StoreError::from)?;
    let recovery = recoveries::find(&mut conn, tenant_id, id)
        .await?
        .ok_or(ApiError::NotFound("recovery"))?;
    let progress =
        recoveries::progress(&mut conn, &recovery, fp_contracts::INTERRUPTED_ERROR_KIND).await?;
    Ok(HttpResponse::Ok().json(RecoveryStatus {
        id: recovery.id,
        from: recovery.range_from,
        to: recovery.range_to,
        requested_at: recovery.requested_at,
        delivery_ids: recovery.delivery_ids,
        delivered: progress.delivered,
        failed: progress.failed,
        pending: progress.pending,
        skipped_format_changed: recovery.skipped_format_changed,
        more: recovery.more,
    }))
}

/// The manual attempt that sends `delivery`'s stored request again, numbered after its last
/// attempt. Two redeliveries queued before the first is logged share a number; each attempt still
/// has its own id. With it, the stored trace context of the delivery's attempt.
fn redelivery_job(
    tenant_id: Uuid,
    delivery: StoredDelivery,
) -> Result<(DeliveryJob, StoredContext), ApiError> {
    let corrupt = |reason: String| {
        ApiError::Internal(anyhow::anyhow!(
            "stored attempt of delivery {}: {reason}",
            delivery.delivery_id
        ))
    };
    let event_type = delivery
        .event_type
        .parse::<EventType>()
        .map_err(|err| corrupt(err.to_string()))?;
    let attempt_number = u32::try_from(delivery.last_attempt_number)
        .ok()
        .and_then(|number| number.checked_add(1))
        .ok_or_else(|| corrupt("attempt number out of range".to_owned()))?;
    let trace = StoredContext {
        traceparent: delivery.traceparent,
        tracestate: delivery.tracestate,
    };
    Ok((
        DeliveryJob {
            delivery_id: DeliveryId(delivery.delivery_id),
            content: JobContent::Stored(StoredRequest {
                tenant_id,
                event_id: delivery.event_id,
                event_type,
                url: delivery.url,
                body: delivery.request_body,
            }),
            attempt_number,
            manual: true,
        },
        trace,
    ))
}

/// Publishes `job` to the dispatchers' retry queue; returns once the broker confirmed it.
///
/// The redelivery joins the trace of the event it sends again (stored with the attempt), and is linked to the request that asked for it; without a stored context it stays in
/// the request's trace.
async fn publish(
    state: &AppState,
    job: &DeliveryJob,
    trace: &StoredContext,
) -> Result<(), BrokerError> {
    let request = fp_telemetry::propagation::context(&tracing::Span::current());
    let span = tracing::info_span!(
        target: fp_telemetry::OTEL_TARGET,
        "redeliver",
        "fp.delivery_id" = %job.delivery_id,
        "fp.attempt" = job.attempt_number,
        "fp.manual" = true,
    );
    fp_telemetry::propagation::set_parent(
        &span,
        fp_telemetry::propagation::stored_context(&trace.traceparent, &trace.tracestate),
    );
    fp_telemetry::propagation::add_link(&span, &request);
    state
        .job_publisher
        .publish(&OutgoingMessage {
            exchange: "",
            routing_key: &state.broker_names.retry_queue,
            message_id: &format!("{}/{}", job.delivery_id, job.attempt_number),
            parent: None,
            payload: &fp_contracts::encode_job(job),
            headers: &[],
            expiration: None,
        })
        .instrument(span.clone())
        .await
        .inspect_err(|error| tracing::warn!(%error, "could not queue a redelivery"))?;
    tracing::info!(
        trace_id = %fp_telemetry::propagation::trace_id(&span),
        delivery_id = %job.delivery_id,
        attempt_number = job.attempt_number,
        "manual redelivery queued"
    );
    Ok(())
}
