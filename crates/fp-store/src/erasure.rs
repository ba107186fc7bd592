//! Erasure of a submission's personal data (owned by fp-api; the dispatcher reads whether an event
//! was erased). One erasure runs in one transaction of the api, which holds the submission's row
//! lock throughout, so erasures and status changes of one submission serialise. It is the one
//! writer of `delivery_attempts` besides fp-log-ingest and fp-dispatcher (a fresh event's first
//! attempt, a copy's whose send it took): it rewrites the bodies of the attempts of
//! the erased events, found by tenant and event id, each updated by its id and `attempted_at` so a
//! table partitioned by time touches one partition per row.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use diesel::dsl::max;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use fp_domain::erasure;
use uuid::Uuid;

use crate::StoreError;
use crate::attempts::AttemptRow;
use crate::outbox::{self as outbox_store, PruneBatches};
use crate::schema::{
    delivery_attempts, erased_events, erasures, outbox, submission_events, submissions, tenants,
};

/// The ids of the submission's events, from `submission_events`, which keeps them after their
/// outbox rows are pruned.
pub async fn events_of_submission(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    submission_id: i64,
) -> Result<Vec<Uuid>, StoreError> {
    Ok(submission_events::table
        .filter(submission_events::tenant_id.eq(tenant_id))
        .filter(submission_events::submission_id.eq(submission_id))
        .select(submission_events::event_id)
        .load(conn)
        .await?)
}

/// One batch of [`prune_submission_events`]: `$2` rows of events created before `$1` that have no
/// attempt left, picked through `submission_events_created` (each checked through
/// `delivery_attempts_event`) and deleted by primary key (gathered into an array first, as in the
/// outbox's pruning, so the `DELETE` is an index lookup of exactly those rows).
const PRUNE_BATCH: &str = "DELETE FROM submission_events WHERE event_id = ANY (ARRAY( \
        SELECT e.event_id FROM submission_events e \
        WHERE e.created_at < $1 \
          AND NOT EXISTS (SELECT 1 FROM delivery_attempts a WHERE a.event_id = e.event_id) \
        ORDER BY e.created_at LIMIT $2 \
    ))";

/// Removes the rows of events created before `created_before` that have no delivery attempt
/// left, batch after batch until none is left; returns how many went. Pass a time by which the
/// events' own retries are over and their attempts dropped (`Settings::submission_event_retention`):
/// an event still waiting for a retry has no attempt row yet. An event manually redelivered since
/// has a newer attempt, which keeps its row until that attempt's partition is dropped too: until
/// then it is still there to erase, search and delete by submission.
pub async fn prune_submission_events(
    conn: &mut AsyncPgConnection,
    created_before: DateTime<Utc>,
    batches: PruneBatches,
) -> Result<u64, StoreError> {
    outbox_store::delete_in_batches(conn, PRUNE_BATCH, created_before, batches).await
}

/// PostgreSQL's plan for one batch of [`prune_submission_events`], one line a row, so tests can
/// check that it stays a walk of `submission_events_created`.
pub async fn explain_submission_events_prune(
    conn: &mut AsyncPgConnection,
    created_before: DateTime<Utc>,
    batch_size: i64,
) -> Result<Vec<String>, StoreError> {
    outbox_store::explain_batch(conn, PRUNE_BATCH, created_before, batch_size).await
}

/// Whether the submission was erased before.
pub async fn erased_before(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    submission_id: i64,
) -> Result<bool, StoreError> {
    Ok(diesel::select(diesel::dsl::exists(
        erasures::table
            .filter(erasures::tenant_id.eq(tenant_id))
            .filter(erasures::submission_id.eq(submission_id)),
    ))
    .get_result(conn)
    .await?)
}

/// Writes the submission's personal fields (already replaced by the caller).
pub async fn set_submission_personal_data(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    submission_id: i64,
    text_feedback: &str,
    customer_name: Option<&str>,
) -> Result<usize, StoreError> {
    Ok(diesel::update(
        submissions::table
            .filter(submissions::tenant_id.eq(tenant_id))
            .filter(submissions::id.eq(submission_id)),
    )
    .set((
        submissions::text_feedback.eq(text_feedback),
        submissions::customer_name.eq(customer_name),
    ))
    .execute(conn)
    .await?)
}

/// The encoded event of an outbox row still kept.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = outbox)]
pub struct OutboxPayload {
    pub id: i64,
    pub payload: Vec<u8>,
}

pub async fn outbox_payloads(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    event_ids: &[Uuid],
) -> Result<Vec<OutboxPayload>, StoreError> {
    Ok(outbox::table
        .filter(outbox::tenant_id.eq(tenant_id))
        .filter(outbox::event_id.eq_any(event_ids))
        .select(OutboxPayload::as_select())
        .load(conn)
        .await?)
}

pub async fn set_outbox_payload(
    conn: &mut AsyncPgConnection,
    id: i64,
    payload: &[u8],
) -> Result<(), StoreError> {
    diesel::update(outbox::table.find(id))
        .set(outbox::payload.eq(payload))
        .execute(conn)
        .await?;
    Ok(())
}

/// What an erasure reads of one attempt of an erased event.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = delivery_attempts)]
pub struct AttemptBodies {
    pub id: Uuid,
    pub attempted_at: DateTime<Utc>,
    pub event_id: Uuid,
    pub delivery_id: Uuid,
    pub attempt_number: i32,
    pub url: String,
    #[diesel(column_name = is_final)]
    pub is_final: bool,
    pub request_body: Vec<u8>,
    pub response_body: Vec<u8>,
}

/// Every logged attempt of these events of the tenant (through `delivery_attempts_event`).
pub async fn attempt_bodies(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    event_ids: &[Uuid],
) -> Result<Vec<AttemptBodies>, StoreError> {
    Ok(delivery_attempts::table
        .filter(delivery_attempts::tenant_id.eq(tenant_id))
        .filter(delivery_attempts::event_id.eq_any(event_ids))
        .select(AttemptBodies::as_select())
        .load(conn)
        .await?)
}

pub async fn set_attempt_bodies(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    attempt: &AttemptBodies,
    request_body: &[u8],
    response_body: &[u8],
) -> Result<(), StoreError> {
    diesel::update(
        delivery_attempts::table
            .filter(delivery_attempts::id.eq(attempt.id))
            .filter(delivery_attempts::attempted_at.eq(attempt.attempted_at))
            .filter(delivery_attempts::tenant_id.eq(tenant_id))
            .filter(delivery_attempts::event_id.eq(attempt.event_id)),
    )
    .set((
        delivery_attempts::request_body.eq(request_body),
        delivery_attempts::response_body.eq(response_body),
    ))
    .execute(conn)
    .await?;
    Ok(())
}

/// Locks the tenant's row `FOR UPDATE` until the erasure's transaction ends. Take it right before
/// reading the attempts: writers of attempt rows lock their tenants `FOR KEY SHARE` (log-ingest's
/// batches, which look for erased events after that lock) or skip a tenant so locked (the
/// dispatcher's claims, whose pending rows then go to log-ingest), so every such row is either
/// committed before the erasure reads the attempts or stored by log-ingest, erased, after the
/// marks commit. Left: a claim statement that began before the erasure committed and reaches the
/// tenant after it stores its pending row as sent (its outcome, left out by the dispatcher's
/// outcome statement, replaces it erased through log-ingest).
///
/// Until the commit every other writer of the tenant's rows waits (a foreign key to it takes the
/// same share lock), the dispatcher's claims apart: for example log-ingest's batch and the api's
/// group commit of submissions, with the other tenants in them, and key issuing.
/// The erasure waits in turn for those already holding the tenant. A deletion's last step locks
/// the tenant before the submissions, the erasure the other way round: the two can meet only on
/// a submission written with a key cached past the deletion's first step, and then PostgreSQL
/// fails one of them, to be run again.
pub async fn lock_tenant(conn: &mut AsyncPgConnection, tenant_id: Uuid) -> Result<(), StoreError> {
    tenants::table
        .find(tenant_id)
        .select(tenants::id)
        .for_update()
        .first::<Uuid>(conn)
        .await?;
    Ok(())
}

/// Those of `event_ids` not yet marked erased.
pub async fn not_yet_erased(
    conn: &mut AsyncPgConnection,
    event_ids: &[Uuid],
) -> Result<Vec<Uuid>, StoreError> {
    let erased: Vec<Uuid> = erased_events::table
        .filter(erased_events::event_id.eq_any(event_ids))
        .select(erased_events::event_id)
        .load(conn)
        .await?;
    Ok(event_ids
        .iter()
        .copied()
        .filter(|id| !erased.contains(id))
        .collect())
}

/// The audit record of one erasure: who asked, when, what changed. Never the data.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = erasures)]
pub struct ErasureRecord {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub submission_id: i64,
    pub requested_by_api_key: Option<Uuid>,
    pub requested_by_user: Option<Uuid>,
    pub erased_at: DateTime<Utc>,
    pub erased_fields: Vec<String>,
    pub submission_rows: i32,
    pub outbox_rows: i32,
    pub delivery_attempts: i32,
    pub erased_events: i32,
    pub cancelled_deliveries: i32,
}

/// Stores the audit record and marks `event_ids` erased under it, so their deliveries are
/// cancelled.
pub async fn record(
    conn: &mut AsyncPgConnection,
    erasure: &ErasureRecord,
    event_ids: &[Uuid],
) -> Result<(), StoreError> {
    diesel::insert_into(erasures::table)
        .values(erasure)
        .execute(conn)
        .await?;
    let marks: Vec<_> = event_ids
        .iter()
        .map(|event_id| {
            (
                erased_events::event_id.eq(*event_id),
                erased_events::tenant_id.eq(erasure.tenant_id),
                erased_events::erasure_id.eq(erasure.id),
                erased_events::erased_at.eq(erasure.erased_at),
            )
        })
        .collect();
    diesel::insert_into(erased_events::table)
        .values(&marks)
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(())
}

/// When the tenant last erased anything; `None` if it never did. The dispatcher's config cache
/// keeps it per tenant, so only deliveries of older events are checked with [`event_erased`].
pub async fn latest_erasure_at(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(erasures::table
        .filter(erasures::tenant_id.eq(tenant_id))
        .select(max(erasures::erased_at))
        .first(conn)
        .await?)
}

/// Whether the event's personal data was erased.
pub async fn event_erased(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
) -> Result<bool, StoreError> {
    Ok(diesel::select(diesel::dsl::exists(
        erased_events::table.filter(erased_events::event_id.eq(event_id)),
    ))
    .get_result(conn)
    .await?)
}

/// Erases the payloads of those of `rows` (attempt records about to be stored) whose event was
/// erased: an attempt that was in flight when its event was erased reaches the log after the
/// erasure rewrote it. One query for the whole batch. Returns how many rows it erased. Call it in
/// the storing transaction, after the rows' tenants are locked `FOR KEY SHARE`: an erasure holds
/// its tenant ([`lock_tenant`]) from before it reads the attempts until its marks commit, so the
/// lookup then sees the marks of every erasure that did not see these rows.
pub(crate) async fn erase_in_new_rows(
    conn: &mut AsyncPgConnection,
    mut rows: Vec<&mut AttemptRow>,
) -> Result<usize, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let event_ids: Vec<Uuid> = rows.iter().map(|row| row.event_id).collect();
    let erased: HashSet<Uuid> = erased_events::table
        .filter(erased_events::event_id.eq_any(&event_ids))
        .select(erased_events::event_id)
        .load::<Uuid>(conn)
        .await?
        .into_iter()
        .collect();
    let mut changed = 0;
    for row in rows.iter_mut().filter(|row| erased.contains(&row.event_id)) {
        let format = fp_domain::format::detect_text(&row.url);
        row.request_body = erasure::erase_request_body(&row.request_body, format);
        row.response_body = erasure::erase_response_body(&row.response_body);
        changed += 1;
    }
    Ok(changed)
}
