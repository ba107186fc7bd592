//! `GET` and `PUT /api/v2/webhooks/config`: the tenant's endpoint, events and secret.

use std::collections::BTreeSet;

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use fp_domain::EventType;
use fp_store::webhook_config::{self, WebhookConfigRow};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::AuthenticatedTenant;
use crate::error::ApiError;
use crate::json_body::JsonBody;

const MAX_URL_LENGTH: usize = 2048;
const SECRET_LENGTH: std::ops::RangeInclusive<usize> = 8..=256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigRequest {
    url: String,
    events: Vec<String>,
    secret: Option<String>,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

/// The config as tenants see it: never the secret, only whether one is set.
#[derive(Serialize)]
struct ConfigResponse {
    url: String,
    events: Vec<String>,
    enabled: bool,
    secret_set: bool,
    updated_at: DateTime<Utc>,
}

impl From<WebhookConfigRow> for ConfigResponse {
    fn from(row: WebhookConfigRow) -> Self {
        ConfigResponse {
            url: row.url,
            events: row.events,
            enabled: row.enabled,
            secret_set: row.secret.is_some(),
            updated_at: row.updated_at,
        }
    }
}

pub async fn get(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant_id): AuthenticatedTenant,
) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.get().await.map_err(fp_store::StoreError::from)?;
    let config = webhook_config::find(&mut conn, tenant_id)
        .await?
        .ok_or(ApiError::NotFound("webhook config"))?;
    Ok(HttpResponse::Ok().json(ConfigResponse::from(config)))
}

pub async fn put(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant_id): AuthenticatedTenant,
    JsonBody(request): JsonBody<ConfigRequest>,
) -> Result<HttpResponse, ApiError> {
    let row = validate(&state, tenant_id, request)?;
    let mut conn = state.pool.get().await.map_err(fp_store::StoreError::from)?;
    webhook_config::upsert(&mut conn, &row).await?;
    tracing::info!(%tenant_id, url = %row.url, "webhook config saved");
    Ok(HttpResponse::Ok().json(ConfigResponse::from(row)))
}

fn validate(
    state: &AppState,
    tenant_id: uuid::Uuid,
    request: ConfigRequest,
) -> Result<WebhookConfigRow, ApiError> {
    if request.url.len() > MAX_URL_LENGTH {
        return Err(ApiError::invalid(
            "url",
            format!("must be at most {MAX_URL_LENGTH} characters"),
        ));
    }
    let checked = state
        .policy
        .check_url(&request.url)
        .map_err(|blocked| ApiError::invalid("url", blocked.to_string()))?;
    if request.events.is_empty() {
        return Err(ApiError::invalid(
            "events",
            "subscribe to at least one event type",
        ));
    }
    let events = request
        .events
        .iter()
        .enumerate()
        .map(|(index, name)| {
            name.parse::<EventType>()
                .map_err(|err| ApiError::invalid(format!("events[{index}]"), err.to_string()))
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    if let Some(secret) = &request.secret
        && !SECRET_LENGTH.contains(&secret.chars().count())
    {
        return Err(ApiError::invalid(
            "secret",
            format!(
                "must be {} to {} characters long",
                SECRET_LENGTH.start(),
                SECRET_LENGTH.end()
            ),
        ));
    }
    Ok(WebhookConfigRow {
        tenant_id,
        url: checked.url.to_string(),
        events: events
            .iter()
            .map(|event| event.as_str().to_owned())
            .collect(),
        secret: request.secret,
        enabled: request.enabled,
        updated_at: Utc::now(),
    })
}
