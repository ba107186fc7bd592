//! API-key authentication and roles. A handler states whom it serves by the extractor it takes:
//! [`AuthenticatedTenant`] (a tenant admin's key; every query is scoped by that tenant, never by an
//! id from the request) or [`Superadmin`] (a platform key, for the admin routes). A missing or
//! unknown key is a 401; a live key of the other role is a 403.

use std::future::{Ready, ready};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, http::header, web};
use fp_store::identity::{self, ApiKeyRow, KeyOwner};
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;

/// A tenant admin's key: the tenant every query of the request is scoped to.
pub struct AuthenticatedTenant(pub Uuid);

/// A superadmin's key: may read every tenant's delivery logs through the admin routes.
pub struct Superadmin;

/// Resolves the `Authorization: Bearer <key>` of every request in the scope before any extractor
/// runs, so a call without a live key is a 401 whatever else is wrong with it (actix polls a
/// handler's extractors together, and a bad body would otherwise answer first).
pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let key = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|key| key.trim().to_owned());
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let (Some(key), Some(state)) = (key, state) else {
        return Ok(req.error_response(ApiError::Unauthorized));
    };
    let found = match live_key(&state, &key).await {
        Ok(found) => found,
        Err(error) => return Ok(req.error_response(error)),
    };
    let Some(found) = found else {
        return Ok(req.error_response(ApiError::Unauthorized));
    };
    req.extensions_mut().insert(found);
    Ok(next.call(req).await?.map_into_boxed_body())
}

async fn live_key(state: &AppState, key: &str) -> Result<Option<ApiKeyRow>, ApiError> {
    let mut conn = state.pool.get().await.map_err(fp_store::StoreError::from)?;
    Ok(identity::live_key_by_hash(&mut conn, &fp_domain::api_key::hash_key(key)).await?)
}

/// The key [`authenticate`] found; a route outside its scope has none, which is a 401 too.
fn owner_of(req: &HttpRequest) -> Result<KeyOwner, ApiError> {
    req.extensions()
        .get::<ApiKeyRow>()
        .map(ApiKeyRow::owner)
        .ok_or(ApiError::Unauthorized)
}

impl FromRequest for AuthenticatedTenant {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(owner_of(req).and_then(|owner| match owner {
            KeyOwner::Tenant(tenant_id) => Ok(AuthenticatedTenant(tenant_id)),
            KeyOwner::Platform => Err(ApiError::Forbidden(
                "a superadmin key belongs to no tenant: use a tenant's key for this route, or the /api/v2/admin routes",
            )),
        }))
    }
}

impl FromRequest for Superadmin {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(owner_of(req).and_then(|owner| match owner {
            KeyOwner::Platform => Ok(Superadmin),
            KeyOwner::Tenant(_) => Err(ApiError::Forbidden(
                "this route needs a superadmin key; tenant keys may not use it",
            )),
        }))
    }
}
