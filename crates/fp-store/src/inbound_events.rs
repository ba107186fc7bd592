//! What fp-dispatcher writes about events other services publish: the first attempts it claimed
//! (deduplication across dispatchers) with their pending rows and the events no tenant can receive.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{self, Array};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::StoreError;
use crate::attempts::{ATTEMPT_COLUMNS, AttemptRow, InsertAttempts};
use crate::partitions::CoveredDay;
use crate::schema::{delivery_claims, undeliverable_events};

/// A first attempt to claim, with the pending row of the attempt when it is about to be sent.
#[derive(Debug, Clone)]
pub struct FirstAttemptClaim {
    pub delivery_id: Uuid,
    /// Stored with the claim, in the same statement: the attempt is then in the log as
    /// `interrupted` before its request leaves, without a pending record through the broker.
    pub pending: Option<AttemptRow>,
}

/// A first attempt this call claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimedFirstAttempt {
    pub delivery_id: Uuid,
    /// Its pending row is in the log. Not stored, though claimed: the tenant is gone, the event
    /// was erased, or an erasure or a deletion holds the tenant, which fp-log-ingest handles when
    /// it gets the pending record instead.
    pub pending_stored: bool,
}

/// Claims the first attempts of these deliveries, in one statement, and stores the pending rows
/// of those claimed; returns those this call claimed. A delivery claimed before (by any
/// dispatcher) is left out, and so is its pending row: a copy that loses its claim leaves no
/// trace of an attempt it never made. Of two claims of one delivery in `claims`, the first wins.
pub async fn claim_first_attempts(
    conn: &mut AsyncPgConnection,
    claims: &[FirstAttemptClaim],
    now: DateTime<Utc>,
    covered_day: &mut CoveredDay,
) -> Result<Vec<ClaimedFirstAttempt>, StoreError> {
    if claims.is_empty() {
        return Ok(Vec::new());
    }
    // Inserted in one order by every caller: two statements in flight at once that share
    // deliveries (copies of one event) then wait for each other instead of deadlocking. The sort
    // is stable, so the first of two claims of a delivery is the one kept.
    let mut sorted: Vec<&FirstAttemptClaim> = claims.iter().collect();
    sorted.sort_by_key(|claim| claim.delivery_id);
    sorted.dedup_by_key(|claim| claim.delivery_id);
    let delivery_ids: Vec<Uuid> = sorted.iter().map(|claim| claim.delivery_id).collect();
    let pending = sorted.iter().filter_map(|claim| claim.pending.as_ref());
    let created = covered_day
        .ensure(conn, pending.clone().map(|row| row.attempted_at))
        .await?;
    if !created.is_empty() {
        tracing::warn!(partitions = ?created, "attempts sent on days without a partition; made them");
    }
    let claimed: Vec<(Uuid, bool)> = ClaimFirstAttempts {
        delivery_ids: &delivery_ids,
        now,
        pending: InsertAttempts::of(pending),
    }
    .get_results(conn)
    .await?;
    Ok(claimed
        .into_iter()
        .map(|(delivery_id, pending_stored)| ClaimedFirstAttempt {
            delivery_id,
            pending_stored,
        })
        .collect())
}

/// One statement text for any number of claims and pending rows (arrays through `unnest`), so it
/// is prepared once per connection. A pending row is stored only where its delivery was claimed
/// here and fp-log-ingest would store it as it is (`InsertAttempts::push_loggable`).
struct ClaimFirstAttempts<'a> {
    delivery_ids: &'a [Uuid],
    now: DateTime<Utc>,
    pending: InsertAttempts<'a>,
}

impl QueryId for ClaimFirstAttempts<'_> {
    type QueryId = ClaimFirstAttempts<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for ClaimFirstAttempts<'_> {
    type SqlType = (sql_types::Uuid, sql_types::Bool);
}

impl QueryFragment<Pg> for ClaimFirstAttempts<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "WITH claimed AS (INSERT INTO delivery_claims (delivery_id, claimed_at) \
             SELECT delivery_id, ",
        );
        out.push_bind_param::<sql_types::Timestamptz, _>(&self.now)?;
        out.push_sql(" FROM unnest(");
        out.push_bind_param::<Array<sql_types::Uuid>, _>(self.delivery_ids)?;
        out.push_sql(") AS claims (delivery_id) ON CONFLICT DO NOTHING RETURNING delivery_id), ");
        self.pending.push_loggable(out.reborrow())?;
        out.push_sql(", stored AS (INSERT INTO delivery_attempts ");
        out.push_sql(&ATTEMPT_COLUMNS);
        out.push_sql(
            " SELECT * FROM loggable \
               WHERE delivery_id IN (SELECT delivery_id FROM claimed) \
               ON CONFLICT (id, attempted_at) DO NOTHING RETURNING delivery_id) \
             SELECT delivery_id, EXISTS (SELECT 1 FROM stored \
                                         WHERE stored.delivery_id = claimed.delivery_id) \
             FROM claimed",
        );
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
