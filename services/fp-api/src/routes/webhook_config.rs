//! `GET` and `PUT /api/v2/webhooks/config`: the tenant's endpoint, events and secret.
//!
//! Saving a different secret rotates it: the replaced secret still signs deliveries (a second
//! `webhook-signature` entry) until the grace period (`api.secret_rotation_grace`) ends, so a
//! receiver can switch to the new secret without rejecting a delivery.

use std::collections::BTreeSet;

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use fp_delivery::ResolveRefused;
use fp_domain::EventType;
use fp_domain::address_policy::{Blocked, TargetHost};
use fp_domain::format;
use fp_domain::secret_box::{self, MasterKey};
use fp_domain::url_redaction::redact_url;
use fp_store::webhook_config::{self, EndpointHealth, WebhookConfigRow};
use fp_store::{AsyncConnection, StoreError};
use ring::rand::SecureRandom;
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use crate::AppState;
use crate::auth::AuthenticatedTenant;
use crate::error::{ApiError, ErrorBody};
use crate::json_body::JsonBody;

const MAX_URL_LENGTH: usize = 2048;
const SECRET_LENGTH: std::ops::RangeInclusive<usize> = 8..=256;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigRequest {
    /// An https URL that passes the SSRF policy.
    #[schema(
        max_length = 2048,
        pattern = "^https://",
        example = "https://hooks.example.com/feedbackpulse"
    )]
    url: String,
    /// The event types to deliver, at least one; duplicates are folded.
    #[schema(schema_with = subscribable_events)]
    events: Vec<String>,
    /// Absent: keep the stored secret; `null`: remove it; a string: set it, or rotate to it. So a
    /// client that never sees the secret (the dashboard) can save the rest without touching it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable, min_length = 8, max_length = 256)]
    secret: Option<Option<String>>,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
}

/// The `events` schema, listing exactly the types the validation below accepts.
fn subscribable_events() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(
            utoipa::openapi::schema::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String)
                .enum_values(Some(EventType::SUBSCRIBABLE.map(EventType::as_str))),
        )
        .min_items(Some(1))
        .build()
}

fn enabled_by_default() -> bool {
    true
}

/// Marks a field that is in the body, even as `null`, as `Some`; with `#[serde(default)]` an
/// absent field stays `None`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// What a save does to the secret.
enum SecretChange {
    Keep,
    Remove,
    /// Set or rotate to `plaintext`; `sealed` is sealed ahead, used only if the secret changes.
    Set {
        plaintext: String,
        sealed: Vec<u8>,
    },
}

/// A request that passed every check, to be saved.
struct ValidConfig {
    url: String,
    events: Vec<String>,
    secret: SecretChange,
    enabled: bool,
}

/// The secret columns of a row.
#[derive(Debug, Default, PartialEq, Eq)]
struct SecretColumns {
    current: Option<Vec<u8>>,
    /// The replaced secret and the end of its grace period.
    previous: Option<(Vec<u8>, DateTime<Utc>)>,
}

/// The secrets to save, from the stored row and the request's change; `rotation_ends` is when a
/// secret replaced now stops signing. Only the last replaced secret stays in grace: rotating again
/// within the period ends the older one's at once.
fn next_secrets(
    change: &SecretChange,
    stored: Option<&WebhookConfigRow>,
    master_key: &MasterKey,
    tenant_id: Uuid,
    now: DateTime<Utc>,
    rotation_ends: DateTime<Utc>,
) -> SecretColumns {
    let stored_current = stored.and_then(|row| row.secret_sealed.clone());
    // A replaced secret whose grace is over signs nothing, so it is not carried on.
    let stored_previous = stored.and_then(|row| {
        match (&row.previous_secret_sealed, row.previous_secret_expires_at) {
            (Some(sealed), Some(until)) if now < until => Some((sealed.clone(), until)),
            _ => None,
        }
    });
    match change {
        SecretChange::Keep => SecretColumns {
            previous: stored_previous.filter(|_| stored_current.is_some()),
            current: stored_current,
        },
        SecretChange::Remove => SecretColumns::default(),
        SecretChange::Set { plaintext, sealed } => match stored_current {
            None => SecretColumns {
                current: Some(sealed.clone()),
                previous: None,
            },
            // Saving the same secret again is no rotation. A stored secret that does not open
            // counts as different: the new one replaces it.
            Some(current)
                if secret_box::open(master_key, tenant_id, &current)
                    .is_ok_and(|stored| stored == *plaintext) =>
            {
                SecretColumns {
                    current: Some(current),
                    previous: stored_previous,
                }
            }
            Some(current) => SecretColumns {
                current: Some(sealed.clone()),
                previous: Some((current, rotation_ends)),
            },
        },
    }
}

/// The config as tenants see it: never the secret, only whether one is set.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ConfigResponse {
    url: String,
    events: Vec<String>,
    enabled: bool,
    /// How deliveries are formatted for this URL: `custom`, `slack` or `discord`.
    #[schema(value_type = String)]
    format: &'static str,
    secret_set: bool,
    /// While a replaced secret still signs deliveries (next to the current one), when it stops.
    secret_rotating_until: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    /// Start of the current run of failed deliveries, if the endpoint is failing.
    failing_since: Option<DateTime<Utc>>,
    /// Set when FeedbackPulse disabled the endpoint; saving the config again re-enables it.
    disabled_at: Option<DateTime<Utc>>,
    disabled_reason: Option<String>,
}

impl ConfigResponse {
    fn new(row: WebhookConfigRow, health: EndpointHealth, now: DateTime<Utc>) -> Self {
        let format = url::Url::parse(&row.url)
            .map(|url| format::detect(&url))
            .unwrap_or(format::EndpointFormat::Custom);
        ConfigResponse {
            url: row.url,
            events: row.events,
            enabled: row.enabled,
            format: format.as_str(),
            secret_set: row.secret_sealed.is_some(),
            secret_rotating_until: row.previous_secret_expires_at.filter(|until| {
                row.secret_sealed.is_some() && row.previous_secret_sealed.is_some() && now < *until
            }),
            updated_at: row.updated_at,
            failing_since: health.failing_since,
            disabled_at: health.disabled_at,
            disabled_reason: health.disabled_reason,
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/v2/webhooks/config",
    tag = "webhooks",
    responses(
        (status = 200, description = "The config, without the secret", body = ConfigResponse),
        (status = 404, description = "The tenant has no webhook config", body = ErrorBody),
    ),
)]
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
    Ok(HttpResponse::Ok().json(ConfigResponse::new(config, health, Utc::now())))
}

#[utoipa::path(
    delete,
    path = "/api/v2/webhooks/config",
    tag = "webhooks",
    responses(
        (status = 204, description = "Removed; deliveries stop within the dispatchers' cache time"),
        (status = 404, description = "The tenant has no webhook config", body = ErrorBody),
    ),
)]
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

#[utoipa::path(
    put,
    path = "/api/v2/webhooks/config",
    tag = "webhooks",
    request_body = ConfigRequest,
    responses(
        (status = 200, description = "Saved (which also re-enables an auto-disabled endpoint)", body = ConfigResponse),
        (status = 422, description = "A field is invalid; `field` names it. For `url`, the SSRF policy's reason, and `reason` the kind of address the host points to (never the address)", body = ErrorBody),
    ),
)]
pub async fn put(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant_id): AuthenticatedTenant,
    JsonBody(request): JsonBody<ConfigRequest>,
) -> Result<HttpResponse, ApiError> {
    let config = validate(&state, tenant_id, request).await?;
    let now = Utc::now();
    let rotation_ends = now
        .checked_add_signed(state.secret_rotation_grace)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("secret rotation grace out of range")))?;
    let mut conn = state.pool.get().await.map_err(StoreError::from)?;
    // Read and write in one transaction, the row locked: of two concurrent rotations the later
    // one reads the earlier one's secret and keeps it in grace, rather than both replacing the
    // same old secret and losing the other's.
    let row = conn
        .transaction(async |conn| {
            let stored = webhook_config::find_for_update(conn, tenant_id).await?;
            let secrets = next_secrets(
                &config.secret,
                stored.as_ref(),
                &state.master_key,
                tenant_id,
                now,
                rotation_ends,
            );
            let (previous_secret_sealed, previous_secret_expires_at) = secrets.previous.unzip();
            let row = WebhookConfigRow {
                tenant_id,
                url: config.url.clone(),
                events: config.events.clone(),
                secret_sealed: secrets.current,
                previous_secret_sealed,
                previous_secret_expires_at,
                enabled: config.enabled,
                updated_at: now,
            };
            webhook_config::upsert(conn, &row).await?;
            Ok::<_, StoreError>(row)
        })
        .await?;
    tracing::info!(
        %tenant_id,
        url = %redact_url(&row.url),
        secret_rotating = row.previous_secret_sealed.is_some(),
        "webhook config saved"
    );
    // Saving clears any failure record, so the saved config is healthy by definition.
    Ok(HttpResponse::Ok().json(ConfigResponse::new(row, EndpointHealth::default(), now)))
}

async fn validate(
    state: &AppState,
    tenant_id: Uuid,
    request: ConfigRequest,
) -> Result<ValidConfig, ApiError> {
    // Said plainly: the URL parser would call an empty one "relative URL without a base".
    if request.url.trim().is_empty() {
        return Err(ApiError::invalid("url", "URL is required"));
    }
    if request.url.len() > MAX_URL_LENGTH {
        return Err(ApiError::invalid(
            "url",
            format!("must be at most {MAX_URL_LENGTH} characters"),
        ));
    }
    let checked = state
        .policy
        .check_url(&request.url)
        .map_err(ApiError::UrlNotAllowed)?;
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
            // `webhook.test` is a known type but goes out only on request, never by subscription.
            let event = name.parse::<EventType>().map_err(|err| err.to_string());
            event
                .and_then(|event| event.subscribable().map_err(|err| err.to_string()))
                .map_err(|message| ApiError::invalid(format!("events[{index}]"), message))
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    if let Some(Some(secret)) = &request.secret
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
    let secret = match request.secret {
        None => SecretChange::Keep,
        Some(None) => SecretChange::Remove,
        Some(Some(plaintext)) => SecretChange::Set {
            sealed: seal_secret(state, tenant_id, &plaintext)?,
            plaintext,
        },
    };
    Ok(ValidConfig {
        url: checked.url.to_string(),
        events: events
            .iter()
            .map(|event| event.as_str().to_owned())
            .collect(),
        secret,
        enabled: request.enabled,
    })
}

/// Seals the secret under the master key with a fresh random nonce; only the sealed bytes are stored.
fn seal_secret(state: &AppState, tenant_id: Uuid, secret: &str) -> Result<Vec<u8>, ApiError> {
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
/// policy's reason in the words tenants get (the kind of address, not the address: `fpctl
/// check-url` names that for operators). A name that does not resolve (not yet created,
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
        Err(ResolveRefused::Blocked(blocked)) => Err(ApiError::UrlNotAllowed(blocked)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: [u8; 12] = [9; 12];

    fn key() -> MasterKey {
        MasterKey::from_hex(&"42".repeat(32)).expect("valid key")
    }

    fn tenant() -> Uuid {
        Uuid::from_u128(7)
    }

    fn sealed(plaintext: &str) -> Vec<u8> {
        secret_box::seal(&key(), NONCE, tenant(), plaintext)
    }

    fn set(plaintext: &str) -> SecretChange {
        SecretChange::Set {
            plaintext: plaintext.to_owned(),
            sealed: sealed(plaintext),
        }
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).expect("valid time")
    }

    fn row(current: Option<&str>, previous: Option<(&str, i64)>) -> WebhookConfigRow {
        WebhookConfigRow {
            tenant_id: tenant(),
            url: "https://hooks.example/".into(),
            events: vec!["submission.created".into()],
            secret_sealed: current.map(sealed),
            previous_secret_sealed: previous.map(|(secret, _)| sealed(secret)),
            previous_secret_expires_at: previous.map(|(_, until)| at(until)),
            enabled: true,
            updated_at: at(0),
        }
    }

    const NOW: i64 = 1_000;
    const ENDS: i64 = 1_000 + 86_400;

    fn next(change: &SecretChange, stored: Option<&WebhookConfigRow>) -> SecretColumns {
        next_secrets(change, stored, &key(), tenant(), at(NOW), at(ENDS))
    }

    #[test]
    fn a_different_secret_rotates_and_keeps_the_old_one_until_the_grace_ends() {
        let stored = row(Some("secret-A-value"), None);
        assert_eq!(
            next(&set("secret-B-value"), Some(&stored)),
            SecretColumns {
                current: Some(sealed("secret-B-value")),
                previous: Some((sealed("secret-A-value"), at(ENDS))),
            }
        );
        // Rotating again within the grace keeps only the secret replaced last.
        let rotating = row(Some("secret-B-value"), Some(("secret-A-value", NOW + 5)));
        assert_eq!(
            next(&set("secret-C-value"), Some(&rotating)),
            SecretColumns {
                current: Some(sealed("secret-C-value")),
                previous: Some((sealed("secret-B-value"), at(ENDS))),
            }
        );
    }

    #[test]
    fn the_same_secret_again_is_no_rotation() {
        let rotating = row(Some("secret-B-value"), Some(("secret-A-value", NOW + 5)));
        assert_eq!(
            next(&set("secret-B-value"), Some(&rotating)),
            SecretColumns {
                current: Some(sealed("secret-B-value")),
                previous: Some((sealed("secret-A-value"), at(NOW + 5))),
            }
        );
    }

    #[test]
    fn a_first_secret_is_set_without_a_previous_one() {
        for stored in [None, Some(row(None, None))] {
            assert_eq!(
                next(&set("secret-A-value"), stored.as_ref()),
                SecretColumns {
                    current: Some(sealed("secret-A-value")),
                    previous: None,
                }
            );
        }
    }

    #[test]
    fn an_absent_secret_keeps_both_and_null_removes_both() {
        let rotating = row(Some("secret-B-value"), Some(("secret-A-value", NOW + 5)));
        assert_eq!(
            next(&SecretChange::Keep, Some(&rotating)),
            SecretColumns {
                current: Some(sealed("secret-B-value")),
                previous: Some((sealed("secret-A-value"), at(NOW + 5))),
            }
        );
        assert_eq!(next(&SecretChange::Keep, None), SecretColumns::default());
        assert_eq!(
            next(&SecretChange::Remove, Some(&rotating)),
            SecretColumns::default()
        );
    }

    #[test]
    fn an_expired_previous_secret_is_dropped_on_save() {
        let expired = row(Some("secret-B-value"), Some(("secret-A-value", NOW)));
        assert_eq!(next(&SecretChange::Keep, Some(&expired)).previous, None);
        assert_eq!(next(&set("secret-B-value"), Some(&expired)).previous, None);
    }

    #[test]
    fn a_stored_secret_that_does_not_open_counts_as_different() {
        let mut stored = row(None, None);
        let unopenable = secret_box::seal(
            &MasterKey::from_hex(&"17".repeat(32)).expect("valid key"),
            NONCE,
            tenant(),
            "secret-B-value",
        );
        stored.secret_sealed = Some(unopenable.clone());
        assert_eq!(
            next(&set("secret-B-value"), Some(&stored)),
            SecretColumns {
                current: Some(sealed("secret-B-value")),
                previous: Some((unopenable, at(ENDS))),
            }
        );
    }

    #[test]
    fn the_secret_field_tells_absent_from_null() {
        let decode = |body: &str| {
            serde_json::from_str::<ConfigRequest>(body)
                .map(|request| request.secret)
                .map_err(|error| error.to_string())
        };
        let base = r#""url": "https://hooks.example/", "events": ["submission.created"]"#;
        assert_eq!(decode(&format!("{{{base}}}")), Ok(None));
        assert_eq!(
            decode(&format!(r#"{{{base}, "secret": null}}"#)),
            Ok(Some(None))
        );
        assert_eq!(
            decode(&format!(r#"{{{base}, "secret": "secret-A-value"}}"#)),
            Ok(Some(Some("secret-A-value".to_owned())))
        );
        assert!(decode(&format!(r#"{{{base}, "secret": 5}}"#)).is_err());
        assert!(decode(&format!(r#"{{{base}, "secrets": "x"}}"#)).is_err());
    }
}
