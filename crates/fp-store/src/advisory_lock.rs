//! PostgreSQL session advisory locks that keep maintenance work to one runner at a time: several
//! replicas of a service (and an operator's `fpctl maintenance run`) may start the same step, and
//! only the one that takes the lock does it; the others skip that round.

use std::future::Future;
use std::pin::Pin;

use diesel::sql_types::{BigInt, Bool};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::StoreError;

/// The maintenance jobs that must not run twice at once, each with its own lock so one job never
/// waits for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaintenanceLock {
    /// Creating `delivery_attempts` partitions ahead and dropping those past retention (fp-log-ingest).
    AttemptPartitions,
    /// Clearing stored payloads past each tenant's retention.
    PayloadRetention,
    /// Removing published outbox rows past their grace period (fp-api).
    OutboxPruning,
    /// Removing `submission_events` rows whose events' attempts are all gone (fp-api).
    SubmissionEventsPruning,
}

impl MaintenanceLock {
    /// The advisory lock key: a fixed prefix ("FP" in ASCII) in the high bits so our keys do not
    /// collide with another application's locks on the same database, the job in the low bits.
    /// Never renumber a job: replicas of two versions must agree during a rolling upgrade.
    pub fn key(self) -> i64 {
        const PREFIX: i64 = 0x4650 << 48;
        PREFIX
            | match self {
                MaintenanceLock::AttemptPartitions => 1,
                MaintenanceLock::PayloadRetention => 2,
                MaintenanceLock::OutboxPruning => 3,
                MaintenanceLock::SubmissionEventsPruning => 4,
            }
    }

    pub fn name(self) -> &'static str {
        match self {
            MaintenanceLock::AttemptPartitions => "attempt_partitions",
            MaintenanceLock::PayloadRetention => "payload_retention",
            MaintenanceLock::OutboxPruning => "outbox_pruning",
            MaintenanceLock::SubmissionEventsPruning => "submission_events_pruning",
        }
    }
}

/// The work done under a lock: a boxed future borrowing the connection that holds the lock,
/// written `|conn| Box::pin(async move { ... })`.
pub type LockedWork<'c, T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>;

/// Runs `work` on `conn` if `lock` is free and returns `Some` of its result, or returns `None`
/// at once when another session holds it. The lock is released when `work` ends, whether it
/// succeeded or not.
///
/// A session lock outlives transactions, so `work` may commit as it goes (one partition at a
/// time) instead of holding one long transaction. It lives as long as the session, though: if
/// the returned future is dropped half way (a shutdown), the lock stays until `conn` closes, so
/// pass a connection of your own (`fp_store::connect`) rather than one going back to a pool.
pub async fn try_with_lock<T, E, F>(
    conn: &mut AsyncPgConnection,
    lock: MaintenanceLock,
    work: F,
) -> Result<Option<T>, E>
where
    F: for<'c> FnOnce(&'c mut AsyncPgConnection) -> LockedWork<'c, T, E>,
    E: From<StoreError>,
{
    if !call_lock_function(conn, "pg_try_advisory_lock", lock).await? {
        tracing::debug!(
            lock = lock.name(),
            "maintenance lock held elsewhere; skipping"
        );
        return Ok(None);
    }
    let outcome = work(conn).await;
    let released = call_lock_function(conn, "pg_advisory_unlock", lock).await;
    match (outcome, released) {
        (Ok(value), Ok(_)) => Ok(Some(value)),
        (Ok(_), Err(error)) => Err(error.into()),
        (Err(error), released) => {
            if let Err(unlock_error) = released {
                tracing::warn!(lock = lock.name(), error = %unlock_error,
                    "could not release the maintenance lock; it goes with the session");
            }
            Err(error)
        }
    }
}

/// Calls `pg_try_advisory_lock` or `pg_advisory_unlock`, both answering a boolean.
async fn call_lock_function(
    conn: &mut AsyncPgConnection,
    function: &'static str,
    lock: MaintenanceLock,
) -> Result<bool, StoreError> {
    #[derive(diesel::QueryableByName)]
    struct Answer {
        #[diesel(sql_type = Bool)]
        answer: bool,
    }
    let answer = diesel::sql_query(format!("SELECT {function}($1) AS answer"))
        .bind::<BigInt, _>(lock.key())
        .get_result::<Answer>(conn)
        .await?;
    Ok(answer.answer)
}
