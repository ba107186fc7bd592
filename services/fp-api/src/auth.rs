//! Authentication and roles. A handler states whom it serves by the extractor it takes:
//! [`AuthenticatedTenant`] (a tenant admin's key or session; every query is scoped by that tenant,
//! never by an id from the request), [`TenantKey`] (a tenant's API key only: key management),
//! [`Superadmin`] (a platform key or session, for the admin routes) or [`SignedInUser`] (a
//! dashboard session only: the user's own sessions and password). A missing or unknown credential
//! is a 401; a live one of the wrong kind or role is a 403. Dashboard sessions
//! (`Authorization: Session <token>`) are rows of `user_sessions`, looked up by the token's hash
//! and marked used on every call; they act with their user's role. API keys are resolved through
//! the [`crate::key_cache`], which revocations empty as their notifications arrive.

use std::future::{Ready, ready};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, http::header, web};
use fp_domain::session::SessionToken;
use fp_store::identity::{self, KeyOwner, UserRow};
use fp_store::sessions::{self, SessionRow};
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;
use crate::key_cache::{LiveKey, Lookup};

/// A tenant admin's key or session: the tenant every query of the request is scoped to.
pub struct AuthenticatedTenant(pub Uuid);

/// A tenant admin's API key, not a session: API keys are managed with API keys only, so a
/// session (a copied cookie, say) can never mint a credential that outlives it.
pub struct TenantKey {
    pub tenant_id: Uuid,
    /// The id of the key the request came with.
    pub key_id: Uuid,
}

/// A superadmin's key or session: may read every tenant's delivery logs through the admin routes.
pub struct Superadmin;

/// The dashboard session a request came with, and its user.
#[derive(Clone)]
pub struct SignedInUser {
    /// As of this request: already marked used.
    pub session: SessionRow,
    pub user: UserRow,
}

/// Who made a request: the API key, or the dashboard session's user. Audit records name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requester {
    ApiKey(Uuid),
    User(Uuid),
}

/// What an `Authorization` header offers.
enum Credential {
    /// `Bearer <API key>`.
    ApiKey(String),
    /// `Session <token>`: a dashboard session, sent by the dashboard for the user it serves.
    Session(SessionToken),
}

fn credential(req: &ServiceRequest) -> Option<Credential> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(key) = value.strip_prefix("Bearer ") {
        return Some(Credential::ApiKey(key.trim().to_owned()));
    }
    value
        .strip_prefix("Session ")
        .map(|token| Credential::Session(SessionToken::from_client(token)))
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
    let (owner, requester, signed_in) = match owner_of_credential(&state, credential).await {
        Ok(Some(found)) => found,
        Ok(None) => return Ok(req.error_response(ApiError::Unauthorized)),
        Err(error) => return Ok(req.error_response(error)),
    };
    req.extensions_mut().insert(owner);
    req.extensions_mut().insert(requester);
    if let Some(signed_in) = signed_in {
        req.extensions_mut().insert(signed_in);
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// Whom a credential acts for: a live key's owner, or a live session's user's tenant (or the
/// platform, for a superadmin) with the session. `None` for anything unknown, revoked or ended.
async fn owner_of_credential(
    state: &AppState,
    credential: Credential,
) -> Result<Option<(KeyOwner, Requester, Option<SignedInUser>)>, ApiError> {
    match credential {
        Credential::ApiKey(key) => Ok(live_key(state, &key)
            .await?
            .map(|key| (key.owner, Requester::ApiKey(key.key_id), None))),
        Credential::Session(token) => {
            let mut conn = state.pool.get().await.map_err(fp_store::StoreError::from)?;
            let now = chrono::Utc::now();
            let live = state.session_timeouts.live_since(now);
            // Marks the session used, which keeps it from its idle timeout.
            Ok(sessions::use_session(&mut conn, &token.hash(), now, live)
                .await?
                .map(|(session, user)| {
                    let owner = match user.tenant_id {
                        Some(tenant_id) => KeyOwner::Tenant(tenant_id),
                        None => KeyOwner::Platform,
                    };
                    let requester = Requester::User(user.id);
                    let signed_in = SignedInUser { session, user };
                    (owner, requester, Some(signed_in))
                }))
        }
    }
}

/// The live key `key` is, from the key cache or else the database (whose answer is cached).
async fn live_key(state: &AppState, key: &str) -> Result<Option<LiveKey>, ApiError> {
    let hash = fp_domain::api_key::hash_key(key);
    let ticket = match state.key_cache.lookup(&hash) {
        Lookup::Hit(live) => return Ok(Some(live)),
        Lookup::Miss(ticket) => ticket,
    };
    let mut conn = state.pool.get().await.map_err(fp_store::StoreError::from)?;
    let Some(row) = identity::live_key_by_hash(&mut conn, &hash).await? else {
        return Ok(None);
    };
    let live = LiveKey {
        owner: row.owner(),
        key_id: row.id,
    };
    if let Some(ticket) = ticket {
        state.key_cache.insert(ticket, hash, live);
    }
    Ok(Some(live))
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

impl FromRequest for Requester {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<Requester>()
                .copied()
                .ok_or(ApiError::Unauthorized),
        )
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

impl FromRequest for TenantKey {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        if req.extensions().get::<SignedInUser>().is_some() {
            return ready(Err(ApiError::Forbidden(
                "API keys are managed with an API key only: a dashboard session may not create, \
                 list or revoke them (a tenant's first key comes from `fpctl tenant create`)",
            )));
        }
        let key_id = match req.extensions().get::<Requester>() {
            Some(Requester::ApiKey(key_id)) => *key_id,
            Some(Requester::User(_)) | None => return ready(Err(ApiError::Unauthorized)),
        };
        match AuthenticatedTenant::from_request(req, payload).into_inner() {
            Ok(AuthenticatedTenant(tenant_id)) => ready(Ok(TenantKey { tenant_id, key_id })),
            Err(error) => ready(Err(error)),
        }
    }
}

impl FromRequest for SignedInUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(owner_of(req).and_then(|_| {
            req.extensions()
                .get::<SignedInUser>()
                .cloned()
                .ok_or(ApiError::Forbidden(
                    "this route is for a signed-in dashboard user (`Authorization: Session \
                     <token>`); an API key has no user",
                ))
        }))
    }
}
