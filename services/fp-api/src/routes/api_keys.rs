//! `/api/v2/api-keys`: a tenant's own keys. Several may be live at once, so a key can be replaced
//! without downtime (issue the new one, deploy it, revoke the old one). Only an API key manages
//! keys: a dashboard session gets a 403, so a stolen cookie cannot mint a lasting credential.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use fp_domain::api_key::{IssuedKey, MAX_NAME_CHARS};
use fp_store::StoreError;
use fp_store::identity::{self, ApiKeyRow, KeyIssue, KeyOwner};
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::uuid_in_path;
use crate::AppState;
use crate::auth::TenantKey;
use crate::error::{ApiError, ErrorBody};
use crate::json_body::JsonBody;

/// Live keys a tenant may hold at once; enough for every service and a rotation in progress.
const MAX_LIVE_KEYS: i64 = 20;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// A label to tell keys apart, e.g. "billing service".
    #[serde(default)]
    #[schema(max_length = 100)]
    name: String,
}

/// A key as lists show it: the first characters only.
#[derive(Serialize, utoipa::ToSchema)]
pub struct KeySummary {
    id: Uuid,
    name: String,
    prefix: String,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKeyRow> for KeySummary {
    fn from(row: ApiKeyRow) -> Self {
        KeySummary {
            id: row.id,
            name: row.name,
            prefix: row.key_prefix,
            created_at: row.created_at,
            revoked_at: row.revoked_at,
        }
    }
}

/// The answer to a create: the one time the key itself is shown.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    summary: KeySummary,
    key: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyList {
    data: Vec<KeySummary>,
}

#[utoipa::path(
    post,
    path = "/api/v2/api-keys",
    tag = "api keys",
    request_body = CreateKeyRequest,
    responses(
        (status = 201, description = "The new key; `key` is shown only this once", body = CreatedKey),
        (status = 409, description = "The tenant holds the most live keys allowed", body = ErrorBody),
        (status = 422, description = "A field is invalid; `field` names it", body = ErrorBody),
    ),
)]
pub async fn create(
    state: web::Data<AppState>,
    TenantKey {
        tenant_id,
        key_id: issuer,
    }: TenantKey,
    JsonBody(request): JsonBody<CreateKeyRequest>,
) -> Result<HttpResponse, ApiError> {
    // The limit is on the name as sent, as the OpenAPI document's maxLength says; the stored
    // label is trimmed after.
    if request.name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::invalid(
            "name",
            format!("must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    let name = request.name.trim();
    let mut random = [0u8; 32];
    state
        .rng
        .fill(&mut random)
        .map_err(|_| ApiError::Internal(anyhow::anyhow!("the system random generator failed")))?;
    let issued = IssuedKey::from_random(random);
    let mut conn = state.pool.get().await.map_err(StoreError::from)?;
    let row = match identity::create_tenant_api_key_within_limit(
        &mut conn,
        tenant_id,
        issuer,
        MAX_LIVE_KEYS,
        name,
        &issued.hash,
        &issued.prefix,
    )
    .await?
    {
        KeyIssue::Issued(row) => row,
        KeyIssue::AtLimit => {
            return Err(ApiError::Conflict(format!(
                "a tenant may hold at most {MAX_LIVE_KEYS} live keys: revoke one first"
            )));
        }
        KeyIssue::IssuerNotLive => {
            tracing::info!(%tenant_id, key_id = %issuer, "a key revoked meanwhile asked for a new one; refused");
            return Err(ApiError::Unauthorized);
        }
    };
    tracing::info!(%tenant_id, key_id = %row.id, "api key issued");
    Ok(HttpResponse::Created().json(CreatedKey {
        summary: row.into(),
        key: issued.key,
    }))
}

#[utoipa::path(
    get,
    path = "/api/v2/api-keys",
    tag = "api keys",
    responses((status = 200, description = "The tenant's keys, oldest first, revoked ones included", body = KeyList)),
)]
pub async fn list(
    state: web::Data<AppState>,
    TenantKey { tenant_id, .. }: TenantKey,
) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.get().await.map_err(StoreError::from)?;
    let keys = identity::list_api_keys(&mut conn, KeyOwner::Tenant(tenant_id)).await?;
    Ok(HttpResponse::Ok().json(KeyList {
        data: keys.into_iter().map(KeySummary::from).collect(),
    }))
}

/// Revokes the key: this api instance refuses it from the next request on, every other one once
/// the revocation's notification (sent at commit) reaches it; until then a revoked key cached
/// there still works, but cannot issue a key. Revoking a revoked key is a no-op. The key in use
/// may revoke itself.
#[utoipa::path(
    delete,
    path = "/api/v2/api-keys/{id}",
    tag = "api keys",
    params(("id" = Uuid, Path, description = "The key's `id`")),
    responses(
        (status = 200, description = "The key, now revoked", body = KeySummary),
        (status = 404, description = "No such key for this tenant", body = ErrorBody),
    ),
)]
pub async fn revoke(
    state: web::Data<AppState>,
    TenantKey { tenant_id, .. }: TenantKey,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let key_id = uuid_in_path(&path, "api key")?;
    let mut conn = state.pool.get().await.map_err(StoreError::from)?;
    let (key, key_hash) = identity::revoke_api_key(&mut conn, KeyOwner::Tenant(tenant_id), key_id)
        .await?
        .ok_or(ApiError::NotFound("api key"))?;
    // Here at once; the other api processes hear of it from PostgreSQL, as this one does too.
    state.key_cache.revoked(&key_hash);
    tracing::info!(%tenant_id, key_id = %key.id, "api key revoked");
    Ok(HttpResponse::Ok().json(KeySummary::from(key)))
}
