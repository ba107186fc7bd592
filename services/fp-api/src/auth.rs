//! API-key authentication and roles. A handler states whom it serves by the extractor it takes:
//! [`AuthenticatedTenant`] (a tenant admin's key; every query is scoped by that tenant, never by an
//! id from the request) or [`Superadmin`] (a platform key, for the admin routes). A missing or
//! unknown key is a 401; a live key of the other role is a 403. Dashboard sessions
//! (`Authorization: Session <token>`, see `fp_domain::session_token`) act with their user's role.

use std::future::{Ready, ready};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, http::header, web};
use fp_store::identity::{self, KeyOwner};
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;

/// A tenant admin's key: the tenant every query of the request is scoped to.
pub struct AuthenticatedTenant(pub Uuid);

/// A superadmin's key: may read every tenant's delivery logs through the admin routes.
pub struct Superadmin;

/// What an `Authorization` header offers.
enum Credential {
    /// `Bearer <API key>`.
    ApiKey(String),
    /// `Session <token>`: a dashboard session, sent by the dashboard for the user it serves.
    Session(String),
}

fn credential(req: &ServiceRequest) -> Option<Credential> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(key) = value.strip_prefix("Bearer ") {
        return Some(Credential::ApiKey(key.trim().to_owned()));
    }
    value
        .strip_prefix("Session ")
        .map(|token| Credential::Session(token.trim().to_owned()))
}

/// Resolves the credential of every request in the scope before any extractor runs, so a call
/// without a live key or session is a 401 whatever else is wrong with it (actix polls a handler's
/// extractors together, and a bad body would otherwise answer first).
pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let (Some(credential), Some(state)) = (
        credential(&req),
        req.app_data::<web::Data<AppState>>().cloned(),
    ) else {
        return Ok(req.error_response(ApiError::Unauthorized));
    };
    let owner = match owner_of_credential(&state, credential).await {
        Ok(Some(owner)) => owner,
        Ok(None) => return Ok(req.error_response(ApiError::Unauthorized)),
        Err(error) => return Ok(req.error_response(error)),
    };
    req.extensions_mut().insert(owner);
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// Whom a credential acts for: a live key's owner, or a signed-in dashboard user's tenant (or the
/// platform, for a superadmin). `None` for anything unknown, revoked, expired or forged.
async fn owner_of_credential(
    state: &AppState,
    credential: Credential,
) -> Result<Option<KeyOwner>, ApiError> {
    let mut conn = state.pool.get().await.map_err(fp_store::StoreError::from)?;
    match credential {
        Credential::ApiKey(key) => {
            let hash = fp_domain::api_key::hash_key(&key);
            Ok(identity::live_key_by_hash(&mut conn, &hash)
                .await?
                .map(|key| key.owner()))
        }
        Credential::Session(token) => {
            let Some(session_key) = &state.session_key else {
                return Ok(None);
            };
            let Ok(user_id) = session_key.verify(&token, chrono::Utc::now().timestamp()) else {
                return Ok(None);
            };
            // Looked up on every call, so a deleted user's sessions stop working at once.
            Ok(identity::user_by_id(&mut conn, user_id)
                .await?
                .map(|user| match user.tenant_id {
                    Some(tenant_id) => KeyOwner::Tenant(tenant_id),
                    None => KeyOwner::Platform,
                }))
        }
    }
}

/// The owner [`authenticate`] found; a route outside its scope has none, which is a 401 too.
fn owner_of(req: &HttpRequest) -> Result<KeyOwner, ApiError> {
    req.extensions()
        .get::<KeyOwner>()
        .copied()
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
