//! Dashboard sessions: `POST /api/v2/sessions` logs a user in (email and password, throttled per
//! client before any password is checked) and answers with the session's token, which the
//! dashboard keeps in its cookie; the token's holder lists and ends the user's sessions and changes
//! the password (which ends them all); a superadmin ends any user's sessions.

use std::net::{IpAddr, Ipv4Addr};

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use chrono::{DateTime, Utc};
use fp_domain::login_throttle::retry_after_secs;
use fp_domain::password;
use fp_domain::session::SessionToken;
use fp_store::StoreError;
use fp_store::identity::{self, UserRow};
use fp_store::sessions::{self, SessionOrigin, SessionRow};
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::uuid_in_path;
use crate::AppState;
use crate::auth::{SignedInUser, Superadmin};
use crate::error::{ApiError, ErrorBody};
use crate::json_body::JsonBody;
use crate::login_throttle::{self, Admitted};
use fp_domain::client_address::{FORWARDED_FOR, client_address};

/// What a session list shows of a user agent.
const MAX_USER_AGENT_CHARS: usize = 300;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogInRequest {
    email: String,
    #[schema(format = Password)]
    password: String,
}

/// A session as its user sees it. The token is shown once, in the answer to the log-in.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionSummary {
    id: Uuid,
    created_at: DateTime<Utc>,
    last_used_at: DateTime<Utc>,
    /// When the session ends unless it is used again before (and at the latest, its absolute end).
    expires_at: DateTime<Utc>,
    /// Where the log-in came from.
    client_address: String,
    user_agent: String,
    /// Whether this is the session of the request.
    current: bool,
}

impl SessionSummary {
    fn new(state: &AppState, row: SessionRow, current_id: Uuid) -> Self {
        SessionSummary {
            id: row.id,
            expires_at: state
                .session_timeouts
                .expires_at(row.created_at, row.last_used_at),
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            client_address: row.client_address,
            user_agent: row.user_agent,
            current: row.id == current_id,
        }
    }
}

/// A signed-in user, as the dashboard shows them.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UserSummary {
    id: Uuid,
    email: String,
    /// `tenant_admin` or `superadmin`.
    role: String,
    /// `null` for a superadmin.
    tenant_id: Option<Uuid>,
    /// The zone the user reads times in (an IANA name); `null`: not chosen, the dashboard takes
    /// it from the browser's language region.
    #[schema(example = "Europe/Berlin")]
    time_zone: Option<String>,
}

impl From<UserRow> for UserSummary {
    fn from(user: UserRow) -> Self {
        UserSummary {
            id: user.id,
            email: user.email,
            role: user.role,
            tenant_id: user.tenant_id,
            time_zone: user.time_zone,
        }
    }
}

/// The answer to a log-in: the only time the token is shown.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedSession {
    /// Send as `Authorization: Session <token>`.
    token: String,
    session: SessionSummary,
    user: UserSummary,
}

/// The calling session and its user.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CurrentSession {
    session: SessionSummary,
    user: UserSummary,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionList {
    data: Vec<SessionSummary>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    #[schema(format = Password)]
    current_password: String,
    #[schema(format = Password, min_length = 10, max_length = 512)]
    new_password: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeZoneChange {
    /// An IANA zone name (`Europe/Berlin`, `America/New_York`, `UTC`), or `null` for the default
    /// (the browser's language region). Required, so a body that forgot it changes nothing.
    #[serde(deserialize_with = "Option::deserialize")]
    #[schema(required = true, nullable, example = "Europe/Berlin")]
    time_zone: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EndedSessions {
    /// How many sessions were ended.
    ended: usize,
}

/// The client a request comes from (see `client_address`); a request without a peer address (none
/// over TCP) is counted as one unknown client.
fn client_of(state: &AppState, request: &HttpRequest) -> IpAddr {
    let forwarded_for = request
        .headers()
        .get(FORWARDED_FOR)
        .and_then(|value| value.to_str().ok());
    client_address(
        request.peer_addr().map(|peer| peer.ip()),
        forwarded_for,
        &state.trusted_proxies,
    )
    .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// Admits a password check of `email` from the request's client, or refuses it with 429.
async fn admit_password_check(
    state: &AppState,
    request: &HttpRequest,
    email: &str,
) -> Result<Admitted, ApiError> {
    let mut conn = state.pool.get().await.map_err(StoreError::from)?;
    let client = client_of(state, request);
    login_throttle::admit(&mut conn, email, client, Utc::now())
        .await?
        .map_err(|refused| {
            metrics::counter!("fp_api_failed_logins_total", "reason" => "throttled").increment(1);
            tracing::warn!(
                retry_after_secs = refused.retry_after.num_seconds(),
                "password check refused: too many failed attempts"
            );
            ApiError::Throttled {
                retry_after_secs: retry_after_secs(refused.retry_after),
            }
        })
}

/// Runs argon2 on the blocking pool, not on an async worker; `None` is an unknown user.
async fn password_matches(
    state: &web::Data<AppState>,
    stored_hash: Option<String>,
    password: String,
) -> Result<bool, ApiError> {
    let checker = state.clone();
    web::block(move || checker.passwords.matches(stored_hash.as_deref(), &password))
        .await
        .map_err(|error| ApiError::Internal(anyhow::anyhow!("the password check failed: {error}")))
}

fn random_bytes<const N: usize>(state: &AppState) -> Result<[u8; N], ApiError> {
    let mut random = [0u8; N];
    state
        .rng
        .fill(&mut random)
        .map_err(|_| ApiError::Internal(anyhow::anyhow!("the system random generator failed")))?;
    Ok(random)
}

/// Logs a user in: the new session's token, shown only this once.
#[utoipa::path(
    post,
    path = "/api/v2/sessions",
    tag = "sessions",
    security(()),
    request_body = LogInRequest,
    responses(
        (status = 201, description = "Signed in; `token` is shown only this once", body = CreatedSession),
        (status = 401, description = "Invalid email or password", body = ErrorBody),
        (status = 422, description = "A field is missing or not a string; `field` names it", body = ErrorBody),
        (status = 429, description = "Too many failed log-ins from this client: try again after `Retry-After` seconds", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before trying again"))),
    ),
)]
pub async fn log_in(
    state: web::Data<AppState>,
    request: HttpRequest,
    JsonBody(body): JsonBody<LogInRequest>,
) -> Result<HttpResponse, ApiError> {
    let email = body.email.trim().to_lowercase();
    // Before the user lookup and argon2, so refused attempts cost next to nothing.
    let admitted = admit_password_check(&state, &request, &email).await?;
    let user = {
        let mut conn = state.pool.get().await.map_err(StoreError::from)?;
        identity::user_by_email(&mut conn, &email).await?
    };
    let stored_hash = user.as_ref().map(|user| user.password_hash.clone());
    let user = match user {
        Some(user) if password_matches(&state, stored_hash, body.password).await? => user,
        _ => {
            metrics::counter!("fp_api_failed_logins_total", "reason" => "credentials").increment(1);
            tracing::info!("log-in refused: invalid email or password");
            return Err(ApiError::InvalidCredentials);
        }
    };

    let now = Utc::now();
    let token = SessionToken::from_random(random_bytes(&state)?);
    let client = client_of(&state, &request).to_string();
    let user_agent: String = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .chars()
        .take(MAX_USER_AGENT_CHARS)
        .collect();
    let mut conn = state.pool.get().await.map_err(StoreError::from)?;
    admitted.succeeded(&mut conn, now).await?;
    let session = sessions::create_session(
        &mut conn,
        user.id,
        &token.hash(),
        SessionOrigin {
            client_address: &client,
            user_agent: &user_agent,
        },
        now,
        state.session_timeouts.live_since(now),
    )
    .await?;
    tracing::info!(user_id = %user.id, session_id = %session.id, "user logged in");
    let current = session.id;
    Ok(HttpResponse::Created().json(CreatedSession {
        token: token.expose().to_owned(),
        session: SessionSummary::new(&state, session, current),
        user: user.into(),
    }))
}

#[utoipa::path(
    get,
    path = "/api/v2/sessions",
    tag = "sessions",
    responses((status = 200, description = "The user's live sessions, newest first", body = SessionList)),
)]
pub async fn list(
    state: web::Data<AppState>,
    signed_in: SignedInUser,
) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.get().await.map_err(StoreError::from)?;
    let live = state.session_timeouts.live_since(Utc::now());
    let rows = sessions::list_sessions(&mut conn, signed_in.user.id, live).await?;
    Ok(HttpResponse::Ok().json(SessionList {
        data: rows
            .into_iter()
            .map(|row| SessionSummary::new(&state, row, signed_in.session.id))
            .collect(),
    }))
}

/// The calling session and its user; the dashboard checks its cookie with it on every page.
#[utoipa::path(
    get,
    path = "/api/v2/sessions/current",
    tag = "sessions",
    responses((status = 200, description = "The calling session and its user", body = CurrentSession)),
)]
pub async fn current(
    state: web::Data<AppState>,
    signed_in: SignedInUser,
) -> Result<HttpResponse, ApiError> {
    let current = signed_in.session.id;
    Ok(HttpResponse::Ok().json(CurrentSession {
        session: SessionSummary::new(&state, signed_in.session, current),
        user: signed_in.user.into(),
    }))
}

/// Logs out: ends the calling session.
#[utoipa::path(
    delete,
    path = "/api/v2/sessions/current",
    tag = "sessions",
    responses((status = 204, description = "The session has ended")),
)]
pub async fn log_out(
    state: web::Data<AppState>,
    signed_in: SignedInUser,
) -> Result<HttpResponse, ApiError> {
    end_one(&state, &signed_in, signed_in.session.id).await
}

/// Ends one of the user's sessions (e.g. on a lost phone).
#[utoipa::path(
    delete,
    path = "/api/v2/sessions/{id}",
    tag = "sessions",
    params(("id" = Uuid, Path, description = "A session's `id`")),
    responses(
        (status = 204, description = "The session has ended"),
        (status = 404, description = "The user has no such session", body = ErrorBody),
    ),
)]
pub async fn end(
    state: web::Data<AppState>,
    signed_in: SignedInUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    end_one(&state, &signed_in, uuid_in_path(&path, "session")?).await
}

async fn end_one(
    state: &AppState,
    signed_in: &SignedInUser,
    session_id: Uuid,
) -> Result<HttpResponse, ApiError> {
    let mut conn = state.pool.get().await.map_err(StoreError::from)?;
    if !sessions::end_session(&mut conn, signed_in.user.id, session_id).await? {
        return Err(ApiError::NotFound("session"));
    }
    tracing::info!(user_id = %signed_in.user.id, %session_id, "session ended");
    Ok(HttpResponse::NoContent().finish())
}

/// Changes the signed-in user's password and ends all their sessions, this one included.
#[utoipa::path(
    post,
    path = "/api/v2/account/password",
    tag = "sessions",
    request_body = PasswordChange,
    responses(
        (status = 200, description = "Changed; every session of the user has ended", body = EndedSessions),
        (status = 422, description = "`current_password` is wrong, or `new_password` too short or long", body = ErrorBody),
        (status = 429, description = "Too many wrong passwords from this client: try again after `Retry-After` seconds", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before trying again"))),
    ),
)]
pub async fn change_password(
    state: web::Data<AppState>,
    request: HttpRequest,
    signed_in: SignedInUser,
    JsonBody(body): JsonBody<PasswordChange>,
) -> Result<HttpResponse, ApiError> {
    password::check_new(&body.new_password)
        .map_err(|error| ApiError::invalid("new_password", error.to_string()))?;
    let user = signed_in.user;
    // A stolen session must not become a password oracle: throttled like a log-in.
    let admitted = admit_password_check(&state, &request, &user.email).await?;
    if !password_matches(
        &state,
        Some(user.password_hash.clone()),
        body.current_password,
    )
    .await?
    {
        metrics::counter!("fp_api_failed_logins_total", "reason" => "credentials").increment(1);
        return Err(ApiError::invalid(
            "current_password",
            "is not the current password",
        ));
    }
    let salt = random_bytes(&state)?;
    let new_password = body.new_password;
    let new_hash = web::block(move || password::hash(&new_password, salt))
        .await
        .map_err(|error| ApiError::Internal(anyhow::anyhow!("hashing failed: {error}")))?
        .map_err(|error| ApiError::Internal(error.into()))?;
    let mut conn = state.pool.get().await.map_err(StoreError::from)?;
    admitted.succeeded(&mut conn, Utc::now()).await?;
    let ended = sessions::change_password(&mut conn, user.id, &new_hash).await?;
    tracing::info!(user_id = %user.id, ended, "password changed; the user's sessions ended");
    Ok(HttpResponse::Ok().json(EndedSessions { ended }))
}

/// Sets the zone the signed-in user reads times in, or (`null`) goes back to the default.
#[utoipa::path(
    put,
    path = "/api/v2/account/time-zone",
    tag = "sessions",
    request_body = TimeZoneChange,
    responses(
        (status = 200, description = "Saved; the user as it is now", body = UserSummary),
        (status = 422, description = "`time_zone` is missing, or no zone of the IANA database", body = ErrorBody),
    ),
)]
pub async fn set_time_zone(
    state: web::Data<AppState>,
    signed_in: SignedInUser,
    JsonBody(body): JsonBody<TimeZoneChange>,
) -> Result<HttpResponse, ApiError> {
    if let Some(name) = &body.time_zone {
        fp_domain::time_zone::parse(name)
            .map_err(|error| ApiError::invalid("time_zone", error.to_string()))?;
    }
    let mut conn = state.pool.get().await.map_err(StoreError::from)?;
    if !identity::set_time_zone(&mut conn, signed_in.user.id, body.time_zone.as_deref()).await? {
        // Deleted since the session was checked: its sessions are gone with it.
        return Err(ApiError::Unauthorized);
    }
    tracing::info!(user_id = %signed_in.user.id, time_zone = ?body.time_zone, "time zone set");
    Ok(HttpResponse::Ok().json(UserSummary::from(UserRow {
        time_zone: body.time_zone,
        ..signed_in.user
    })))
}

/// Ends every session of a user, e.g. of a user who left or whose device was lost.
#[utoipa::path(
    delete,
    path = "/api/v2/admin/users/{id}/sessions",
    tag = "admin",
    params(("id" = Uuid, Path, description = "The user's id")),
    responses(
        (status = 200, description = "Every session of the user has ended", body = EndedSessions),
        (status = 404, description = "No such user", body = ErrorBody),
    ),
)]
pub async fn admin_end_all(
    state: web::Data<AppState>,
    _: Superadmin,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let user_id = uuid_in_path(&path, "user")?;
    let mut conn = state.pool.get().await.map_err(StoreError::from)?;
    if identity::user_by_id(&mut conn, user_id).await?.is_none() {
        return Err(ApiError::NotFound("user"));
    }
    let ended = sessions::end_all_sessions(&mut conn, user_id).await?;
    tracing::info!(%user_id, ended, "a superadmin ended the user's sessions");
    Ok(HttpResponse::Ok().json(EndedSessions { ended }))
}
