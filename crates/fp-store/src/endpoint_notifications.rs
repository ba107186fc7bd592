//! The notification emails a tenant's admins are owed about their endpoint (owned by fp-api): one
//! when it has failed every delivery for a while, one when the api disabled it. Each is claimed
//! by one statement that marks it sent, so of several api replicas one sends it; a send that
//! fails is released for the next try. The marks are cleared when the run of failures ends
//! ([`crate::webhook_config::record_success`]) or the config is saved again
//! ([`crate::webhook_config::upsert`]).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::StoreError;
use crate::identity::ROLE_TENANT_ADMIN;
use crate::schema::users;

/// Which email.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// The endpoint has failed every delivery for the configured time.
    Failing,
    /// The api disabled the endpoint.
    Disabled,
}

impl Notice {
    /// The column that marks it sent.
    fn column(self) -> &'static str {
        match self {
            Notice::Failing => "failing_notified_at",
            Notice::Disabled => "disabled_notified_at",
        }
    }
}

/// An email claimed for sending: the endpoint it is about.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct ClaimedNotice {
    #[diesel(sql_type = SqlUuid)]
    pub tenant_id: Uuid,
    #[diesel(sql_type = Text)]
    pub url: String,
    /// `None` only for a disabled endpoint whose in-flight delivery succeeded after all.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub failing_since: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub disabled_at: Option<DateTime<Utc>>,
    /// The mark set; [`release`] clears it only while it is still this one.
    #[diesel(sql_type = Timestamptz)]
    pub claimed_at: DateTime<Utc>,
}

/// Claims up to `limit` "failing" emails: endpoints still enabled whose run of failures began
/// at or before `failing_before` and has had none. Rows another replica is claiming are skipped.
pub async fn claim_failing(
    conn: &mut AsyncPgConnection,
    failing_before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<ClaimedNotice>, StoreError> {
    Ok(diesel::sql_query(
        "UPDATE webhook_configs c SET failing_notified_at = now() \
         FROM (SELECT tenant_id FROM webhook_configs \
               WHERE failing_since <= $1 AND failing_notified_at IS NULL AND enabled \
               ORDER BY failing_since LIMIT $2 FOR UPDATE SKIP LOCKED) due \
         WHERE c.tenant_id = due.tenant_id \
         RETURNING c.tenant_id, c.url, c.failing_since, c.disabled_at, \
                   c.failing_notified_at AS claimed_at",
    )
    .bind::<Timestamptz, _>(failing_before)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?)
}

/// Claims up to `limit` "disabled" emails: endpoints the api disabled that have had none.
pub async fn claim_disabled(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> Result<Vec<ClaimedNotice>, StoreError> {
    Ok(diesel::sql_query(
        "UPDATE webhook_configs c SET disabled_notified_at = now() \
         FROM (SELECT tenant_id FROM webhook_configs \
               WHERE disabled_at IS NOT NULL AND disabled_notified_at IS NULL \
               ORDER BY disabled_at LIMIT $1 FOR UPDATE SKIP LOCKED) due \
         WHERE c.tenant_id = due.tenant_id \
         RETURNING c.tenant_id, c.url, c.failing_since, c.disabled_at, \
                   c.disabled_notified_at AS claimed_at",
    )
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?)
}

/// Gives a claimed email back (its send failed), unless the mark has changed since (the run
/// ended, or another claim followed). Returns whether it was released.
pub async fn release(
    conn: &mut AsyncPgConnection,
    notice: Notice,
    claimed: &ClaimedNotice,
) -> Result<bool, StoreError> {
    let column = notice.column();
    let released = diesel::sql_query(format!(
        "UPDATE webhook_configs SET {column} = NULL WHERE tenant_id = $1 AND {column} = $2"
    ))
    .bind::<SqlUuid, _>(claimed.tenant_id)
    .bind::<Timestamptz, _>(claimed.claimed_at)
    .execute(conn)
    .await?;
    Ok(released > 0)
}

/// The addresses of the tenant's admins, oldest account first.
pub async fn admin_emails(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
) -> Result<Vec<String>, StoreError> {
    Ok(users::table
        .filter(users::tenant_id.eq(tenant_id))
        .filter(users::role.eq(ROLE_TENANT_ADMIN))
        .order(users::created_at)
        .select(users::email)
        .load(conn)
        .await?)
}

/// The newest failed attempt to `url` at or after `since`, as the tenant's delivery log has it.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct LastFailure {
    #[diesel(sql_type = Timestamptz)]
    pub attempted_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Text>)]
    pub error_kind: Option<String>,
    #[diesel(sql_type = Nullable<diesel::sql_types::Integer>)]
    pub response_status: Option<i32>,
}

/// The tenant's newest attempt to `url` since `since` that failed: one with an error kind other
/// than `interrupted_kind` (an attempt whose outcome is not logged yet). Read through
/// `delivery_attempts_tenant_time`.
pub async fn last_failure(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    url: &str,
    since: DateTime<Utc>,
    interrupted_kind: &str,
) -> Result<Option<LastFailure>, StoreError> {
    Ok(diesel::sql_query(
        "SELECT attempted_at, error_kind, response_status FROM delivery_attempts \
         WHERE tenant_id = $1 AND attempted_at >= $2 AND url = $3 \
           AND error_kind IS NOT NULL AND error_kind <> '' AND error_kind <> $4 \
         ORDER BY attempted_at DESC, id DESC LIMIT 1",
    )
    .bind::<SqlUuid, _>(tenant_id)
    .bind::<Timestamptz, _>(since)
    .bind::<Text, _>(url)
    .bind::<Text, _>(interrupted_kind)
    .get_result(conn)
    .await
    .optional()?)
}
