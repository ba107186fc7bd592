//! `GET` and `PUT /api/v2/webhooks/config`: the tenant's endpoint, events and secret.

use std::collections::BTreeSet;

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use fp_delivery::ResolveRefused;
use fp_domain::EventType;
use fp_domain::address_policy::{Blocked, TargetHost};
use fp_domain::format;
use fp_domain::secret_box;
use fp_store::webhook_config::{self, EndpointHealth, WebhookConfigRow};
use ring::rand::SecureRandom;
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
    /// How deliveries are formatted for this URL: `custom`, `slack` or `discord`.
    format: &'static str,
    secret_set: bool,
    updated_at: DateTime<Utc>,
    /// Start of the current run of failed deliveries, if the endpoint is failing.
    failing_since: Option<DateTime<Utc>>,
    /// Set when FeedbackPulse disabled the endpoint; saving the config again re-enables it.
    disabled_at: Option<DateTime<Utc>>,
    disabled_reason: Option<String>,
}

impl ConfigResponse {
    fn new(row: WebhookConfigRow, health: EndpointHealth) -> Self {
        let format = url::Url::parse(&row.url)
            .map(|url| format::detect(&url))
            .unwrap_or(format::EndpointFormat::Custom);
        ConfigResponse {
            url: row.url,
            events: row.events,
            enabled: row.enabled,
            format: format.as_str(),
            secret_set: row.secret_sealed.is_some(),
            updated_at: row.updated_at,
            failing_since: health.failing_since,
            disabled_at: health.disabled_at,
            disabled_reason: health.disabled_reason,
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
    let health = webhook_config::health(&mut conn, tenant_id)
        .await?
        .unwrap_or_default();
    Ok(HttpResponse::Ok().json(ConfigResponse::new(config, health)))
}

pub async fn delete(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant_id): AuthenticatedTenant,
) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.get().await.map_err(fp_store::StoreError::from)?;
    if !webhook_config::delete(&mut conn, tenant_id).await? {
        return Err(ApiError::NotFound("webhook config"));
    }
    tracing::info!(%tenant_id, "webhook config deleted");
    Ok(HttpResponse::NoContent().finish())
}

pub async fn put(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant_id): AuthenticatedTenant,
    JsonBody(request): JsonBody<ConfigRequest>,
) -> Result<HttpResponse, ApiError> {
    let row = validate(&state, tenant_id, request).await?;
    let mut conn = state.pool.get().await.map_err(fp_store::StoreError::from)?;
    webhook_config::upsert(&mut conn, &row).await?;
    tracing::info!(%tenant_id, url = %row.url, "webhook config saved");
    // Saving clears any failure record, so the saved config is healthy by definition.
    Ok(HttpResponse::Ok().json(ConfigResponse::new(row, EndpointHealth::default())))
}

async fn validate(
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
    // Last, as the only check that waits on the network.
    check_resolved_host(state, &checked.host).await?;
    Ok(WebhookConfigRow {
        tenant_id,
        url: checked.url.to_string(),
        events: events
            .iter()
            .map(|event| event.as_str().to_owned())
            .collect(),
        secret_sealed: request
            .secret
            .map(|secret| seal_secret(state, tenant_id, &secret))
            .transpose()?,
        enabled: request.enabled,
        updated_at: Utc::now(),
    })
}

/// Seals the secret under the master key with a fresh random nonce; only the sealed bytes are stored.
fn seal_secret(state: &AppState, tenant_id: uuid::Uuid, secret: &str) -> Result<Vec<u8>, ApiError> {
    let mut nonce = [0u8; 12];
    state
        .rng
        .fill(&mut nonce)
        .map_err(|_| ApiError::Internal(anyhow::anyhow!("the system random generator failed")))?;
    Ok(secret_box::seal(
        &state.master_key,
        nonce,
        tenant_id,
        secret,
    ))
}

/// Resolves a named host as the dispatcher will and refuses it if any answer is blocked, with the
/// reason the dispatcher and `fpctl check-url` give. A name that does not resolve (not yet created,
/// DNS down) is accepted: that is no reason to refuse the save, and every delivery judges its
/// answers again.
async fn check_resolved_host(state: &AppState, host: &TargetHost) -> Result<(), ApiError> {
    let TargetHost::Name(name) = host else {
        // IP literals were judged by `check_url` and are never resolved.
        return Ok(());
    };
    match state.resolver.resolve_checked(name).await {
        Ok(_) => Ok(()),
        Err(
            unresolved @ (ResolveRefused::Lookup(_)
            | ResolveRefused::Blocked(Blocked::NoAddresses(_))),
        ) => {
            tracing::info!(
                host = %name,
                reason = %unresolved,
                "webhook host does not resolve yet; saved anyway, every delivery checks it"
            );
            Ok(())
        }
        Err(ResolveRefused::Blocked(blocked)) => Err(ApiError::invalid("url", blocked.to_string())),
    }
}
