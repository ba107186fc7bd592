//! The transactional outbox (owned by fp-api): events committed with the change they announce,
//! published by the relay afterwards.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::StoreError;
use crate::schema::outbox;

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = outbox)]
pub struct NewOutboxEvent {
    pub event_id: Uuid,
    pub tenant_id: Uuid,
    pub event_type: String,
    pub payload: Vec<u8>,
    /// The W3C context of the request that recorded the event (empty when none).
    pub traceparent: String,
    pub tracestate: String,
    /// The submission the event is about (`None` for a test event): the deliveries view finds
    /// an event's deliveries by it.
    pub submission_id: Option<i64>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = outbox)]
pub struct PendingEvent {
    pub id: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub payload: Vec<u8>,
    /// The W3C context of the request that recorded the event (empty when none).
    pub traceparent: String,
    pub tracestate: String,
}

pub async fn insert(
    conn: &mut AsyncPgConnection,
    event: &NewOutboxEvent,
) -> Result<(), StoreError> {
    diesel::insert_into(outbox::table)
        .values(event)
        .execute(conn)
        .await?;
    Ok(())
}

/// The oldest unpublished events, locked so that several relays never publish the same row at the
/// same time. Call inside a transaction and mark them before it commits.
pub async fn claim_unpublished(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> Result<Vec<PendingEvent>, StoreError> {
    Ok(outbox::table
        .filter(outbox::published_at.is_null())
        .order(outbox::id.asc())
        .limit(limit)
        .select(PendingEvent::as_select())
        .for_update()
        .skip_locked()
        .load(conn)
        .await?)
}

pub async fn mark_published(conn: &mut AsyncPgConnection, ids: &[i64]) -> Result<(), StoreError> {
    diesel::update(outbox::table.filter(outbox::id.eq_any(ids)))
        .set(outbox::published_at.eq(Utc::now()))
        .execute(conn)
        .await?;
    Ok(())
}

/// How many rows wait to be published, and when the oldest of them was committed.
pub async fn backlog(
    conn: &mut AsyncPgConnection,
) -> Result<(i64, Option<DateTime<Utc>>), StoreError> {
    use diesel::dsl::{count_star, min};
    Ok(outbox::table
        .filter(outbox::published_at.is_null())
        .select((count_star(), min(outbox::created_at)))
        .first(conn)
        .await?)
}
