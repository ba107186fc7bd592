//! Manual redelivery: `POST /api/v2/webhooks/logs/{id}/redeliver` sends the request of one logged
//! attempt again; `POST /api/v2/webhooks/logs/redeliver` does so for the failed deliveries of a
//! time range.
//!
//! What goes out is the exact body stored with the attempt (as Stripe and Svix redeliver), signed
//! anew with the endpoint's current secrets and a fresh timestamp, under the same delivery id. It
//! is one attempt, marked manual, never retried automatically. The job is published with
//! publisher confirms straight to the dispatchers' retry queue, so a 202 means the broker has it
//! and a broker failure answers 503: no redelivery is lost without the caller knowing.
//!
//! Both are rate-limited per tenant (`api.rate_limits`): single redeliveries by count, bulk ones by
//! the deliveries they queue, so a tenant cannot aim a flood at any URL; over a limit, a 429.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, TimeDelta, Utc};
use fp_broker::{BrokerError, OutgoingMessage};
use fp_contracts::{DeliveryJob, JobContent, StoredRequest};
use fp_domain::rate_limit::{LimitedAction, bulk_cost};
use fp_domain::{DeliveryId, EventType};
use fp_store::StoreError;
use fp_store::attempts::{self, StoredDelivery};
use fp_telemetry::propagation::StoredContext;
use futures_util::{StreamExt, stream};
use serde::{Deserialize, Deserializer, Serialize};
use tracing::Instrument;
use uuid::Uuid;

use super::test_event::enabled_config;
use super::uuid_in_path;
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
        (status = 202, description = "One more attempt of the delivery is queued (same delivery id, marked manual)", body = Redelivered),
        (status = 404, description = "No such entry for this tenant", body = ErrorBody),
        (status = 409, description = "No webhook config, it is disabled, or its URL changed since", body = ErrorBody),
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
    let config = enabled_config(&mut conn, tenant_id).await?;
    if delivery.url != config.url {
        return Err(ApiError::Conflict(format!(
            "the webhook endpoint changed since this delivery: it went to {}, the config now names \
             {}; a delivery is sent again only to the URL it went to",
            delivery.url, config.url
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
    DateTime::parse_from_rfc3339(&text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|err| {
            serde::de::Error::custom(format!(
                "must be an RFC 3339 time such as 2024-03-15T10:30:00Z: {err}"
            ))
        })
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct BulkRedelivered {
    redelivered: usize,
    delivery_ids: Vec<Uuid>,
    /// More failed deliveries of the range are left for another call (also when the tenant's bulk
    /// redelivery limit cut this call short).
    more: bool,
    /// Failed deliveries of the range that went to another URL than the config names now.
    skipped_endpoint_changed: i64,
}

#[utoipa::path(
    post,
    path = "/api/v2/webhooks/logs/redeliver",
    tag = "logs",
    request_body = BulkRequest,
    responses(
        (status = 202, description = "The failed deliveries of the range (up to 1000, oldest first, and no more than the tenant's bulk redelivery limit has left) are queued again", body = BulkRedelivered),
        (status = 409, description = "No webhook config, or it is disabled", body = ErrorBody),
        (status = 422, description = "A field is invalid; `field` names it", body = ErrorBody),
        (status = 429, description = "The tenant's bulk redelivery limit (`api.rate_limits.bulk_redelivery`, counted in deliveries queued) is used up; nothing was queued. `Retry-After` says when one is free again", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the action is allowed again"))),
        (status = 503, description = "The broker did not take every job; the message says how many were queued", body = ErrorBody),
    ),
)]
pub async fn redeliver_failed(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant_id): AuthenticatedTenant,
    JsonBody(range): JsonBody<BulkRequest>,
) -> Result<HttpResponse, ApiError> {
    if range.from >= range.to {
        return Err(ApiError::invalid("to", "must be later than `from`"));
    }
    if range.to - range.from > TimeDelta::days(MAX_BULK_RANGE_DAYS) {
        return Err(ApiError::invalid(
            "to",
            format!(
                "must be at most {MAX_BULK_RANGE_DAYS} days after `from`; redeliver a longer \
                 period in several calls"
            ),
        ));
    }
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
        &config.url,
        MAX_BULK.min(i64::from(room)),
    )
    .await?;
    let granted = rate_limit::take(
        &mut conn,
        tenant_id,
        LimitedAction::BulkRedelivery,
        limit,
        bulk_cost(failed.sent_to_url.len()),
    )
    .await?;
    drop(conn);
    // Other calls may have spent part of the room in between: the rest waits for another call.
    let granted = usize::try_from(granted).unwrap_or(usize::MAX);
    if failed.sent_to_url.len() > granted {
        failed.sent_to_url.truncate(granted);
        failed.more = true;
    }
    let jobs = failed
        .sent_to_url
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
    Ok(HttpResponse::Accepted().json(BulkRedelivered {
        redelivered: delivery_ids.len(),
        delivery_ids,
        more: failed.more,
        skipped_endpoint_changed: failed.sent_elsewhere,
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
