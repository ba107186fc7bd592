//! Dashboard sessions and failed log-ins (owned by fp-api). Only reads and writes: when a session
//! has ended and when a log-in is refused is decided by `fp_domain::session` and
//! `fp_domain::login_throttle`, whose times and bounds the caller passes in.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use fp_domain::login_throttle::Failures;
use fp_domain::session::LiveSince;
use uuid::Uuid;

use crate::StoreError;
use crate::identity::UserRow;
use crate::schema::{login_failures, user_sessions, users};

/// A session as its user's list shows it; never the token, which is not stored.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = user_sessions)]
pub struct SessionRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub client_address: String,
    pub user_agent: String,
}

/// Where a log-in came from.
#[derive(Debug, Clone, Copy)]
pub struct SessionOrigin<'a> {
    pub client_address: &'a str,
    pub user_agent: &'a str,
}

/// Starts a session for `user_id` at `now`, stored by its token's hash. The user's sessions that
/// are no longer live (`live`) are deleted on the way, so ended rows do not pile up.
pub async fn create_session(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    token_hash: &[u8],
    origin: SessionOrigin<'_>,
    now: DateTime<Utc>,
    live: LiveSince,
) -> Result<SessionRow, StoreError> {
    diesel::delete(
        user_sessions::table
            .filter(user_sessions::user_id.eq(user_id))
            .filter(
                user_sessions::last_used_at
                    .le(live.used_after)
                    .or(user_sessions::created_at.le(live.created_after)),
            ),
    )
    .execute(conn)
    .await?;
    Ok(diesel::insert_into(user_sessions::table)
        .values((
            user_sessions::id.eq(Uuid::now_v7()),
            user_sessions::user_id.eq(user_id),
            user_sessions::token_hash.eq(token_hash),
            user_sessions::created_at.eq(now),
            user_sessions::last_used_at.eq(now),
            user_sessions::client_address.eq(origin.client_address),
            user_sessions::user_agent.eq(origin.user_agent),
        ))
        .returning(SessionRow::as_returning())
        .get_result(conn)
        .await?)
}

/// The live session with this token hash and its user, marked used at `now`; `None` for a token
/// that is unknown, ended, or no longer live.
pub async fn use_session(
    conn: &mut AsyncPgConnection,
    token_hash: &[u8],
    now: DateTime<Utc>,
    live: LiveSince,
) -> Result<Option<(SessionRow, UserRow)>, StoreError> {
    let touched: Option<SessionRow> = diesel::update(
        user_sessions::table
            .filter(user_sessions::token_hash.eq(token_hash))
            .filter(user_sessions::last_used_at.gt(live.used_after))
            .filter(user_sessions::created_at.gt(live.created_after)),
    )
    .set(user_sessions::last_used_at.eq(now))
    .returning(SessionRow::as_returning())
    .get_result(conn)
    .await
    .optional()?;
    let Some(session) = touched else {
        return Ok(None);
    };
    let user = users::table
        .find(session.user_id)
        .select(UserRow::as_select())
        .first(conn)
        .await
        .optional()?;
    Ok(user.map(|user| (session, user)))
}

/// The user's live sessions, newest first.
pub async fn list_sessions(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    live: LiveSince,
) -> Result<Vec<SessionRow>, StoreError> {
    Ok(user_sessions::table
        .filter(user_sessions::user_id.eq(user_id))
        .filter(user_sessions::last_used_at.gt(live.used_after))
        .filter(user_sessions::created_at.gt(live.created_after))
        .select(SessionRow::as_select())
        .order((user_sessions::created_at.desc(), user_sessions::id.desc()))
        .load(conn)
        .await?)
}

/// Ends one of the user's sessions; `false` when the user has no session with that id.
pub async fn end_session(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    session_id: Uuid,
) -> Result<bool, StoreError> {
    let deleted = diesel::delete(
        user_sessions::table
            .filter(user_sessions::id.eq(session_id))
            .filter(user_sessions::user_id.eq(user_id)),
    )
    .execute(conn)
    .await?;
    Ok(deleted > 0)
}

/// Ends every session of the user; returns how many there were.
pub async fn end_all_sessions(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
) -> Result<usize, StoreError> {
    Ok(
        diesel::delete(user_sessions::table.filter(user_sessions::user_id.eq(user_id)))
            .execute(conn)
            .await?,
    )
}

/// Sets the user's password hash and ends all their sessions, in one transaction.
pub async fn change_password(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    password_hash: &str,
) -> Result<usize, StoreError> {
    let password_hash = password_hash.to_owned();
    conn.transaction(async move |conn| {
        diesel::update(users::table.find(user_id))
            .set(users::password_hash.eq(&password_hash))
            .execute(conn)
            .await?;
        end_all_sessions(conn, user_id).await
    })
    .await
}

/// The failures of `keys`, locked until the transaction ends, so concurrent attempts on the same
/// key are counted one after the other. Keys without a row get one with no failures (as of `now`)
/// first, so there is always a row to lock. Call inside a transaction; returned in `keys`' order.
pub async fn lock_failures(
    conn: &mut AsyncPgConnection,
    keys: &[&str],
    now: DateTime<Utc>,
) -> Result<Vec<Failures>, StoreError> {
    let none = Failures::none(now);
    let placeholders: Vec<_> = keys
        .iter()
        .map(|key| {
            (
                login_failures::key.eq(*key),
                login_failures::count.eq(none.count),
                login_failures::window_started_at.eq(none.window_started_at),
                login_failures::last_failure_at.eq(none.last_failure_at),
            )
        })
        .collect();
    diesel::insert_into(login_failures::table)
        .values(&placeholders)
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    // Locked in key order, so two attempts sharing keys cannot deadlock.
    let rows: Vec<(String, i32, DateTime<Utc>, DateTime<Utc>)> = login_failures::table
        .filter(login_failures::key.eq_any(keys))
        .order(login_failures::key)
        .for_update()
        .load(conn)
        .await?;
    Ok(keys
        .iter()
        .map(|key| {
            rows.iter()
                .find(|row| row.0 == *key)
                .map_or(none, |row| Failures {
                    count: row.1,
                    window_started_at: row.2,
                    last_failure_at: row.3,
                })
        })
        .collect())
}

/// Stores the failures of `key`.
pub async fn save_failures(
    conn: &mut AsyncPgConnection,
    key: &str,
    failures: Failures,
) -> Result<(), StoreError> {
    diesel::insert_into(login_failures::table)
        .values((
            login_failures::key.eq(key),
            login_failures::count.eq(failures.count),
            login_failures::window_started_at.eq(failures.window_started_at),
            login_failures::last_failure_at.eq(failures.last_failure_at),
        ))
        .on_conflict(login_failures::key)
        .do_update()
        .set((
            login_failures::count.eq(excluded(login_failures::count)),
            login_failures::window_started_at.eq(excluded(login_failures::window_started_at)),
            login_failures::last_failure_at.eq(excluded(login_failures::last_failure_at)),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes the rows of keys whose window started before `cutoff` (their failures no longer count).
pub async fn forget_failures_before(
    conn: &mut AsyncPgConnection,
    cutoff: DateTime<Utc>,
) -> Result<usize, StoreError> {
    Ok(
        diesel::delete(login_failures::table.filter(login_failures::window_started_at.lt(cutoff)))
            .execute(conn)
            .await?,
    )
}
