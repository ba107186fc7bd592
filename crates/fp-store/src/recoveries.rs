//! Bulk recoveries of failed deliveries (written only by fp-api, which queues them; read by the api
//! and the dashboard): what one `POST /api/v2/webhooks/logs/redeliver` queued, and how far it got.
//!
//! Progress is not stored but read from the log: a delivery of the recovery counts as delivered
//! once a manual attempt made at or after `requested_at` got a 2xx, as failed once such an attempt
//! ended otherwise, and as pending until then. An attempt whose outcome is not logged yet (its
//! pending record, error kind `interrupted`) still counts as pending.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::StoreError;
use crate::schema::recoveries;

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = recoveries)]
pub struct RecoveryRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// The range `[range_from, range_to)` of the call.
    pub range_from: DateTime<Utc>,
    pub range_to: DateTime<Utc>,
    /// Taken before the first job was published.
    pub requested_at: DateTime<Utc>,
    /// The deliveries queued again, oldest first.
    pub delivery_ids: Vec<Uuid>,
    /// Failed deliveries of the range left out: their body was made for another format.
    pub skipped_format_changed: i64,
    /// More failed deliveries of the range were left for another call.
    pub more: bool,
}

pub async fn insert(conn: &mut AsyncPgConnection, row: &RecoveryRow) -> Result<(), StoreError> {
    diesel::insert_into(recoveries::table)
        .values(row)
        .execute(conn)
        .await?;
    Ok(())
}

/// The tenant's recovery `id`; `None` when the tenant has none of that id (another tenant's
/// included).
pub async fn find(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<RecoveryRow>, StoreError> {
    use recoveries::dsl;

    Ok(dsl::recoveries
        .filter(dsl::id.eq(id))
        .filter(dsl::tenant_id.eq(tenant_id))
        .select(RecoveryRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// How the deliveries of a recovery stand; the three add up to its number of deliveries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, QueryableByName)]
pub struct RecoveryProgress {
    /// A manual attempt since the recovery was asked for got a 2xx.
    #[diesel(sql_type = sql_types::Int8)]
    pub delivered: i64,
    /// A manual attempt since then ended without one.
    #[diesel(sql_type = sql_types::Int8)]
    pub failed: i64,
    /// No such attempt has an outcome in the log yet.
    #[diesel(sql_type = sql_types::Int8)]
    pub pending: i64,
}

/// Where `recovery`'s deliveries stand (see the module documentation). `pending_kind` is the
/// error kind of an attempt record whose outcome has not come yet. Each delivery's attempts are
/// read through `delivery_attempts_delivery`.
pub async fn progress(
    conn: &mut AsyncPgConnection,
    recovery: &RecoveryRow,
    pending_kind: &str,
) -> Result<RecoveryProgress, StoreError> {
    Ok(diesel::sql_query(
        "SELECT \
           count(*) FILTER (WHERE o.delivered) AS delivered, \
           count(*) FILTER (WHERE NOT o.delivered AND o.ended) AS failed, \
           count(*) FILTER (WHERE NOT o.delivered AND NOT o.ended) AS pending \
         FROM unnest($1::uuid[]) AS d(delivery_id) \
         CROSS JOIN LATERAL ( \
           SELECT coalesce(bool_or(a.response_status BETWEEN 200 AND 299), false) AS delivered, \
                  coalesce(bool_or(a.final), false) AS ended \
           FROM delivery_attempts a \
           WHERE a.delivery_id = d.delivery_id AND a.tenant_id = $2 AND a.manual \
             AND a.attempted_at >= $3 AND a.error_kind IS DISTINCT FROM $4 \
         ) o",
    )
    .bind::<sql_types::Array<sql_types::Uuid>, _>(&recovery.delivery_ids)
    .bind::<sql_types::Uuid, _>(recovery.tenant_id)
    .bind::<sql_types::Timestamptz, _>(recovery.requested_at)
    .bind::<sql_types::Text, _>(pending_kind)
    .get_result(conn)
    .await?)
}
