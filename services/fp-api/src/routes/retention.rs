//! `GET` and `PUT /api/v2/webhooks/retention`: how long the tenant's delivery records and their
//! payloads are kept. The platform keeps records for `retention.max_days`; the tenant may have
//! payloads (request and response bodies and headers) cleared sooner (`fp_domain::retention`).
//! A route of its own, not a field of the webhook config: it holds without a config too.

use actix_web::{HttpResponse, web};
use chrono::Utc;
use fp_domain::retention::{self, RetentionInForce};
use fp_store::StoreError;
use fp_store::payload_retention;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::AuthenticatedTenant;
use crate::error::{ApiError, ErrorBody};
use crate::json_body::JsonBody;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionChange {
    /// Days to keep payloads, from 1 to `record_days`; `null` keeps them as long as the records.
    /// Required, so a body that forgot it changes nothing.
    #[serde(deserialize_with = "Option::deserialize")]
    #[schema(required = true, nullable, minimum = 1, example = 7)]
    payload_days: Option<i64>,
}

/// The retention in force for the tenant.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RetentionResponse {
    /// The tenant's own payload retention in days; `null` when it chose none.
    #[schema(minimum = 1)]
    payload_days: Option<u32>,
    /// How many days payloads are kept: `payload_days`, at most `record_days`. After that an
    /// attempt's request and response bodies and headers are cleared (its log entry says
    /// `payload_cleared`); the rest of the record stays.
    #[schema(minimum = 1)]
    payload_days_in_force: u32,
    /// How many days delivery records are kept: the platform's maximum (`retention.max_days`).
    #[schema(minimum = 1)]
    record_days: u32,
}

impl From<RetentionInForce> for RetentionResponse {
    fn from(retention: RetentionInForce) -> Self {
        RetentionResponse {
            payload_days: retention.tenant_payload_days,
            payload_days_in_force: retention.payload_days,
            record_days: retention.record_days,
        }
    }
}

/// The tenant's stored days as the domain counts them; the column's check keeps them positive.
fn stored_days(days: Option<i32>) -> Option<u32> {
    days.and_then(|days| u32::try_from(days).ok())
}

#[utoipa::path(
    get,
    path = "/api/v2/webhooks/retention",
    tag = "webhooks",
    responses(
        (status = 200, description = "How long delivery records and their payloads are kept", body = RetentionResponse),
    ),
)]
pub async fn get(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant_id): AuthenticatedTenant,
) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.get().await.map_err(StoreError::from)?;
    let days = stored_days(payload_retention::find(&mut conn, tenant_id).await?);
    Ok(
        HttpResponse::Ok().json(RetentionResponse::from(retention::in_force(
            days,
            state.retention_max_days,
        ))),
    )
}

#[utoipa::path(
    put,
    path = "/api/v2/webhooks/retention",
    tag = "webhooks",
    request_body = RetentionChange,
    responses(
        (status = 200, description = "Saved; payloads older than the new retention are cleared by the next maintenance run", body = RetentionResponse),
        (status = 422, description = "`payload_days` is missing, below 1 or above the platform maximum (`record_days`)", body = ErrorBody),
    ),
)]
pub async fn put(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant_id): AuthenticatedTenant,
    JsonBody(change): JsonBody<RetentionChange>,
) -> Result<HttpResponse, ApiError> {
    let days = change
        .payload_days
        .map(|days| retention::check_payload_days(days, state.retention_max_days))
        .transpose()
        .map_err(|refusal| ApiError::invalid("payload_days", refusal.to_string()))?;
    let stored = days
        .map(|days| {
            i32::try_from(days).map_err(|_| {
                ApiError::Internal(anyhow::anyhow!("retention.max_days beyond an i32"))
            })
        })
        .transpose()?;
    let mut conn = state.pool.get().await.map_err(StoreError::from)?;
    payload_retention::set(&mut conn, tenant_id, stored, Utc::now()).await?;
    tracing::info!(%tenant_id, payload_days = ?days, "payload retention saved");
    Ok(
        HttpResponse::Ok().json(RetentionResponse::from(retention::in_force(
            days,
            state.retention_max_days,
        ))),
    )
}
