//! The transactional outbox (owned by fp-api): events committed with the change they announce,
//! published by the relay afterwards.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::dsl::now;
use diesel::pg::Pg;
use diesel::pg::data_types::PgInterval;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{self, Array, BigInt, Binary, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::StoreError;
use crate::schema::outbox;

/// An outbox row's event: as the api writes it, hands it to its relay and the relay's poll claims
/// it back.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = outbox)]
pub struct OutboxEvent {
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

pub async fn insert(conn: &mut AsyncPgConnection, event: &OutboxEvent) -> Result<(), StoreError> {
    insert_many(conn, std::slice::from_ref(event)).await
}

/// Inserts `events` in one statement.
pub async fn insert_many(
    conn: &mut AsyncPgConnection,
    events: &[OutboxEvent],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    InsertEvents::of(events).execute(conn).await?;
    Ok(())
}

/// `INSERT INTO outbox ... SELECT FROM unnest(<one array per column>)`: one statement text for
/// every batch size (and for a single event), so it is prepared once per connection, where a
/// multi-row `VALUES` would be parsed and planned again for each new size.
pub(crate) struct InsertEvents<'a> {
    event_ids: Vec<Uuid>,
    tenant_ids: Vec<Uuid>,
    event_types: Vec<&'a str>,
    payloads: Vec<&'a [u8]>,
    traceparents: Vec<&'a str>,
    tracestates: Vec<&'a str>,
    submission_ids: Vec<Option<i64>>,
}

impl<'a> InsertEvents<'a> {
    pub(crate) fn of(events: &'a [OutboxEvent]) -> Self {
        Self {
            event_ids: events.iter().map(|event| event.event_id).collect(),
            tenant_ids: events.iter().map(|event| event.tenant_id).collect(),
            event_types: events
                .iter()
                .map(|event| event.event_type.as_str())
                .collect(),
            payloads: events
                .iter()
                .map(|event| event.payload.as_slice())
                .collect(),
            traceparents: events
                .iter()
                .map(|event| event.traceparent.as_str())
                .collect(),
            tracestates: events
                .iter()
                .map(|event| event.tracestate.as_str())
                .collect(),
            submission_ids: events.iter().map(|event| event.submission_id).collect(),
        }
    }
}

impl QueryId for InsertEvents<'_> {
    type QueryId = InsertEvents<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Pg> for InsertEvents<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        // Ordered like the input, so the relay (which walks ids upwards) publishes a batch's
        // events in the order they were recorded.
        out.push_sql(
            "INSERT INTO outbox \
               (event_id, tenant_id, event_type, payload, traceparent, tracestate, submission_id) \
             SELECT event_id, tenant_id, event_type, payload, traceparent, tracestate, \
               submission_id \
             FROM unnest(",
        );
        out.push_bind_param::<Array<sql_types::Uuid>, _>(&self.event_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<sql_types::Uuid>, _>(&self.tenant_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.event_types)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Binary>, _>(&self.payloads)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.traceparents)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.tracestates)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<BigInt>>, _>(&self.submission_ids)?;
        out.push_sql(
            ") WITH ORDINALITY AS new (event_id, tenant_id, event_type, payload, traceparent, \
               tracestate, submission_id, position) \
             ORDER BY position",
        );
        Ok(())
    }
}

/// The oldest unpublished events created at least `min_age` ago (when their transaction began, by
/// the database's clock), locked so that several relays never publish the same row at the same
/// time. Call inside a
/// transaction and mark them before it commits. Younger rows belong to the api that committed them,
/// which hands them to its relay in memory (`fp-api`'s `OutboxHandoff`); `min_age` is how long the
/// poll leaves them to it.
pub async fn claim_unpublished(
    conn: &mut AsyncPgConnection,
    limit: i64,
    min_age: Duration,
) -> Result<Vec<OutboxEvent>, StoreError> {
    let min_age =
        PgInterval::from_microseconds(i64::try_from(min_age.as_micros()).unwrap_or(i64::MAX));
    Ok(outbox::table
        .filter(outbox::published_at.is_null())
        .filter(outbox::created_at.le(now.into_sql::<Timestamptz>() - min_age))
        .order(outbox::id.asc())
        .limit(limit)
        .select(OutboxEvent::as_select())
        .for_update()
        .skip_locked()
        .load(conn)
        .await?)
}

/// Marks the events `event_ids` published; returns how many were not published already. A row
/// the relay's poll claimed meanwhile waits for that transaction, and a row marked already keeps
/// its first publication time.
pub async fn mark_published(
    conn: &mut AsyncPgConnection,
    event_ids: &[Uuid],
) -> Result<usize, StoreError> {
    Ok(MarkPublished {
        event_ids,
        at: Utc::now(),
    }
    .execute(conn)
    .await?)
}

/// `UPDATE outbox SET published_at = $1 WHERE event_id = ANY($2) AND published_at IS NULL`,
/// written out because diesel never caches the prepared statement of an `update()`: this one runs
/// once per relayed batch, so it is parsed once per connection instead. By event id, which both the
/// poll and the in-memory hand-off know (the hand-off never learns the rows' ids).
struct MarkPublished<'a> {
    event_ids: &'a [Uuid],
    at: DateTime<Utc>,
}

impl QueryId for MarkPublished<'_> {
    type QueryId = MarkPublished<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Pg> for MarkPublished<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("UPDATE outbox SET published_at = ");
        out.push_bind_param::<Timestamptz, _>(&self.at)?;
        out.push_sql(" WHERE event_id = ANY(");
        out.push_bind_param::<Array<sql_types::Uuid>, _>(self.event_ids)?;
        out.push_sql(") AND published_at IS NULL");
        Ok(())
    }
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

/// How pruning goes through the published rows: `size` rows per `DELETE`, each statement its own
/// short transaction, with `pause` between them so the relay's writes and autovacuum keep up.
#[derive(Debug, Clone, Copy)]
pub struct PruneBatches {
    pub size: i64,
    pub pause: Duration,
}

impl PruneBatches {
    /// What the api's maintenance loop and `fpctl maintenance run` use: a thousand rows make a
    /// short transaction beside the relay's, and 50 ms between them let the relay's writes and
    /// autovacuum keep pace through a long backlog.
    pub const STANDARD: PruneBatches = PruneBatches {
        size: 1_000,
        pause: Duration::from_millis(50),
    };
}

/// One batch of [`prune_published`]: `$2` rows published before `$1`, picked through
/// `outbox_published` and deleted by primary key. The ids are gathered into an array first, so the
/// `DELETE` is an index lookup of exactly those rows whatever the table's size (an `IN (SELECT
/// ...)` may be planned as a hash join over the whole table). A published row is never unpublished,
/// so the rows picked are still the ones to delete when the `DELETE` reaches them.
const PRUNE_BATCH: &str = "DELETE FROM outbox WHERE id = ANY (ARRAY( \
        SELECT id FROM outbox \
        WHERE published_at IS NOT NULL AND published_at < $1 \
        ORDER BY published_at LIMIT $2 \
    ))";

/// Removes the rows published before `published_before`, batch after batch until none is left;
/// returns how many went. Unpublished rows are never touched, however old: the relay still has to
/// send them. The rows are found through `outbox_published` (published rows only, by publication
/// time), so a batch reads no more than it deletes and never walks the relay's
/// `outbox_unpublished`. Rows the relay is marking right now are not published yet in this
/// statement's snapshot, so the two never wait on each other.
pub async fn prune_published(
    conn: &mut AsyncPgConnection,
    published_before: DateTime<Utc>,
    batches: PruneBatches,
) -> Result<u64, StoreError> {
    delete_in_batches(conn, PRUNE_BATCH, published_before, batches).await
}

/// PostgreSQL's plan for one batch of [`prune_published`], one line a row, so tests can check that
/// it stays a walk of `outbox_published`.
pub async fn explain_prune(
    conn: &mut AsyncPgConnection,
    published_before: DateTime<Utc>,
    batch_size: i64,
) -> Result<Vec<String>, StoreError> {
    explain_batch(conn, PRUNE_BATCH, published_before, batch_size).await
}

/// Runs `batch`, a `DELETE` of at most `$2` rows older than `$1`, again and again until one
/// deletes fewer than a full batch; returns how many rows went in all. Each statement is its own
/// short transaction, with `batches.pause` between them.
pub(crate) async fn delete_in_batches(
    conn: &mut AsyncPgConnection,
    batch: &'static str,
    before: DateTime<Utc>,
    batches: PruneBatches,
) -> Result<u64, StoreError> {
    let mut removed = 0u64;
    loop {
        let deleted = diesel::sql_query(batch)
            .bind::<Timestamptz, _>(before)
            .bind::<BigInt, _>(batches.size)
            .execute(conn)
            .await?;
        removed += deleted as u64;
        if (deleted as i64) < batches.size {
            return Ok(removed);
        }
        tokio::time::sleep(batches.pause).await;
    }
}

/// PostgreSQL's plan for one `batch` of [`delete_in_batches`], one line a row.
pub(crate) async fn explain_batch(
    conn: &mut AsyncPgConnection,
    batch: &'static str,
    before: DateTime<Utc>,
    batch_size: i64,
) -> Result<Vec<String>, StoreError> {
    #[derive(QueryableByName)]
    struct PlanLine {
        #[diesel(sql_type = diesel::sql_types::Text, column_name = "QUERY PLAN")]
        line: String,
    }
    let lines: Vec<PlanLine> = diesel::sql_query(format!("EXPLAIN {batch}"))
        .bind::<Timestamptz, _>(before)
        .bind::<BigInt, _>(batch_size)
        .load(conn)
        .await?;
    Ok(lines.into_iter().map(|plan| plan.line).collect())
}
