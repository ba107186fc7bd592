//! What fp-dispatcher writes about events other services publish: the first attempts it claimed
//! (deduplication across dispatchers) and the events no tenant can receive.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{self, Array};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::StoreError;
use crate::schema::{delivery_claims, undeliverable_events};

/// Claims the first attempts of these deliveries, in one statement; returns those this call
/// claimed. A delivery claimed before (by any dispatcher) is left out.
pub async fn claim_first_attempts(
    conn: &mut AsyncPgConnection,
    delivery_ids: &[Uuid],
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>, StoreError> {
    if delivery_ids.is_empty() {
        return Ok(Vec::new());
    }
    // Inserted in one order by every caller: two statements in flight at once that share
    // deliveries (copies of one event) then wait for each other instead of deadlocking.
    let mut sorted = delivery_ids.to_vec();
    sorted.sort_unstable();
    Ok(ClaimFirstAttempts {
        delivery_ids: &sorted,
        now,
    }
    .get_results(conn)
    .await?)
}

/// `INSERT INTO delivery_claims ... SELECT FROM unnest($1) ON CONFLICT DO NOTHING RETURNING ...`:
/// one statement text for any number of claims, so it is prepared once per connection, where a
/// multi-row `VALUES` would be parsed and planned again for each new count. The same id twice in
/// one statement is inserted once and returned once.
struct ClaimFirstAttempts<'a> {
    delivery_ids: &'a [Uuid],
    now: DateTime<Utc>,
}

impl QueryId for ClaimFirstAttempts<'_> {
    type QueryId = ClaimFirstAttempts<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for ClaimFirstAttempts<'_> {
    type SqlType = sql_types::Uuid;
}

impl QueryFragment<Pg> for ClaimFirstAttempts<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("INSERT INTO delivery_claims (delivery_id, claimed_at) SELECT delivery_id, ");
        out.push_bind_param::<sql_types::Timestamptz, _>(&self.now)?;
        out.push_sql(" FROM unnest(");
        out.push_bind_param::<Array<sql_types::Uuid>, _>(self.delivery_ids)?;
        out.push_sql(") AS claims (delivery_id) ON CONFLICT DO NOTHING RETURNING delivery_id");
        Ok(())
    }
}

/// An event recorded as undeliverable.
#[derive(Debug, Clone, Insertable, Queryable, Selectable, PartialEq, Eq)]
#[diesel(table_name = undeliverable_events)]
pub struct UndeliverableEvent {
    pub event_id: Uuid,
    /// The tenant the publisher named, which does not exist.
    pub unknown_tenant_id: Uuid,
    pub event_type: String,
    pub reason: String,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
}

/// Records the event once; a copy of it (a redelivery, a publisher's retry) changes nothing.
pub async fn record_undeliverable(
    conn: &mut AsyncPgConnection,
    event: &UndeliverableEvent,
) -> Result<(), StoreError> {
    diesel::insert_into(undeliverable_events::table)
        .values(event)
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(())
}

/// The undeliverable events recorded, newest first.
pub async fn undeliverable(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> Result<Vec<UndeliverableEvent>, StoreError> {
    Ok(undeliverable_events::table
        .order(undeliverable_events::recorded_at.desc())
        .limit(limit)
        .select(UndeliverableEvent::as_select())
        .load(conn)
        .await?)
}

/// Removes claims made before `claims_before` and undeliverable records made before
/// `records_before`; returns how many rows went.
pub async fn prune(
    conn: &mut AsyncPgConnection,
    claims_before: DateTime<Utc>,
    records_before: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let claims = diesel::delete(delivery_claims::table)
        .filter(delivery_claims::claimed_at.lt(claims_before))
        .execute(conn)
        .await?;
    let records = diesel::delete(undeliverable_events::table)
        .filter(undeliverable_events::recorded_at.lt(records_before))
        .execute(conn)
        .await?;
    Ok(claims + records)
}
