//! What fp-dispatcher writes about events other services publish: the first attempts it claimed
//! (deduplication across dispatchers) and the sends of copies that may have twins, with their
//! pending rows, and the events no tenant can receive.

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
    /// Without it the attempt is claimed but not sent (parked), and the copy that sends it later
    /// takes the send ([`take_sends`]).
    pub pending: Option<AttemptRow>,
}

/// A claim this call won: a first attempt, or the send of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimedAttempt {
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
pub async fn claim_first_attempts<'a>(
    conn: &mut AsyncPgConnection,
    claims: impl IntoIterator<Item = &'a FirstAttemptClaim>,
    now: DateTime<Utc>,
    covered_day: &mut CoveredDay,
) -> Result<Vec<ClaimedAttempt>, StoreError> {
    let claims = claims.into_iter().map(|claim| {
        // A claim without its pending row parks the attempt: nothing is sent yet.
        let sent_attempt = if claim.pending.is_some() { 1 } else { 0 };
        (claim.delivery_id, sent_attempt, claim.pending.as_ref())
    });
    claim::<false>(conn, claims, now, covered_day).await
}

/// Takes the sends of these attempts, each about to be sent by a copy that may have a twin (an
/// input the broker handed out again, one handed back, a parked copy), in one statement, with
/// their pending rows; returns those this call took. An attempt is taken once: a delivery whose
/// claim already has this attempt or a later one sent is left out, with its pending row, and its
/// copy finds the winner's pending row in the log. A delivery with no claim (pruned, or never
/// claimed) is claimed here. Of two sends of one delivery in `pending`, the first wins.
pub async fn take_sends<'a>(
    conn: &mut AsyncPgConnection,
    pending: impl IntoIterator<Item = &'a AttemptRow>,
    now: DateTime<Utc>,
    covered_day: &mut CoveredDay,
) -> Result<Vec<ClaimedAttempt>, StoreError> {
    let sends = pending
        .into_iter()
        .map(|row| (row.delivery_id, row.attempt_number, Some(row)));
    claim::<true>(conn, sends, now, covered_day).await
}

/// `claims`: each delivery, the attempt its claim says is sent (0: none), and the pending row to
/// store where the claim is won. `TAKE_OVER`: a claim whose sent attempt is lower is taken over
/// (a send), rather than kept (a first attempt).
async fn claim<'a, const TAKE_OVER: bool>(
    conn: &mut AsyncPgConnection,
    claims: impl Iterator<Item = (Uuid, i32, Option<&'a AttemptRow>)>,
    now: DateTime<Utc>,
    covered_day: &mut CoveredDay,
) -> Result<Vec<ClaimedAttempt>, StoreError> {
    // Inserted in one order by every caller: two statements in flight at once that share
    // deliveries (copies of one event) then wait for each other instead of deadlocking. The sort
    // is stable, so the first of two claims of a delivery is the one kept (one statement may not
    // take over one row twice either).
    let mut sorted: Vec<(Uuid, i32, Option<&AttemptRow>)> = claims.collect();
    if sorted.is_empty() {
        return Ok(Vec::new());
    }
    sorted.sort_by_key(|(delivery_id, _, _)| *delivery_id);
    sorted.dedup_by_key(|(delivery_id, _, _)| *delivery_id);
    let delivery_ids: Vec<Uuid> = sorted.iter().map(|(id, _, _)| *id).collect();
    let sent_attempts: Vec<i32> = sorted.iter().map(|(_, sent, _)| *sent).collect();
    let pending = sorted.iter().filter_map(|(_, _, pending)| *pending);
    let created = covered_day
        .ensure(conn, pending.clone().map(|row| row.attempted_at))
        .await?;
    if !created.is_empty() {
        tracing::warn!(partitions = ?created, "attempts sent on days without a partition; made them");
    }
    let claimed: Vec<(Uuid, bool)> = ClaimAttempts::<TAKE_OVER> {
        delivery_ids: &delivery_ids,
        sent_attempts: &sent_attempts,
        now,
        pending: InsertAttempts::of(pending),
    }
    .get_results(conn)
    .await?;
    Ok(claimed
        .into_iter()
        .map(|(delivery_id, pending_stored)| ClaimedAttempt {
            delivery_id,
            pending_stored,
        })
        .collect())
}

/// One statement text for any number of claims and pending rows (arrays through `unnest`), so it
/// is prepared once per connection (and per `TAKE_OVER`, a type of its own for the statement
/// cache). A pending row is stored only where its delivery was claimed here and fp-log-ingest
/// would store it as it is (`InsertAttempts::push_loggable`).
struct ClaimAttempts<'a, const TAKE_OVER: bool> {
    delivery_ids: &'a [Uuid],
    sent_attempts: &'a [i32],
    now: DateTime<Utc>,
    pending: InsertAttempts<'a>,
}

impl<const TAKE_OVER: bool> QueryId for ClaimAttempts<'_, TAKE_OVER> {
    type QueryId = ClaimAttempts<'static, TAKE_OVER>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<const TAKE_OVER: bool> Query for ClaimAttempts<'_, TAKE_OVER> {
    type SqlType = (sql_types::Uuid, sql_types::Bool);
}

impl<const TAKE_OVER: bool> QueryFragment<Pg> for ClaimAttempts<'_, TAKE_OVER> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "WITH claimed AS (INSERT INTO delivery_claims (delivery_id, claimed_at, sent_attempt) \
             SELECT delivery_id, ",
        );
        out.push_bind_param::<sql_types::Timestamptz, _>(&self.now)?;
        out.push_sql(", sent_attempt FROM unnest(");
        out.push_bind_param::<Array<sql_types::Uuid>, _>(self.delivery_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<sql_types::Integer>, _>(self.sent_attempts)?;
        out.push_sql(") AS claims (delivery_id, sent_attempt) ON CONFLICT ");
        if TAKE_OVER {
            // The claim's time moves with the send, so pruning cannot remove a claim whose twin
            // is about to try to take it.
            out.push_sql(
                "(delivery_id) DO UPDATE SET claimed_at = excluded.claimed_at, \
                 sent_attempt = excluded.sent_attempt \
                 WHERE delivery_claims.sent_attempt < excluded.sent_attempt",
            );
        } else {
            out.push_sql("DO NOTHING");
        }
        out.push_sql(" RETURNING delivery_id), ");
        self.pending.push_loggable(out.reborrow())?;
        out.push_sql(", stored AS (INSERT INTO delivery_attempts ");
        out.push_sql(&ATTEMPT_COLUMNS);
        // `IS TRUE` keeps the planner from making the `IN` a semi join: planned for ten rows, it
        // chose a nested loop over the two `WITH` queries, quadratic in the batch; a sublink left
        // in the filter is a hashed subplan, built once (`bench/README.md`, "the claim
        // statement's nested loops").
        out.push_sql(
            " SELECT * FROM loggable \
               WHERE (delivery_id IN (SELECT delivery_id FROM claimed)) IS TRUE \
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
