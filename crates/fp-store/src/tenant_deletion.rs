//! Removing a tenant and everything it owns (`fpctl tenant delete`), in three steps that can each
//! be run again, so a deletion that was interrupted is finished by running it again:
//!
//! 1. [`cut_off`]: one transaction deletes every row of the tenant except its delivery attempts and
//!    the tenant row itself. Its API keys, users and their sessions go with it, so from its commit
//!    on the api refuses the tenant's sessions, and its keys once each api has heard the keys'
//!    deletion notified (a key an api had cached until then); its config goes, so the dispatcher
//!    sends nothing more for it (a job still queued finds no config and is dropped).
//! 2. [`delete_attempt_batch`], until none is left: `delivery_attempts` may hold millions of rows
//!    per tenant, so they go `batch_rows` at a time, each batch its own transaction, walking the
//!    tenant's log index; no lock is held for long and the log pages never wait.
//! 3. [`finish`]: one transaction locks the tenant row, deletes whatever was written for the tenant
//!    meanwhile (a submission whose request was already past the key check, a last attempt
//!    record), and the tenant row last. While the row exists the deletion can be resumed; once it
//!    is gone, log-ingest stores no record of the tenant any more (`attempts::store_batch`), and a
//!    write the api makes with a key it still has cached breaks a `tenant_id` foreign key, which
//!    it answers as an invalid key ([`crate::StoreError::is_missing_tenant`]).
//!
//! The tables are listed here by hand, in the order their foreign keys need. [`unlisted_tables`]
//! names any table with a `tenant_id` column the list does not know, and [`count`] and [`delete`]
//! refuse to run while there is one, so a table added later cannot be forgotten silently.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use fp_domain::login_throttle::{EMAIL_FROM_CLIENT_KEY_PREFIX, MAX_EMAIL_KEY_CHARS};
use uuid::Uuid;

use crate::StoreError;
use crate::schema::tenants;

/// The table [`delete_attempt_batch`] empties batch by batch.
const ATTEMPTS_TABLE: &str = "delivery_attempts";

/// How the rows of a table are known to be the tenant's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ownership {
    /// Its `tenant_id` column.
    TenantColumn,
    /// Sessions of the tenant's users.
    UsersSessions,
    /// Failed log-ins counted against the email of one of the tenant's users
    /// (`fp_domain::login_throttle::attempt_keys`); those counted per client address only are no
    /// one's and stay.
    UsersLoginFailures,
}

/// Everything [`cut_off`] and [`finish`] delete, in deletion order: rows that reference others go
/// before them (sessions and failed log-ins before their users, audit rows of erased events
/// before their erasure, the outbox before the submissions it announces).
const OWNED_TABLES: &[(&str, Ownership)] = &[
    ("user_sessions", Ownership::UsersSessions),
    ("login_failures", Ownership::UsersLoginFailures),
    ("users", Ownership::TenantColumn),
    ("api_keys", Ownership::TenantColumn),
    ("webhook_configs", Ownership::TenantColumn),
    ("rate_limit_buckets", Ownership::TenantColumn),
    ("recoveries", Ownership::TenantColumn),
    ("payload_retention_settings", Ownership::TenantColumn),
    ("payload_clearing_progress", Ownership::TenantColumn),
    ("erased_events", Ownership::TenantColumn),
    ("erasures", Ownership::TenantColumn),
    ("submission_events", Ownership::TenantColumn),
    ("outbox", Ownership::TenantColumn),
    ("submissions", Ownership::TenantColumn),
];

/// Which of the table's rows are the tenant's (`$1`), as an SQL condition.
fn condition(ownership: Ownership) -> String {
    match ownership {
        Ownership::TenantColumn => "tenant_id = $1".to_owned(),
        Ownership::UsersSessions => {
            "user_id IN (SELECT id FROM users WHERE tenant_id = $1)".to_owned()
        }
        // The key is `<prefix><client> <email>`, and a client address holds no space.
        Ownership::UsersLoginFailures => format!(
            "key LIKE '{EMAIL_FROM_CLIENT_KEY_PREFIX}%' \
             AND substr(key, strpos(key, ' ') + 1) IN \
             (SELECT left(lower(email), {MAX_EMAIL_KEY_CHARS}) FROM users WHERE tenant_id = $1)"
        ),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TenantDeletionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Tables with a `tenant_id` column that [`OWNED_TABLES`] does not list: a deletion would
    /// leave their rows behind, so none is done until this code knows them.
    #[error(
        "the database has tables with a tenant_id column that tenant deletion does not know: {}; \
         a deletion would leave their rows behind (is this fpctl older than the schema?)",
        .0.join(", ")
    )]
    UnlistedTables(Vec<String>),
}

impl From<diesel::result::Error> for TenantDeletionError {
    fn from(error: diesel::result::Error) -> Self {
        TenantDeletionError::Store(StoreError::Query(error))
    }
}

/// Rows of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRows {
    pub table: &'static str,
    pub rows: u64,
}

/// Rows of a tenant per table, in deletion order (`tenants` last).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantRows {
    pub tables: Vec<TableRows>,
}

impl TenantRows {
    fn add(&mut self, table: &'static str, rows: u64) {
        match self
            .tables
            .iter_mut()
            .find(|counted| counted.table == table)
        {
            Some(counted) => counted.rows += rows,
            None => self.tables.push(TableRows { table, rows }),
        }
    }

    fn add_all(&mut self, other: &TenantRows) {
        for counted in &other.tables {
            self.add(counted.table, counted.rows);
        }
    }

    /// The rows of `table`; 0 when it was not counted.
    pub fn of(&self, table: &str) -> u64 {
        self.tables
            .iter()
            .find(|counted| counted.table == table)
            .map_or(0, |counted| counted.rows)
    }

    pub fn total(&self) -> u64 {
        self.tables.iter().map(|counted| counted.rows).sum()
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

#[derive(QueryableByName)]
struct TableName {
    #[diesel(sql_type = Text)]
    table_name: String,
}

/// Tables of the current schema with a `tenant_id` column that the deletion does not list
/// (partitions are left out: their parent stands for them).
pub async fn unlisted_tables(conn: &mut AsyncPgConnection) -> Result<Vec<String>, StoreError> {
    let names = diesel::sql_query(
        "SELECT c.relname::text AS table_name FROM pg_attribute a \
         JOIN pg_class c ON c.oid = a.attrelid \
         WHERE a.attname = 'tenant_id' AND NOT a.attisdropped \
           AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
           AND c.relnamespace = current_schema()::regnamespace \
         ORDER BY 1",
    )
    .load::<TableName>(conn)
    .await?;
    Ok(names
        .into_iter()
        .map(|name| name.table_name)
        .filter(|name| {
            name != ATTEMPTS_TABLE && !OWNED_TABLES.iter().any(|(listed, _)| listed == name)
        })
        .collect())
}

async fn refuse_unlisted_tables(conn: &mut AsyncPgConnection) -> Result<(), TenantDeletionError> {
    let unlisted = unlisted_tables(conn).await?;
    if unlisted.is_empty() {
        Ok(())
    } else {
        Err(TenantDeletionError::UnlistedTables(unlisted))
    }
}

async fn tenant_exists(conn: &mut AsyncPgConnection, tenant_id: Uuid) -> Result<bool, StoreError> {
    crate::identity::tenant_exists(conn, tenant_id).await
}

async fn count_where(
    conn: &mut AsyncPgConnection,
    table: &str,
    condition: &str,
    tenant_id: Uuid,
) -> Result<u64, StoreError> {
    let count = diesel::sql_query(format!(
        "SELECT count(*) AS count FROM {table} WHERE {condition}"
    ))
    .bind::<SqlUuid, _>(tenant_id)
    .get_result::<Count>(conn)
    .await?;
    Ok(u64::try_from(count.count).unwrap_or_default())
}

/// What a deletion of the tenant would remove now, per table (the dry run), counted in one
/// snapshot; `None` when there is no such tenant.
pub async fn count(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
) -> Result<Option<TenantRows>, TenantDeletionError> {
    refuse_unlisted_tables(conn).await?;
    conn.build_transaction()
        .read_only()
        .repeatable_read()
        .run(async |conn| {
            if !tenant_exists(conn, tenant_id).await? {
                return Ok(None);
            }
            let mut rows = TenantRows::default();
            for (table, ownership) in OWNED_TABLES {
                rows.add(
                    table,
                    count_where(conn, table, &condition(*ownership), tenant_id).await?,
                );
            }
            rows.add(
                ATTEMPTS_TABLE,
                count_where(conn, ATTEMPTS_TABLE, "tenant_id = $1", tenant_id).await?,
            );
            rows.add("tenants", 1);
            Ok(Some(rows))
        })
        .await
}

/// Deletes the tenant's rows of [`OWNED_TABLES`] in the caller's transaction.
async fn delete_owned_rows(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
) -> Result<TenantRows, StoreError> {
    let mut deleted = TenantRows::default();
    for (table, ownership) in OWNED_TABLES {
        let rows = diesel::sql_query(format!(
            "DELETE FROM {table} WHERE {}",
            condition(*ownership)
        ))
        .bind::<SqlUuid, _>(tenant_id)
        .execute(conn)
        .await?;
        deleted.add(table, rows as u64);
    }
    Ok(deleted)
}

/// Step 1: deletes every row of the tenant but its delivery attempts and the tenant row, in one
/// transaction; from its commit on, the tenant's keys and sessions are refused. `None` when
/// there is no such tenant.
pub async fn cut_off(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
) -> Result<Option<TenantRows>, StoreError> {
    conn.transaction(async |conn| {
        if !tenant_exists(conn, tenant_id).await? {
            return Ok(None);
        }
        delete_owned_rows(conn, tenant_id).await.map(Some)
    })
    .await
}

#[derive(QueryableByName)]
struct AttemptKey {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    attempted_at: DateTime<Utc>,
}

/// Step 2: deletes up to `batch_rows` of the tenant's delivery attempts in a transaction of their
/// own; returns how many went (0: none is left).
pub async fn delete_attempt_batch(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    batch_rows: i64,
) -> Result<u64, StoreError> {
    // The batch is chosen on the tenant's log index (`delivery_attempts_tenant_time`, on every
    // partition) and deleted by id within its time range, which keeps the delete to the
    // partitions the batch is in and to index look-ups, however large the table.
    let batch = diesel::sql_query(
        "SELECT id, attempted_at FROM delivery_attempts WHERE tenant_id = $1 \
         ORDER BY attempted_at DESC, id DESC LIMIT $2",
    )
    .bind::<SqlUuid, _>(tenant_id)
    .bind::<BigInt, _>(batch_rows.max(1))
    .load::<AttemptKey>(conn)
    .await?;
    let times = batch.iter().map(|attempt| attempt.attempted_at);
    let (Some(oldest), Some(newest)) = (times.clone().min(), times.max()) else {
        return Ok(0);
    };
    let ids: Vec<Uuid> = batch.iter().map(|attempt| attempt.id).collect();
    let deleted = diesel::sql_query(
        "DELETE FROM delivery_attempts WHERE tenant_id = $1 AND id = ANY($2) \
         AND attempted_at BETWEEN $3 AND $4",
    )
    .bind::<SqlUuid, _>(tenant_id)
    .bind::<diesel::sql_types::Array<SqlUuid>, _>(&ids)
    .bind::<diesel::sql_types::Timestamptz, _>(oldest)
    .bind::<diesel::sql_types::Timestamptz, _>(newest)
    .execute(conn)
    .await?;
    Ok(deleted as u64)
}

/// Step 3, after [`delete_attempt_batch`] found none left: one transaction locks the tenant row
/// (writers that reference it, and log-ingest's batches, hold a key-share lock on it until they
/// commit, so they are either done and seen here or wait and find it gone; the dispatcher's claims
/// skip it, so their pending rows go to log-ingest), deletes what was
/// written for the tenant since step 1, and the tenant row. `None` when there is no such tenant.
pub async fn finish(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
) -> Result<Option<TenantRows>, StoreError> {
    conn.transaction(async |conn| {
        let locked = tenants::table
            .find(tenant_id)
            .select(tenants::id)
            .for_update()
            .first::<Uuid>(conn)
            .await
            .optional()?;
        if locked.is_none() {
            return Ok(None);
        }
        let mut deleted = delete_owned_rows(conn, tenant_id).await?;
        let attempts = diesel::sql_query("DELETE FROM delivery_attempts WHERE tenant_id = $1")
            .bind::<SqlUuid, _>(tenant_id)
            .execute(conn)
            .await?;
        deleted.add(ATTEMPTS_TABLE, attempts as u64);
        let tenant = diesel::delete(tenants::table.find(tenant_id))
            .execute(conn)
            .await?;
        deleted.add("tenants", tenant as u64);
        Ok(Some(deleted))
    })
    .await
}

/// Deletes the tenant and everything it owns: [`cut_off`], batches of [`delete_attempt_batch`]
/// (`progress` is told the attempts deleted so far after each), and [`finish`]. Returns what was
/// deleted per table, or `None` when there is no such tenant (never was, or already deleted). Run
/// again after an interruption, it deletes what is left.
pub async fn delete(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    batch_rows: i64,
    mut progress: impl FnMut(u64),
) -> Result<Option<TenantRows>, TenantDeletionError> {
    refuse_unlisted_tables(conn).await?;
    let Some(mut deleted) = cut_off(conn, tenant_id).await? else {
        return Ok(None);
    };
    let mut attempts = 0;
    loop {
        let batch = delete_attempt_batch(conn, tenant_id, batch_rows).await?;
        if batch == 0 {
            break;
        }
        attempts += batch;
        progress(attempts);
    }
    deleted.add(ATTEMPTS_TABLE, attempts);
    let Some(last) = finish(conn, tenant_id).await? else {
        // Another deletion of the same tenant finished first.
        return Ok(None);
    };
    deleted.add_all(&last);
    Ok(Some(deleted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_failures_of_a_users_email_are_found_by_the_domains_key() {
        let keys = fp_domain::login_throttle::attempt_keys(
            " Ada@Example.COM ",
            std::net::IpAddr::from([192, 0, 2, 7]),
        );
        let email_key = &keys[0].key;
        let (prefixed, email) = email_key.split_once(' ').expect("a space before the email");
        assert!(prefixed.starts_with(EMAIL_FROM_CLIENT_KEY_PREFIX));
        assert_eq!(email, "ada@example.com");
        assert!(!keys[1].key.starts_with(EMAIL_FROM_CLIENT_KEY_PREFIX));
    }

    #[test]
    fn counts_add_up_per_table_in_first_seen_order() {
        let mut rows = TenantRows::default();
        rows.add("users", 1);
        rows.add(ATTEMPTS_TABLE, 3);
        let mut more = TenantRows::default();
        more.add(ATTEMPTS_TABLE, 2);
        more.add("tenants", 1);
        rows.add_all(&more);
        assert_eq!(rows.of(ATTEMPTS_TABLE), 5);
        assert_eq!(rows.of("outbox"), 0);
        assert_eq!(rows.total(), 7);
        let order: Vec<&str> = rows.tables.iter().map(|counted| counted.table).collect();
        assert_eq!(order, ["users", ATTEMPTS_TABLE, "tenants"]);
    }
}
