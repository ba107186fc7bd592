//! PostgreSQL adapter: schema, migrations, the connection pool and the queries each owner runs.
//!
//! Modules are grouped by the service that owns the tables: `identity`, `sessions`,
//! `webhook_config`, `submissions`, `outbox` and `rate_limits` belong to fp-api; `attempts` is written only by fp-log-ingest and
//! read by the api and the dashboard; `recoveries` is written by fp-api and read by the dashboard too.

pub mod advisory_lock;
pub mod attempts;
pub mod config_changes;
pub mod deliveries;
pub mod endpoint_notifications;
pub mod erasure;
pub mod identity;
pub mod inbound_events;
pub mod key_revocations;
pub mod maintenance;
pub mod notifications;
pub mod outbox;
pub mod partitions;
pub mod payload_retention;
pub mod rate_limits;
pub mod recoveries;
pub mod schema;
pub mod sessions;
pub mod submissions;
pub mod tenant_deletion;
pub mod webhook_config;

use diesel::prelude::*;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

pub use diesel_async::AsyncConnection;

use std::sync::{Arc, Mutex};
use std::time::Duration;

pub type PgPool = Pool<AsyncPgConnection>;
pub type PooledConnection = Object<AsyncPgConnection>;
pub use diesel::result::Error as DieselError;
pub use diesel_async::AsyncPgConnection as PgConnection;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("could not get a database connection: {0}")]
    Pool(String),
    #[error("could not connect to PostgreSQL at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("migrations failed: {0}")]
    Migration(String),
    #[error(
        "the database schema is not up to date (found {found}, need {needed}): run `fpctl migrate` first"
    )]
    NotMigrated { found: String, needed: String },
    /// A write for a tenant that does not exist (found so before a foreign key could say it).
    #[error("no tenant with id {0}")]
    NoSuchTenant(uuid::Uuid),
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for StoreError {
    fn from(error: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        metrics::counter!("fp_db_pool_timeouts_total").increment(1);
        StoreError::Pool(error.to_string())
    }
}

/// A pool that connects lazily; `ensure_migrated` is the first real round trip.
pub fn pool(url: &str, max_size: usize) -> Result<PgPool, StoreError> {
    // `Fast`: no test query per checkout, which would cost every request a round trip. A
    // connection is still dropped when it is handed back broken: in a failed transaction, or
    // closed, as tokio-postgres marks it once the server went away (restart, terminated backend).
    let mut config = ManagerConfig::default();
    config.recycling_method = RecyclingMethod::Fast;
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config);
    Pool::builder(manager)
        .max_size(max_size)
        .build()
        .map_err(|err| StoreError::Pool(err.to_string()))
}

/// Whether a connection taken from the pool and kept is still usable: the check the pool makes
/// when one is handed back (not closed by the server, not left in a failed transaction).
pub fn still_usable(conn: &mut PooledConnection) -> bool {
    !diesel_async::pooled_connection::PoolableConnection::is_broken(&mut **conn)
}

/// Opens one connection, naming the server in the error so operators know what to start.
pub async fn connect(url: &str) -> Result<AsyncPgConnection, StoreError> {
    AsyncPgConnection::establish(url)
        .await
        .map_err(|err| StoreError::Connect {
            url: redact_password(url),
            reason: err.to_string(),
        })
}

fn redact_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Setting a password on a URL that already has one cannot fail.
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// How long a reachability probe waits for its answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the database answered the last probe: what readiness reports. Cheap to clone and read.
#[derive(Clone)]
pub struct Reachability {
    last: Arc<Mutex<Result<(), String>>>,
}

impl Reachability {
    /// Probes with `SELECT 1` through `pool` every `every` in a background task, for as long as the
    /// process runs.
    pub fn watch(pool: PgPool, every: Duration) -> Reachability {
        let reachability = Reachability {
            last: Arc::new(Mutex::new(Err("not probed yet".to_owned()))),
        };
        let last = reachability.last.clone();
        tokio::spawn(async move {
            loop {
                let outcome = match tokio::time::timeout(PROBE_TIMEOUT, probe(&pool)).await {
                    Ok(outcome) => outcome.map_err(|error| error.to_string()),
                    Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
                };
                *last.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = outcome;
                record_pool_status(&pool);
                tokio::time::sleep(every).await;
            }
        });
        reachability
    }

    pub fn status(&self) -> Result<(), String> {
        self.last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// [`Reachability::status`] as a readiness check a health registry can own.
    pub fn into_check(self) -> impl Fn() -> Result<(), String> + Send + Sync + 'static {
        move || self.status()
    }
}

/// The pool's state as gauges, sampled with each probe: waiting tasks are requests that found
/// every connection in use (a pool too small for the load, or a slow database).
fn record_pool_status(pool: &PgPool) {
    let status = pool.status();
    metrics::gauge!("fp_db_pool_waiting").set(status.waiting as f64);
    metrics::gauge!("fp_db_pool_connections", "state" => "idle").set(status.available as f64);
    metrics::gauge!("fp_db_pool_connections", "state" => "in_use")
        .set(status.size.saturating_sub(status.available) as f64);
}

async fn probe(pool: &PgPool) -> Result<(), StoreError> {
    let mut conn = pool.get().await?;
    diesel::sql_query("SELECT 1").execute(&mut conn).await?;
    Ok(())
}

/// What PostgreSQL says to the connections of a server that is stopping or starting (SQLSTATE
/// 57P01-57P03), which diesel reports as plain database errors.
const SERVER_GOING_AWAY: [&str; 3] = [
    "terminating connection",
    "the database system is shutting down",
    "the database system is starting up",
];

impl StoreError {
    /// Whether the database could not be reached (down, restarting, no connection to be had), as
    /// opposed to a query it refused: the first is worth a 503 and a retry, the second is not.
    pub fn is_unreachable(&self) -> bool {
        match self {
            StoreError::Pool(_) | StoreError::Connect { .. } => true,
            StoreError::Query(diesel::result::Error::DatabaseError(kind, info)) => {
                matches!(
                    kind,
                    diesel::result::DatabaseErrorKind::ClosedConnection
                        | diesel::result::DatabaseErrorKind::UnableToSendCommand
                ) || SERVER_GOING_AWAY
                    .iter()
                    .any(|text| info.message().contains(text))
            }
            StoreError::Query(_)
            | StoreError::Migration(_)
            | StoreError::NotMigrated { .. }
            | StoreError::NoSuchTenant(_) => false,
        }
    }

    /// Whether a write named a tenant that does not exist: a `tenant_id` foreign key refused it,
    /// or the write looked the tenant up first. The api checks a request's credentials before it
    /// writes, so this means the tenant was deleted in between (or its key was still cached, its
    /// deletion not yet heard of).
    pub fn is_missing_tenant(&self) -> bool {
        match self {
            StoreError::NoSuchTenant(_) => true,
            StoreError::Query(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::ForeignKeyViolation,
                info,
            )) => info
                .constraint_name()
                .is_some_and(|name| name.ends_with(TENANT_FOREIGN_KEY_SUFFIX)),
            _ => false,
        }
    }
}

/// How PostgreSQL names the foreign key of a `tenant_id` column declared `REFERENCES tenants`,
/// as every one in the migrations is.
pub const TENANT_FOREIGN_KEY_SUFFIX: &str = "_tenant_id_fkey";

/// Applies pending migrations and returns the versions applied. Needs a multi-thread runtime.
pub async fn run_migrations(url: &str) -> Result<Vec<String>, StoreError> {
    let mut connection = connect(url).await?;
    // What a migration cannot do online by itself (see the function).
    partitions::prepare_online_partitioning(&mut connection).await?;
    let mut harness = AsyncMigrationHarness::new(connection);
    let applied = harness
        .run_pending_migrations(MIGRATIONS)
        .map_err(|err| StoreError::Migration(err.to_string()))?;
    Ok(applied.iter().map(ToString::to_string).collect())
}

/// Applies the pending migrations older than `version` (e.g. `20261205000001`) and returns those
/// applied: a database as a deployment of an earlier release has it, for tests of a migration.
pub async fn run_migrations_before(url: &str, version: &str) -> Result<Vec<String>, StoreError> {
    let connection = connect(url).await?;
    let mut harness = AsyncMigrationHarness::new(connection);
    let pending = harness
        .pending_migrations(MIGRATIONS)
        .map_err(|err| StoreError::Migration(err.to_string()))?;
    let mut applied = Vec::new();
    for migration in pending
        .iter()
        .filter(|migration| migration.name().version().to_string().as_str() < version)
    {
        let done = harness
            .run_migration(migration.as_ref())
            .map_err(|err| StoreError::Migration(err.to_string()))?;
        applied.push(done.to_string());
    }
    Ok(applied)
}

/// Fails with a clear message when the schema is behind the code (a service started before
/// `fpctl migrate`).
pub async fn ensure_migrated(pool: &PgPool) -> Result<(), StoreError> {
    use diesel::migration::MigrationSource;
    use diesel::pg::Pg;

    let needed = MigrationSource::<Pg>::migrations(&MIGRATIONS)
        .map_err(|err| StoreError::Migration(err.to_string()))?
        .iter()
        .map(|migration| migration.name().version().to_string())
        .max()
        .unwrap_or_default();
    let mut conn = pool.get().await?;
    let found: Option<String> =
        diesel::sql_query("SELECT max(version) AS version FROM __diesel_schema_migrations")
            .get_result::<MigrationVersionRow>(&mut conn)
            .await
            .map(|row| row.version)
            .unwrap_or(None);
    match found {
        Some(found) if found >= needed => Ok(()),
        found => Err(StoreError::NotMigrated {
            found: found.unwrap_or_else(|| "no schema".to_owned()),
            needed,
        }),
    }
}

#[derive(QueryableByName)]
struct MigrationVersionRow {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    version: Option<String>,
}

/// What the dashboard reads, column by column: its log pages (`attempts::page`, `find`,
/// `of_delivery`, `counts_per_bucket`, `summary`: the columns of `AttemptRow`; whether a payload
/// was cleared, `payload_retention::cleared_among`), the endpoint's
/// health on the tenant's log page (`webhook_config::health`), tenant names on the platform view
/// (`most_failing_tenants`, `tenant_names`), a bulk recovery's progress page
/// (`recoveries::find`, `recoveries::progress`), the schema version (`ensure_migrated`) and which
/// events are about which submission (the deliveries view's search, `deliveries::page`). No other
/// table or column: no key or password hash, no webhook secret or URL, no submission's content, no
/// event payload, no session, throttling or rate-limit state.
const DASHBOARD_READABLE_COLUMNS: &[(&str, &[&str])] = &[
    (
        "delivery_attempts",
        &[
            "id",
            "delivery_id",
            "event_id",
            "tenant_id",
            "event_type",
            "url",
            "attempt_number",
            "attempted_at",
            "duration_ms",
            "request_headers",
            "request_body",
            "response_status",
            "response_headers",
            "response_body",
            "response_truncated",
            "error_kind",
            "error_message",
            "final",
            "next_retry_at",
            "manual",
            "traceparent",
            "tracestate",
            "payload_cleared_at",
            "payload_retention_days",
        ],
    ),
    (
        "webhook_configs",
        &[
            "tenant_id",
            "enabled",
            "last_success_at",
            "failing_since",
            "disabled_at",
            "disabled_reason",
        ],
    ),
    ("tenants", &["id", "name"]),
    (
        "recoveries",
        &[
            "id",
            "tenant_id",
            "range_from",
            "range_to",
            "requested_at",
            "delivery_ids",
            "skipped_format_changed",
            "more",
        ],
    ),
    ("__diesel_schema_migrations", &["version"]),
    (
        "submission_events",
        &["event_id", "tenant_id", "submission_id"],
    ),
];

/// Lets `role`, the dashboard's read-only login, read [`DASHBOARD_READABLE_COLUMNS`] and nothing
/// else. Whatever it held on any table is revoked first, in the same transaction, so a deployment
/// from when it could read every table is narrowed, the dashboard never sees a gap, and running
/// this again changes nothing. A missing role is reported, not created, since creating roles needs
/// a superuser.
pub async fn grant_read_access(
    conn: &mut AsyncPgConnection,
    role: &str,
) -> Result<bool, StoreError> {
    #[derive(QueryableByName)]
    struct Exists {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        exists: bool,
    }
    let exists =
        diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1) AS exists")
            .bind::<diesel::sql_types::Text, _>(role)
            .get_result::<Exists>(conn)
            .await?
            .exists;
    if !exists {
        return Ok(false);
    }
    let role = quote_identifier(role);
    // Revoking a table's privilege revokes its column privileges too, so no grant outlives the list.
    let mut statements = vec![
        format!("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}"),
        format!("GRANT USAGE ON SCHEMA public TO {role}"),
    ];
    statements.extend(DASHBOARD_READABLE_COLUMNS.iter().map(|(table, columns)| {
        let columns: Vec<String> = columns
            .iter()
            .map(|column| quote_identifier(column))
            .collect();
        format!(
            "GRANT SELECT ({}) ON {} TO {role}",
            columns.join(", "),
            quote_identifier(table)
        )
    }));
    conn.transaction(async |conn| {
        for statement in &statements {
            diesel::sql_query(statement).execute(conn).await?;
        }
        Ok::<_, StoreError>(())
    })
    .await?;
    Ok(true)
}

/// `name` as a PostgreSQL identifier: quoted, so a reserved word (`final`) or any role name works.
pub(crate) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod reachability_tests {
    use super::*;
    use diesel::result::{DatabaseErrorKind, Error};

    fn database_error(kind: DatabaseErrorKind, message: &str) -> StoreError {
        StoreError::Query(Error::DatabaseError(kind, Box::new(message.to_owned())))
    }

    #[test]
    fn a_server_going_away_is_unreachable_a_refused_query_is_not() {
        assert!(StoreError::Pool("connection refused".to_owned()).is_unreachable());
        assert!(
            database_error(
                DatabaseErrorKind::Unknown,
                "terminating connection due to administrator command"
            )
            .is_unreachable()
        );
        assert!(database_error(DatabaseErrorKind::ClosedConnection, "closed").is_unreachable());
        assert!(
            !database_error(DatabaseErrorKind::UniqueViolation, "duplicate key").is_unreachable()
        );
        assert!(!StoreError::Query(Error::NotFound).is_unreachable());
    }
}
