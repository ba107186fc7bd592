//! The partitions of `delivery_attempts` (range-partitioned by `attempted_at`, UTC days): made
//! ahead of time and dropped whole past retention by fp-log-ingest, the table's owner, and by
//! `fpctl maintenance run`.
//!
//! There is no DEFAULT partition: rows that landed in one would make the later creation of their
//! day's partition fail until they were moved out by hand. A missing day is made on demand
//! instead (`attempts::insert_batch`), so an insert never fails for want of a partition.

use std::num::NonZeroU32;

use chrono::{DateTime, NaiveTime, TimeDelta, Utc};
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz};
use diesel::{OptionalExtension, QueryableByName};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::{StoreError, quote_identifier};

/// The partition made from the table as it was before partitioning, from the beginning of time.
pub const LEGACY_PARTITION: &str = "delivery_attempts_legacy";

/// Serialises partition creation between replicas and the insert fallback, for one transaction.
const PARTITION_DDL_LOCK: i64 = 0x4650_0000_0000_0100;

/// How long a drop waits for its lock: `DROP TABLE` of a partition locks the whole table, and
/// waiting behind a long log query would queue every reader behind the drop.
const DROP_LOCK_TIMEOUT: &str = "5s";

/// The share of each page of a day partition that inserts fill. Nearly every row is written
/// twice: a first attempt's pending row, then its outcome in its place a few milliseconds later.
/// The room left lets that outcome go into the same page as a HOT update, which writes none of
/// the table's five indexes; on a full page it would be a new entry in each.
pub const ATTEMPT_PARTITION_FILLFACTOR: u8 = 70;

/// One partition and its range; `None` is MINVALUE (from) or MAXVALUE (to).
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct AttemptPartition {
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub from: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub to: Option<DateTime<Utc>>,
}

impl AttemptPartition {
    fn covers(&self, at: DateTime<Utc>) -> bool {
        self.from.is_none_or(|from| from <= at) && self.to.is_none_or(|to| at < to)
    }
}

/// Every partition of `delivery_attempts`, oldest range first. The bounds are read back from
/// PostgreSQL's own text of them (`FOR VALUES FROM ('…') TO ('…')`), literals with their offset.
pub async fn attempt_partitions(
    conn: &mut AsyncPgConnection,
) -> Result<Vec<AttemptPartition>, StoreError> {
    Ok(diesel::sql_query(
        "SELECT c.relname::text AS name, \
           CASE WHEN b[1] = 'MINVALUE' THEN NULL ELSE btrim(b[1], '''')::timestamptz END AS \"from\", \
           CASE WHEN b[2] = 'MAXVALUE' THEN NULL ELSE btrim(b[2], '''')::timestamptz END AS \"to\" \
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         CROSS JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid), \
                                         'FROM \\((.+)\\) TO \\((.+)\\)') AS b \
         WHERE i.inhparent = 'delivery_attempts'::regclass \
         ORDER BY 2 NULLS FIRST",
    )
    .load(conn)
    .await?)
}

/// What the maintenance of `delivery_attempts` follows (`retention` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionPolicy {
    /// Days per partition.
    pub partition_days: NonZeroU32,
    /// Days past today whose partition exists in advance.
    pub days_ahead: u32,
    /// Rows are kept at least this many days, then dropped a partition at a time.
    pub max_days: NonZeroU32,
}

impl PartitionPolicy {
    /// Makes the partitions of today through `days_ahead` days after `now` (UTC days) that do
    /// not exist; returns their names.
    pub async fn create_ahead(
        &self,
        conn: &mut AsyncPgConnection,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        ensure_attempt_partitions(conn, now, self.days_ahead, self.partition_days).await
    }

    /// Drops the partitions whose whole range is more than `max_days` before `now`; returns their
    /// names.
    pub async fn drop_expired(
        &self,
        conn: &mut AsyncPgConnection,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        drop_attempt_partitions_before(conn, self.cutoff(now)).await
    }

    /// Rows attempted before this may be dropped.
    pub fn cutoff(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - TimeDelta::days(i64::from(self.max_days.get()))
    }
}

/// Makes sure each UTC day from `now`'s through `days_ahead` days later has a partition, creating
/// the missing ones `partition_days` long (shorter where that would overlap an existing one).
/// Returns the names of those it created.
pub async fn ensure_attempt_partitions(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
    days_ahead: u32,
    partition_days: NonZeroU32,
) -> Result<Vec<String>, StoreError> {
    let today = day_start(now);
    let days = (0..=i64::from(days_ahead)).map(|n| today + TimeDelta::days(n));
    create_missing(conn, days.collect(), partition_days).await
}

/// The latest day a writer found a partition for, so that it looks in the catalog once a day
/// rather than once a statement. Retention drops only past days' partitions.
#[derive(Debug, Default)]
pub struct CoveredDay(Option<DateTime<Utc>>);

impl CoveredDay {
    /// [`ensure_partitions_for`] the days of `times` other than the one already seen covered.
    pub(crate) async fn ensure(
        &mut self,
        conn: &mut AsyncPgConnection,
        times: impl Iterator<Item = DateTime<Utc>>,
    ) -> Result<Vec<String>, StoreError> {
        let days: Vec<DateTime<Utc>> = times
            .map(day_start)
            .filter(|day| Some(*day) != self.0)
            .collect();
        let Some(latest) = days.iter().max().copied() else {
            return Ok(Vec::new());
        };
        let created = ensure_partitions_for(conn, days.into_iter()).await?;
        self.0 = Some(latest);
        Ok(created)
    }
}

/// Makes a one-day partition for each of these times whose day has none: the safety net of an
/// insert whose day the maintenance loop has not prepared (a stopped log-ingest, rows of the past
/// written by tests and the bench).
async fn ensure_partitions_for(
    conn: &mut AsyncPgConnection,
    times: impl Iterator<Item = DateTime<Utc>>,
) -> Result<Vec<String>, StoreError> {
    let mut days: Vec<DateTime<Utc>> = times.map(day_start).collect();
    days.sort_unstable();
    days.dedup();
    let partitions = attempt_partitions(conn).await?;
    days.retain(|day| !partitions.iter().any(|partition| partition.covers(*day)));
    if days.is_empty() {
        return Ok(Vec::new());
    }
    create_missing(conn, days, NonZeroU32::MIN).await
}

/// Creates a partition from each of `days` (sorted day starts) that no partition covers yet, up
/// to `partition_days` later or the next partition's start, whichever comes first.
///
/// A partition is made as a table of its own and then attached: ATTACH locks the parent in SHARE
/// UPDATE EXCLUSIVE mode, which lets reads and inserts go on, where CREATE TABLE … PARTITION OF
/// would take ACCESS EXCLUSIVE. The table is empty, so attaching it scans nothing, and its
/// indexes are the parent's, made as it is attached.
async fn create_missing(
    conn: &mut AsyncPgConnection,
    days: Vec<DateTime<Utc>>,
    partition_days: NonZeroU32,
) -> Result<Vec<String>, StoreError> {
    let length = TimeDelta::days(i64::from(partition_days.get()));
    conn.transaction(async move |conn| {
        diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
            .bind::<BigInt, _>(PARTITION_DDL_LOCK)
            .execute(conn)
            .await?;
        // Read under the lock: another replica may have just made some of them.
        let mut partitions = attempt_partitions(conn).await?;
        let mut created = Vec::new();
        for day in days {
            if partitions.iter().any(|partition| partition.covers(day)) {
                continue;
            }
            let next_start = partitions
                .iter()
                .filter_map(|partition| partition.from)
                .filter(|from| *from > day)
                .min();
            let to = next_start.map_or(day + length, |next| next.min(day + length));
            let name = partition_name(day);
            let table = quote_identifier(&name);
            diesel::sql_query(format!(
                "CREATE TABLE {table} (LIKE delivery_attempts INCLUDING DEFAULTS) \
                 WITH (fillfactor = {ATTEMPT_PARTITION_FILLFACTOR})"
            ))
            .execute(conn)
            .await?;
            diesel::sql_query(format!(
                "ALTER TABLE delivery_attempts ATTACH PARTITION {table} \
                 FOR VALUES FROM ('{}') TO ('{}')",
                day.to_rfc3339(),
                to.to_rfc3339()
            ))
            .execute(conn)
            .await?;
            partitions.push(AttemptPartition {
                name: name.clone(),
                from: Some(day),
                to: Some(to),
            });
            created.push(name);
        }
        Ok::<_, StoreError>(created)
    })
    .await
}

/// Drops every partition whose whole range ends at or before `cutoff` (the legacy partition
/// included, once its upper bound has passed), oldest first, each in a transaction of its own;
/// returns their names. Rows go with their partition: no DELETE, no vacuum debt.
pub async fn drop_attempt_partitions_before(
    conn: &mut AsyncPgConnection,
    cutoff: DateTime<Utc>,
) -> Result<Vec<String>, StoreError> {
    let expired: Vec<String> = attempt_partitions(conn)
        .await?
        .into_iter()
        .filter(|partition| partition.to.is_some_and(|to| to <= cutoff))
        .map(|partition| partition.name)
        .collect();
    let mut dropped = Vec::with_capacity(expired.len());
    for name in expired {
        let table = quote_identifier(&name);
        conn.transaction(async |conn| {
            diesel::sql_query(format!("SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'"))
                .execute(conn)
                .await?;
            diesel::sql_query(format!("DROP TABLE IF EXISTS {table}"))
                .execute(conn)
                .await?;
            Ok::<_, StoreError>(())
        })
        .await?;
        dropped.push(name);
    }
    Ok(dropped)
}

/// Builds the unique index `(id, attempted_at)` the partitioned table needs on the unpartitioned
/// table, CONCURRENTLY, before the migration that partitions it runs: that migration attaches the
/// old table as a partition and would otherwise build the index while blocking writes. A build
/// that failed half way leaves an invalid index, made again here. Nothing to do once the table is
/// partitioned (or before it exists).
pub(crate) async fn prepare_online_partitioning(
    conn: &mut AsyncPgConnection,
) -> Result<(), StoreError> {
    #[derive(QueryableByName)]
    struct Table {
        #[diesel(sql_type = Text)]
        kind: String,
        #[diesel(sql_type = Nullable<diesel::sql_types::Bool>)]
        index_valid: Option<bool>,
    }
    let table: Option<Table> = diesel::sql_query(
        "SELECT t.relkind::text AS kind, \
           (SELECT x.indisvalid FROM pg_index x \
             WHERE x.indexrelid = to_regclass('delivery_attempts_legacy_id_attempted_at')) \
             AS index_valid \
         FROM pg_class t WHERE t.oid = to_regclass('delivery_attempts')",
    )
    .get_result(conn)
    .await
    .optional()?;
    let Some(table) = table.filter(|table| table.kind == "r") else {
        return Ok(());
    };
    match table.index_valid {
        Some(true) => return Ok(()),
        Some(false) => {
            diesel::sql_query(
                "DROP INDEX CONCURRENTLY IF EXISTS delivery_attempts_legacy_id_attempted_at",
            )
            .execute(conn)
            .await?;
        }
        None => {}
    }
    tracing::info!(
        "building delivery_attempts (id, attempted_at) concurrently before partitioning"
    );
    diesel::sql_query(
        "CREATE UNIQUE INDEX CONCURRENTLY delivery_attempts_legacy_id_attempted_at \
         ON delivery_attempts (id, attempted_at)",
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The partition starting on `day`: `delivery_attempts_p20261205`.
fn partition_name(day: DateTime<Utc>) -> String {
    format!("delivery_attempts_p{}", day.format("%Y%m%d"))
}

/// Midnight (UTC) of `at`'s day.
fn day_start(at: DateTime<Utc>) -> DateTime<Utc> {
    at.date_naive().and_time(NaiveTime::MIN).and_utc()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, day, hour, 0, 0)
            .single()
            .unwrap_or_default()
    }

    #[test]
    fn a_partition_covers_its_lower_bound_but_not_its_upper() {
        let partition = AttemptPartition {
            name: partition_name(at(5, 0)),
            from: Some(at(5, 0)),
            to: Some(at(6, 0)),
        };
        assert_eq!(partition.name, "delivery_attempts_p20261205");
        assert!(partition.covers(at(5, 0)));
        assert!(partition.covers(at(5, 23)));
        assert!(!partition.covers(at(6, 0)));
        assert!(!partition.covers(at(4, 23)));
        let legacy = AttemptPartition {
            name: LEGACY_PARTITION.to_owned(),
            from: None,
            to: Some(at(5, 0)),
        };
        assert!(legacy.covers(DateTime::<Utc>::MIN_UTC));
        assert!(!legacy.covers(at(5, 0)));
    }

    #[test]
    fn days_start_at_utc_midnight() {
        assert_eq!(day_start(at(5, 17)), at(5, 0));
        assert_eq!(day_start(at(5, 0)), at(5, 0));
    }

    #[test]
    fn the_cutoff_is_max_days_before_now() {
        let policy = PartitionPolicy {
            partition_days: NonZeroU32::MIN,
            days_ahead: 3,
            max_days: NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN),
        };
        assert_eq!(policy.cutoff(at(7, 12)), at(5, 12));
    }
}
