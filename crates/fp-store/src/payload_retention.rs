//! A tenant's payload retention: how many days the request and response bodies and headers of its
//! delivery attempts are kept, within the platform's `retention.max_days` (which drops whole
//! partitions). The setting (`payload_retention_settings`) is written by fp-api; the clearing and
//! its progress (`delivery_attempts`, `payload_clearing_progress`) by fp-log-ingest's maintenance.

use chrono::{DateTime, TimeDelta, Utc};
use diesel::prelude::*;
use diesel::sql_types;
use diesel::upsert::excluded;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::StoreError;
use crate::schema::{payload_clearing_progress, payload_retention_settings};

/// The tenant's payload retention in days; `None` when it keeps payloads as long as their records.
pub async fn find(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
) -> Result<Option<i32>, StoreError> {
    Ok(payload_retention_settings::table
        .find(tenant_id)
        .select(payload_retention_settings::days)
        .first(conn)
        .await
        .optional()?)
}

/// Sets the tenant's payload retention (already checked against the platform maximum), or removes
/// it with `None`.
pub async fn set(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    days: Option<i32>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    match days {
        Some(days) => {
            diesel::insert_into(payload_retention_settings::table)
                .values((
                    payload_retention_settings::tenant_id.eq(tenant_id),
                    payload_retention_settings::days.eq(days),
                    payload_retention_settings::updated_at.eq(now),
                ))
                .on_conflict(payload_retention_settings::tenant_id)
                .do_update()
                .set((
                    payload_retention_settings::days.eq(excluded(payload_retention_settings::days)),
                    payload_retention_settings::updated_at
                        .eq(excluded(payload_retention_settings::updated_at)),
                ))
                .execute(conn)
                .await?;
        }
        None => {
            diesel::delete(payload_retention_settings::table.find(tenant_id))
                .execute(conn)
                .await?;
        }
    }
    Ok(())
}

#[derive(QueryableByName)]
struct TenantToClear {
    #[diesel(sql_type = sql_types::Uuid)]
    tenant_id: Uuid,
    #[diesel(sql_type = sql_types::Integer)]
    days: i32,
    #[diesel(sql_type = sql_types::Nullable<sql_types::Timestamptz>)]
    cleared_before: Option<DateTime<Utc>>,
}

/// Clears the request and response bodies and headers of every attempt older than its tenant's
/// payload retention at `now`, `batch_size` rows per statement, each statement its own
/// transaction, so no lock is held for long and the log pages never wait. The rows keep their
/// metadata (ids, URL, times, status, error) and are marked with when and under how many days they
/// were cleared, so the log can say so, and no run rewrites them. Tenants without a setting keep
/// their payloads until their partition is dropped. Returns the number of attempts cleared.
///
/// Each tenant's `payload_clearing_progress` says up to when everything is cleared, so a run walks
/// only the attempts between it and the run's cutoff. A tenant that shortens its retention moves
/// its cutoff forward (the next run clears the new range); one that lengthens it gets back nothing
/// already cleared. An attempt stored after its tenant's progress moved past its time (a log-ingest
/// backlog of days) keeps its payload until its partition goes.
pub async fn clear_expired_payloads(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
    batch_size: i64,
) -> Result<u64, StoreError> {
    let tenants = diesel::sql_query(
        "SELECT settings.tenant_id, settings.days, progress.cleared_before \
         FROM payload_retention_settings settings \
         LEFT JOIN payload_clearing_progress progress USING (tenant_id) \
         ORDER BY settings.tenant_id",
    )
    .load::<TenantToClear>(conn)
    .await?;
    let mut cleared = 0;
    for tenant in tenants {
        let cutoff = now - TimeDelta::days(i64::from(tenant.days));
        if tenant
            .cleared_before
            .is_some_and(|cleared_before| cleared_before >= cutoff)
        {
            continue;
        }
        cleared += clear_tenant(conn, &tenant, cutoff, now, batch_size.max(1)).await?;
        diesel::insert_into(payload_clearing_progress::table)
            .values((
                payload_clearing_progress::tenant_id.eq(tenant.tenant_id),
                payload_clearing_progress::cleared_before.eq(cutoff),
            ))
            .on_conflict(payload_clearing_progress::tenant_id)
            .do_update()
            .set(
                payload_clearing_progress::cleared_before.eq(diesel::dsl::sql::<
                    sql_types::Timestamptz,
                >(
                    "GREATEST(payload_clearing_progress.cleared_before, excluded.cleared_before)",
                )),
            )
            .execute(conn)
            .await?;
    }
    Ok(cleared)
}

/// What one batch cleared: how many attempts, and the latest time among them.
#[derive(QueryableByName)]
struct Batch {
    #[diesel(sql_type = sql_types::BigInt)]
    cleared: i64,
    #[diesel(sql_type = sql_types::Nullable<sql_types::Timestamptz>)]
    reached: Option<DateTime<Utc>>,
}

/// One tenant's attempts in `[cleared_before, cutoff)`, oldest first, batch by batch until a
/// batch comes back short. Each batch starts where the last one ended (at its latest time, whose
/// cleared rows the `payload_cleared_at` condition skips), so a backlog is one walk of the
/// tenant's time index, not one per batch. The rows are updated by `(id, attempted_at)`; the
/// update repeats the batch's tenant and time range because diesel sends `sql_query` unprepared,
/// so each statement is planned with its values, and for a batch of ~1,000 rows the planner hashes
/// the batch against a scan of every partition unless the update side is narrowed to the tenant's
/// rows in range (`bench/README.md`, "Issue 15").
async fn clear_tenant(
    conn: &mut AsyncPgConnection,
    tenant: &TenantToClear,
    cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
    batch_size: i64,
) -> Result<u64, StoreError> {
    let mut cleared = 0;
    let mut from = tenant.cleared_before;
    loop {
        let batch = diesel::sql_query(
            "WITH batch AS ( \
                 SELECT id, attempted_at FROM delivery_attempts \
                 WHERE tenant_id = $1 AND attempted_at < $2 \
                   AND attempted_at >= COALESCE($3, '-infinity'::timestamptz) \
                   AND payload_cleared_at IS NULL \
                 ORDER BY attempted_at LIMIT $4 \
             ), cleared AS ( \
                 UPDATE delivery_attempts AS attempt SET \
                     request_headers = '[]'::jsonb, request_body = ''::bytea, \
                     response_headers = '[]'::jsonb, response_body = ''::bytea, \
                     payload_cleared_at = $5, payload_retention_days = $6 \
                 FROM batch \
                 WHERE attempt.id = batch.id AND attempt.attempted_at = batch.attempted_at \
                   AND attempt.tenant_id = $1 AND attempt.attempted_at < $2 \
                   AND attempt.attempted_at >= COALESCE($3, '-infinity'::timestamptz) \
                 RETURNING attempt.attempted_at \
             ) \
             SELECT count(*) AS cleared, max(attempted_at) AS reached FROM cleared",
        )
        .bind::<sql_types::Uuid, _>(tenant.tenant_id)
        .bind::<sql_types::Timestamptz, _>(cutoff)
        .bind::<sql_types::Nullable<sql_types::Timestamptz>, _>(from)
        .bind::<sql_types::BigInt, _>(batch_size)
        .bind::<sql_types::Timestamptz, _>(now)
        .bind::<sql_types::Integer, _>(tenant.days)
        .get_result::<Batch>(conn)
        .await?;
        cleared += u64::try_from(batch.cleared).unwrap_or(0);
        if batch.cleared < batch_size {
            return Ok(cleared);
        }
        from = batch.reached.or(from);
    }
}

/// When an attempt's payload was cleared, and under how many days of retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct PayloadClearing {
    #[diesel(sql_type = sql_types::Uuid)]
    pub attempt_id: Uuid,
    #[diesel(sql_type = sql_types::Timestamptz)]
    pub cleared_at: DateTime<Utc>,
    #[diesel(sql_type = sql_types::Integer)]
    pub retention_days: i32,
}

/// Which of the tenant's `attempts` (id and time, as a log page has them) had their payload
/// cleared. Looked up by primary key beside the page's own query, so the pages' rows stay as they
/// are.
pub async fn cleared_among(
    conn: &mut AsyncPgConnection,
    tenant_id: Option<Uuid>,
    attempts: &[(Uuid, DateTime<Utc>)],
) -> Result<Vec<PayloadClearing>, StoreError> {
    if attempts.is_empty() {
        return Ok(Vec::new());
    }
    let (ids, times): (Vec<Uuid>, Vec<DateTime<Utc>>) = attempts.iter().copied().unzip();
    Ok(diesel::sql_query(
        "SELECT attempt.id AS attempt_id, attempt.payload_cleared_at AS cleared_at, \
                attempt.payload_retention_days AS retention_days \
         FROM delivery_attempts attempt \
         JOIN UNNEST($1::uuid[], $2::timestamptz[]) AS page (id, attempted_at) \
           ON attempt.id = page.id AND attempt.attempted_at = page.attempted_at \
         WHERE attempt.payload_cleared_at IS NOT NULL \
           AND attempt.payload_retention_days IS NOT NULL \
           AND ($3::uuid IS NULL OR attempt.tenant_id = $3)",
    )
    .bind::<sql_types::Array<sql_types::Uuid>, _>(ids)
    .bind::<sql_types::Array<sql_types::Timestamptz>, _>(times)
    .bind::<sql_types::Nullable<sql_types::Uuid>, _>(tenant_id)
    .load(conn)
    .await?)
}

/// How the tenant's attempt `attempt_id` had its payload cleared; `None` if it was not (or is not
/// the tenant's). A redelivery asks before sending a stored request: a cleared one is empty.
pub async fn clearing_of(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    attempt_id: Uuid,
) -> Result<Option<PayloadClearing>, StoreError> {
    Ok(diesel::sql_query(
        "SELECT id AS attempt_id, payload_cleared_at AS cleared_at, \
                payload_retention_days AS retention_days \
         FROM delivery_attempts \
         WHERE tenant_id = $1 AND id = $2 \
           AND payload_cleared_at IS NOT NULL AND payload_retention_days IS NOT NULL",
    )
    .bind::<sql_types::Uuid, _>(tenant_id)
    .bind::<sql_types::Uuid, _>(attempt_id)
    .get_result(conn)
    .await
    .optional()?)
}
