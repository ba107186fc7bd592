//! Delivery attempts (written only by fp-log-ingest; read by the api and the dashboard).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::StoreError;
use crate::schema::delivery_attempts;

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = delivery_attempts)]
pub struct AttemptRow {
    pub id: Uuid,
    pub delivery_id: Uuid,
    pub event_id: Uuid,
    pub tenant_id: Uuid,
    pub event_type: String,
    pub url: String,
    pub attempt_number: i32,
    pub attempted_at: DateTime<Utc>,
    pub duration_ms: i64,
    /// `[[name, value], ...]` in the order sent.
    pub request_headers: serde_json::Value,
    pub request_body: Vec<u8>,
    pub response_status: Option<i32>,
    pub response_headers: serde_json::Value,
    pub response_body: Vec<u8>,
    pub response_truncated: bool,
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    pub is_final: bool,
    pub next_retry_at: Option<DateTime<Utc>>,
}

/// Inserts a batch in one statement; rows whose id is already stored are skipped, so a record the
/// broker delivers twice still makes one row. Returns how many rows were new.
pub async fn insert_batch(
    conn: &mut AsyncPgConnection,
    rows: &[AttemptRow],
) -> Result<usize, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    Ok(diesel::insert_into(delivery_attempts::table)
        .values(rows)
        .on_conflict(delivery_attempts::id)
        .do_nothing()
        .execute(conn)
        .await?)
}

/// The tenant's newest attempts first.
pub async fn newest_for_tenant(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    limit: i64,
) -> Result<Vec<AttemptRow>, StoreError> {
    Ok(delivery_attempts::table
        .filter(delivery_attempts::tenant_id.eq(tenant_id))
        .order((
            delivery_attempts::attempted_at.desc(),
            delivery_attempts::id.desc(),
        ))
        .limit(limit)
        .select(AttemptRow::as_select())
        .load(conn)
        .await?)
}
