//! Delivery attempts (written by fp-log-ingest; a fresh event's first attempt and a copy's whose
//! send it took by fp-dispatcher: its pending row with its claim, `inbound_events`, then its
//! outcome; read by the api and the dashboard).

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{self, Array};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use fp_contracts::v1;
use fp_contracts::{DecodeError, time_from, uuid_from};
use uuid::Uuid;

use crate::StoreError;
use crate::partitions::CoveredDay;
use crate::schema::{delivery_attempts, tenants};

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
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
    pub request_headers: StoredHeaders,
    pub request_body: Vec<u8>,
    pub response_status: Option<i32>,
    pub response_headers: StoredHeaders,
    pub response_body: Vec<u8>,
    pub response_truncated: bool,
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    pub is_final: bool,
    pub next_retry_at: Option<DateTime<Utc>>,
    /// A redelivery the tenant asked for.
    pub manual: bool,
    /// The W3C context of the attempt's record (in its event's trace); empty when unknown.
    pub traceparent: String,
    pub tracestate: String,
}

/// An attempt's headers as stored (`jsonb`): `[[name, value], ...]` in the order sent. Kept as
/// the JSON text itself, not a `serde_json::Value`: a dispatcher writes two rows per delivery, and
/// building, binding and dropping them with a tree of a value per name and per value (and a clone
/// of the whole record) took about 14 % of its samples at the max rate (bench/README.md).
#[derive(Clone, diesel::deserialize::FromSqlRow)]
pub struct StoredHeaders(Vec<u8>);

/// The JSON text, not its bytes.
impl std::fmt::Debug for StoredHeaders {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_tuple("StoredHeaders")
            .field(&String::from_utf8_lossy(&self.0))
            .finish()
    }
}

/// Equal when they hold the same pairs: PostgreSQL gives back its own spacing of the text.
impl PartialEq for StoredHeaders {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0 || self.pairs() == other.pairs()
    }
}

/// The version byte of PostgreSQL's binary `jsonb` format, before the JSON text.
const JSONB_VERSION: u8 = 1;

impl StoredHeaders {
    /// No headers.
    pub fn none() -> Self {
        StoredHeaders(b"[]".to_vec())
    }

    /// `pairs` (name, value), in order.
    pub fn of<'a, I>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
        I::IntoIter: Clone,
    {
        let pairs = pairs.into_iter();
        // Sized for the text without escapes: `["name","value"],` is eight bytes more than both.
        let capacity = pairs
            .clone()
            .map(|(name, value)| name.len() + value.len() + 8)
            .sum::<usize>()
            + 2;
        let mut json = Vec::with_capacity(capacity);
        // Strings written to a `Vec` cannot fail; were the text cut short anyway, PostgreSQL
        // would refuse the row rather than store it.
        let _ = serde::Serializer::collect_seq(
            &mut serde_json::Serializer::new(&mut json),
            pairs.map(|(name, value)| [name, value]),
        );
        StoredHeaders(json)
    }

    fn of_record(headers: &[v1::Header]) -> Self {
        Self::of(
            headers
                .iter()
                .map(|header| (header.name.as_str(), header.value.as_str())),
        )
    }

    /// The (name, value) pairs; an entry that is not a pair of strings is left out, so a row is
    /// shown whatever an older writer stored.
    pub fn pairs(&self) -> Vec<(String, String)> {
        let entries: Vec<serde_json::Value> = serde_json::from_slice(&self.0).unwrap_or_default();
        entries
            .into_iter()
            .filter_map(|entry| match entry {
                serde_json::Value::Array(pair) => match <[serde_json::Value; 2]>::try_from(pair) {
                    Ok(
                        [
                            serde_json::Value::String(name),
                            serde_json::Value::String(value),
                        ],
                    ) => Some((name, value)),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }
}

impl diesel::serialize::ToSql<sql_types::Jsonb, Pg> for StoredHeaders {
    fn to_sql<'b>(
        &'b self,
        out: &mut diesel::serialize::Output<'b, '_, Pg>,
    ) -> diesel::serialize::Result {
        use std::io::Write as _;
        out.write_all(&[JSONB_VERSION])?;
        out.write_all(&self.0)?;
        Ok(diesel::serialize::IsNull::No)
    }
}

impl diesel::deserialize::FromSql<sql_types::Jsonb, Pg> for StoredHeaders {
    fn from_sql(value: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
        match value.as_bytes().split_first() {
            Some((&JSONB_VERSION, text)) => Ok(StoredHeaders(text.to_vec())),
            _ => Err("unsupported jsonb encoding".into()),
        }
    }
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

impl AttemptRow {
    /// About how many bytes the row takes in a statement: its bodies and URL, and a fixed share
    /// for its ids, times, numbers and headers.
    pub fn approximate_bytes(&self) -> usize {
        const FIXED_COLUMNS: usize = 512;
        self.request_body.len() + self.response_body.len() + self.url.len() + FIXED_COLUMNS
    }

    /// [`AttemptRow::from_record`] of a record that is no longer needed: its bodies move into the
    /// row instead of being copied (log-ingest's case).
    pub fn from_owned_record(mut record: v1::DeliveryAttempt) -> Result<Self, DecodeError> {
        let request_body = std::mem::take(&mut record.request_body);
        let response_body = std::mem::take(&mut record.response_body);
        let mut row = Self::from_record(&record)?;
        row.request_body = request_body;
        row.response_body = response_body;
        Ok(row)
    }

    /// The row of an attempt record (`outcome_pending` aside, which says where the row goes);
    /// refuses a record whose ids, times or numbers are not valid.
    pub fn from_record(record: &v1::DeliveryAttempt) -> Result<Self, DecodeError> {
        let out_of_range = |field: &'static str| DecodeError::Field {
            field,
            reason: "out of range".to_owned(),
        };
        Ok(AttemptRow {
            id: uuid_from("attempt_id", &record.attempt_id)?,
            delivery_id: uuid_from("delivery_id", &record.delivery_id)?,
            event_id: uuid_from("event_id", &record.event_id)?,
            tenant_id: uuid_from("tenant_id", &record.tenant_id)?,
            attempted_at: time_from("attempted_at", record.attempted_at.as_ref())?,
            next_retry_at: record
                .next_retry_at
                .as_ref()
                .map(|at| time_from("next_retry_at", Some(at)))
                .transpose()?,
            attempt_number: i32::try_from(record.attempt_number)
                .map_err(|_| out_of_range("attempt_number"))?,
            duration_ms: i64::try_from(record.duration_ms)
                .map_err(|_| out_of_range("duration_ms"))?,
            response_status: record
                .response_status
                .map(i32::try_from)
                .transpose()
                .map_err(|_| out_of_range("response_status"))?,
            request_headers: StoredHeaders::of_record(&record.request_headers),
            response_headers: StoredHeaders::of_record(&record.response_headers),
            event_type: record.event_type.clone(),
            url: record.url.clone(),
            request_body: record.request_body.clone(),
            response_body: record.response_body.clone(),
            response_truncated: record.response_truncated,
            error_kind: non_empty(&record.error_kind),
            error_message: non_empty(&record.error_message),
            is_final: record.r#final,
            manual: record.manual,
            traceparent: record.traceparent.clone(),
            tracestate: record.tracestate.clone(),
        })
    }
}

/// Inserts a batch in one statement; rows already stored are skipped, so a record the broker
/// delivers twice still makes one row. Returns how many rows were new.
///
/// A row is known by its id and `attempted_at`, the partition key (a unique index of a
/// partitioned table must hold it): every copy of an attempt's record carries the one time the
/// dispatcher took before sending it. A row whose day has no partition yet (log-ingest's
/// maintenance makes them ahead; tests and the bench write the past) gets one first.
pub async fn insert_batch(
    conn: &mut AsyncPgConnection,
    rows: &[AttemptRow],
) -> Result<usize, StoreError> {
    insert_batch_covering(conn, rows, &mut CoveredDay::default()).await
}

/// [`insert_batch`] for a writer that keeps `covered_day` between batches, so that a batch of a
/// day already covered is one statement, with no look in the catalog first.
pub async fn insert_batch_covering(
    conn: &mut AsyncPgConnection,
    rows: &[AttemptRow],
    covered_day: &mut CoveredDay,
) -> Result<usize, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    ensure_partitions_of(conn, rows, covered_day).await?;
    Ok(InsertAttempts::of(rows.iter()).execute(conn).await?)
}

/// Gives every row's day a partition (log-ingest's maintenance makes them ahead; tests and the
/// bench write the past).
async fn ensure_partitions_of(
    conn: &mut AsyncPgConnection,
    rows: &[AttemptRow],
    covered_day: &mut CoveredDay,
) -> Result<(), StoreError> {
    let created = covered_day
        .ensure(conn, rows.iter().map(|row| row.attempted_at))
        .await?;
    if !created.is_empty() {
        tracing::warn!(partitions = ?created, "attempts arrived for days without a partition; made them");
    }
    Ok(())
}

/// Stores outcomes: a row that is new is inserted, a pending row of the same attempt is
/// overwritten in place (an update that changes no indexed column, so it can be HOT), and an
/// outcome already stored stays. Returns how many rows were inserted or overwritten.
async fn replace_pending(
    conn: &mut AsyncPgConnection,
    rows: &[AttemptRow],
    pending_kind: &str,
) -> Result<usize, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    ensure_partitions_of(conn, rows, &mut CoveredDay::default()).await?;
    Ok(ReplacePending {
        rows: InsertAttempts::of(each_once(rows).iter().copied()),
        pending_kind,
    }
    .execute(conn)
    .await?)
}

/// The first row of each attempt: one statement may not update a row twice, and an outcome the
/// broker delivered twice can be in one batch.
fn each_once(rows: &[AttemptRow]) -> Vec<&AttemptRow> {
    let mut seen = HashSet::with_capacity(rows.len());
    rows.iter().filter(|row| seen.insert(row.id)).collect()
}

/// `INSERT INTO delivery_attempts ... SELECT FROM unnest(<one array per column>) ON CONFLICT DO
/// NOTHING`: one statement text for every batch size, so it is prepared once per connection. A
/// multi-row `VALUES` has two dozen bind parameters per row: a new text for each batch size,
/// parsed and planned every time, and at most 65,535 parameters, so large batches took several
/// statements.
pub(crate) struct InsertAttempts<'a> {
    ids: Vec<Uuid>,
    delivery_ids: Vec<Uuid>,
    event_ids: Vec<Uuid>,
    tenant_ids: Vec<Uuid>,
    event_types: Vec<&'a str>,
    urls: Vec<&'a str>,
    attempt_numbers: Vec<i32>,
    attempted_ats: Vec<DateTime<Utc>>,
    durations_ms: Vec<i64>,
    request_headers: Vec<&'a StoredHeaders>,
    request_bodies: Vec<&'a [u8]>,
    response_statuses: Vec<Option<i32>>,
    response_headers: Vec<&'a StoredHeaders>,
    response_bodies: Vec<&'a [u8]>,
    responses_truncated: Vec<bool>,
    error_kinds: Vec<Option<&'a str>>,
    error_messages: Vec<Option<&'a str>>,
    finals: Vec<bool>,
    next_retries_at: Vec<Option<DateTime<Utc>>>,
    manuals: Vec<bool>,
    traceparents: Vec<&'a str>,
    tracestates: Vec<&'a str>,
}

impl<'a> InsertAttempts<'a> {
    /// The columns of `rows`, borrowed: the rows themselves are not copied.
    pub(crate) fn of(rows: impl Iterator<Item = &'a AttemptRow> + Clone) -> Self {
        Self {
            ids: rows.clone().map(|row| row.id).collect(),
            delivery_ids: rows.clone().map(|row| row.delivery_id).collect(),
            event_ids: rows.clone().map(|row| row.event_id).collect(),
            tenant_ids: rows.clone().map(|row| row.tenant_id).collect(),
            event_types: rows.clone().map(|row| row.event_type.as_str()).collect(),
            urls: rows.clone().map(|row| row.url.as_str()).collect(),
            attempt_numbers: rows.clone().map(|row| row.attempt_number).collect(),
            attempted_ats: rows.clone().map(|row| row.attempted_at).collect(),
            durations_ms: rows.clone().map(|row| row.duration_ms).collect(),
            request_headers: rows.clone().map(|row| &row.request_headers).collect(),
            request_bodies: rows
                .clone()
                .map(|row| row.request_body.as_slice())
                .collect(),
            response_statuses: rows.clone().map(|row| row.response_status).collect(),
            response_headers: rows.clone().map(|row| &row.response_headers).collect(),
            response_bodies: rows
                .clone()
                .map(|row| row.response_body.as_slice())
                .collect(),
            responses_truncated: rows.clone().map(|row| row.response_truncated).collect(),
            error_kinds: rows.clone().map(|row| row.error_kind.as_deref()).collect(),
            error_messages: rows
                .clone()
                .map(|row| row.error_message.as_deref())
                .collect(),
            finals: rows.clone().map(|row| row.is_final).collect(),
            next_retries_at: rows.clone().map(|row| row.next_retry_at).collect(),
            manuals: rows.clone().map(|row| row.manual).collect(),
            traceparents: rows.clone().map(|row| row.traceparent.as_str()).collect(),
            tracestates: rows.map(|row| row.tracestate.as_str()).collect(),
        }
    }
}

impl QueryId for InsertAttempts<'_> {
    type QueryId = InsertAttempts<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Pg> for InsertAttempts<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.push_insert(out.reborrow())?;
        out.push_sql(" ON CONFLICT (id, attempted_at) DO NOTHING");
        Ok(())
    }
}

/// [`InsertAttempts`] whose rows overwrite a stored row of the same attempt where that row is
/// still pending (`error_kind` = `pending_kind`).
struct ReplacePending<'a> {
    rows: InsertAttempts<'a>,
    pending_kind: &'a str,
}

impl QueryId for ReplacePending<'_> {
    type QueryId = ReplacePending<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Pg> for ReplacePending<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.rows.push_insert(out.reborrow())?;
        push_overwrite_pending(out, &self.pending_kind)
    }
}

/// The `ON CONFLICT` clause by which an outcome overwrites its attempt's pending row (and leaves
/// an outcome already stored as it is), after an insert into `delivery_attempts AS stored`.
fn push_overwrite_pending<'b>(
    mut out: AstPass<'_, 'b, Pg>,
    pending_kind: &'b &'b str,
) -> QueryResult<()> {
    out.push_sql(" ON CONFLICT (id, attempted_at) DO UPDATE SET ");
    out.push_sql(&SET_FROM_EXCLUDED);
    out.push_sql(" WHERE stored.error_kind = ");
    out.push_bind_param::<sql_types::Text, _>(pending_kind)
}

/// Stores the outcomes of attempts whose pending rows fp-dispatcher stored with their claims
/// (`inbound_events::claim_first_attempts`, `take_sends`), in one `UPDATE`: each overwrites its
/// pending row.
/// Returns the ids of the attempts whose outcome it stored.
///
/// An outcome is left out where its row is gone or no longer as the claim stored it (pending,
/// with the body sent), or its event was erased: the tenant's deletion removed the row, an
/// erasure happened meanwhile, or the outcome is stored already (a job handled twice).
/// The dispatcher then publishes its record, and fp-log-ingest drops it, stores it erased, or
/// leaves the stored one. An update, not an insert that falls back to one: it writes no row of
/// its own and needs no lock on the tenant (a deleted tenant's rows are gone, or wait for it), so
/// PostgreSQL writes one record a row, not three (`bench/README.md`, "an outcome as an update").
pub async fn store_claimed_outcomes(
    conn: &mut AsyncPgConnection,
    rows: &[AttemptRow],
    pending_kind: &str,
) -> Result<Vec<Uuid>, StoreError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    Ok(StoreClaimedOutcomes {
        rows: InsertAttempts::of(each_once(rows).iter().copied()),
        pending_kind,
    }
    .get_results(conn)
    .await?)
}

/// One statement text for any number of outcomes, prepared once per connection.
///
/// The pending row holds the body the outcome's request sent, unless an erasure rewrote it. The
/// statement's snapshot may predate an erasure that commits while the statement waits for the
/// row's lock; PostgreSQL then checks the conditions again on the row as the erasure left it,
/// but `erased_events` only as of the snapshot, so the bodies' comparison is what leaves such an
/// outcome out.
struct StoreClaimedOutcomes<'a> {
    rows: InsertAttempts<'a>,
    pending_kind: &'a str,
}

impl QueryId for StoreClaimedOutcomes<'_> {
    type QueryId = StoreClaimedOutcomes<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for StoreClaimedOutcomes<'_> {
    type SqlType = sql_types::Uuid;
}

impl QueryFragment<Pg> for StoreClaimedOutcomes<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("UPDATE delivery_attempts AS stored SET ");
        out.push_sql(&SET_FROM_OUTCOME);
        out.push_sql(" FROM ");
        self.rows.push_unnest(out.reborrow())?;
        out.push_sql(" AS outcome ");
        out.push_sql(&ATTEMPT_COLUMNS);
        out.push_sql(
            " WHERE stored.id = outcome.id AND stored.attempted_at = outcome.attempted_at \
               AND NOT EXISTS (SELECT 1 FROM erased_events \
                               WHERE erased_events.event_id = outcome.event_id) \
               AND stored.request_body = outcome.request_body \
               AND stored.error_kind = ",
        );
        out.push_bind_param::<sql_types::Text, _>(&self.pending_kind)?;
        out.push_sql(" RETURNING stored.id");
        Ok(())
    }
}

/// log-ingest's outcome over a pending row, from the insert's proposed row.
static SET_FROM_EXCLUDED: LazyLock<String> = LazyLock::new(|| replaced_columns("EXCLUDED", &[]));

/// A claimed attempt's outcome over its pending row. The request body is left as stored: the
/// statement requires the two equal, and an unchanged value is not written again (nor, for a
/// large body, its TOAST copy).
static SET_FROM_OUTCOME: LazyLock<String> =
    LazyLock::new(|| replaced_columns("outcome", &["request_body"]));

/// `(<every column but the key and kept>, ingested_at) = (<source>.<column>, ..., now())`, for
/// the `SET` of an update: an outcome replaces the whole row, and `ingested_at` is the
/// transaction's start, as its default would make it.
fn replaced_columns(source: &str, kept: &[&str]) -> String {
    let columns: Vec<&str> = ATTEMPT_COLUMN_NAMES
        .iter()
        .copied()
        .filter(|column| !KEY_COLUMNS.contains(column) && !kept.contains(column))
        .collect();
    let values: Vec<String> = columns
        .iter()
        .map(|column| format!("{source}.{column}"))
        .collect();
    format!(
        "({}, ingested_at) = ({}, now())",
        columns.join(", "),
        values.join(", ")
    )
}

/// The columns of `delivery_attempts` an attempt row writes, in the order of
/// [`InsertAttempts::push_unnest`]; `ingested_at` is left to its default.
const ATTEMPT_COLUMN_NAMES: [&str; 22] = [
    "id",
    "delivery_id",
    "event_id",
    "tenant_id",
    "event_type",
    "url",
    "attempt_number",
    "attempted_at",
    "duration_ms",
    "request_headers",
    "request_body",
    "response_status",
    "response_headers",
    "response_body",
    "response_truncated",
    "error_kind",
    "error_message",
    "final",
    "next_retry_at",
    "manual",
    "traceparent",
    "tracestate",
];

/// The row's key (with the partition key), which an outcome does not replace.
const KEY_COLUMNS: [&str; 2] = ["id", "attempted_at"];

/// `(<every column of ATTEMPT_COLUMN_NAMES>)`.
pub(crate) static ATTEMPT_COLUMNS: LazyLock<String> =
    LazyLock::new(|| format!("({})", ATTEMPT_COLUMN_NAMES.join(", ")));

impl InsertAttempts<'_> {
    /// `INSERT INTO delivery_attempts AS stored (<columns>) SELECT * FROM unnest(...)`, for an
    /// `ON CONFLICT` clause to follow.
    fn push_insert<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("INSERT INTO delivery_attempts AS stored ");
        out.push_sql(&ATTEMPT_COLUMNS);
        out.push_sql(" SELECT * FROM ");
        self.push_unnest(out)
    }

    /// `attempt_rows AS (...), loggable AS (...)`: `WITH` queries that keep, of these rows, those
    /// the log stores as they are (fp-log-ingest's rules), in `loggable`, for the dispatcher's
    /// claim statement: the tenant exists, locked `FOR KEY SHARE` until the commit as
    /// fp-log-ingest's batches lock it, and the event is not erased. A tenant locked `FOR UPDATE`
    /// is skipped, not waited for: an erasure (`erasure::lock_tenant`) or a deletion's last step
    /// holds it, and this statement's snapshot, taken before, would not see what either commits.
    /// Its rows go to log-ingest as records, which waits and then looks.
    ///
    /// Each row looks its tenant up by key (a locking subquery stays a per-row subplan): a
    /// prepared statement is planned for ten rows, and as a semi join with a `WITH` query of the
    /// locked tenants the planner chose a nested loop, quadratic in the batch (with the claims'
    /// one, 40 % of a statement of 300 claims: `bench/README.md`, "the claim statement's nested
    /// loops").
    pub(crate) fn push_loggable<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("attempt_rows AS (SELECT * FROM ");
        self.push_unnest(out.reborrow())?;
        out.push_sql(" AS attempt_rows ");
        out.push_sql(&ATTEMPT_COLUMNS);
        out.push_sql(
            "), loggable AS (SELECT * FROM attempt_rows \
               WHERE EXISTS (SELECT 1 FROM tenants WHERE tenants.id = attempt_rows.tenant_id \
                             FOR KEY SHARE SKIP LOCKED) \
                 AND NOT EXISTS (SELECT 1 FROM erased_events \
                                 WHERE erased_events.event_id = attempt_rows.event_id))",
        );
        Ok(())
    }

    /// `unnest(<one array per column>)`, in the order of [`ATTEMPT_COLUMNS`].
    fn push_unnest<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("unnest(");
        out.push_bind_param::<Array<sql_types::Uuid>, _>(&self.ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<sql_types::Uuid>, _>(&self.delivery_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<sql_types::Uuid>, _>(&self.event_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<sql_types::Uuid>, _>(&self.tenant_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<sql_types::Text>, _>(&self.event_types)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<sql_types::Text>, _>(&self.urls)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<sql_types::Integer>, _>(&self.attempt_numbers)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<sql_types::Timestamptz>, _>(&self.attempted_ats)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<sql_types::BigInt>, _>(&self.durations_ms)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<sql_types::Jsonb>, _>(&self.request_headers)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<sql_types::Binary>, _>(&self.request_bodies)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<sql_types::Nullable<sql_types::Integer>>, _>(
            &self.response_statuses,
        )?;
        out.push_sql(", ");
        out.push_bind_param::<Array<sql_types::Jsonb>, _>(&self.response_headers)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<sql_types::Binary>, _>(&self.response_bodies)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<sql_types::Bool>, _>(&self.responses_truncated)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<sql_types::Nullable<sql_types::Text>>, _>(&self.error_kinds)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<sql_types::Nullable<sql_types::Text>>, _>(
            &self.error_messages,
        )?;
        out.push_sql(", ");
        out.push_bind_param::<Array<sql_types::Bool>, _>(&self.finals)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<sql_types::Nullable<sql_types::Timestamptz>>, _>(
            &self.next_retries_at,
        )?;
        out.push_sql(", ");
        out.push_bind_param::<Array<sql_types::Bool>, _>(&self.manuals)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<sql_types::Text>, _>(&self.traceparents)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<sql_types::Text>, _>(&self.tracestates)?;
        out.push_sql(")");
        Ok(())
    }
}

/// How many rows one `store_batch` wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredRows {
    /// Attempts stored with their outcome.
    pub outcomes: usize,
    /// Attempts stored as pending (`interrupted` until their outcome comes).
    pub pending: usize,
    /// Records of tenants that no longer exist (deleted), dropped rather than stored.
    pub dropped: usize,
    /// Records of erased events whose payloads were erased before storing (a pending record is
    /// counted even when its row exists already and it is not written).
    pub erased: usize,
}

/// Stores a batch in one transaction. An attempt may arrive twice: first as a pending record (sent
/// just before its request, stored with `pending_kind` as its error kind) and then with its
/// outcome. A pending row is stored only where its id is new; an outcome replaces its pending row.
/// A record the broker delivers twice still makes one row.
///
/// Records of a tenant that no longer exists are dropped: a retry or a last attempt can end after
/// `fpctl tenant delete`, and its row would be a leftover. The batch's tenants are locked
/// `FOR KEY SHARE` until it commits, as a foreign key would, so a deletion's last step
/// (`tenant_deletion::finish`) either waits for the batch and deletes its rows, or has removed the
/// tenant before the batch looks.
///
/// The payloads of records of erased events are erased before they are stored
/// ([`crate::erasure::erase_in_new_rows`], which rewrites them in `outcomes` and `pending`). That
/// lookup follows the lock: an erasure locks the tenant `FOR UPDATE`
/// ([`crate::erasure::lock_tenant`]) before it reads the attempts, so it either waits for this
/// batch and rewrites its rows, or has committed its marks before the lookup sees them. That
/// needs READ COMMITTED, the connections' level: the lookup's snapshot must be taken after the
/// lock was granted.
pub async fn store_batch(
    conn: &mut AsyncPgConnection,
    outcomes: &mut [AttemptRow],
    pending: &mut [AttemptRow],
    pending_kind: &str,
) -> Result<StoredRows, StoreError> {
    if outcomes.is_empty() && pending.is_empty() {
        return Ok(StoredRows::default());
    }
    let received = outcomes.len() + pending.len();
    let pending_kind = pending_kind.to_owned();
    let mut tenant_ids: Vec<Uuid> = outcomes
        .iter()
        .chain(pending.iter())
        .map(|row| row.tenant_id)
        .collect();
    tenant_ids.sort_unstable();
    tenant_ids.dedup();
    // Pending rows whose outcome is in this batch were left out by the caller; those stored by an
    // earlier batch (or by a dispatcher's claim) are replaced here.
    conn.transaction(async move |conn| {
        let live: HashSet<Uuid> = tenants::table
            .filter(tenants::id.eq_any(&tenant_ids))
            .select(tenants::id)
            .for_key_share()
            .load::<Uuid>(conn)
            .await?
            .into_iter()
            .collect();
        let erased = crate::erasure::erase_in_new_rows(
            conn,
            outcomes
                .iter_mut()
                .chain(pending.iter_mut())
                .filter(|row| live.contains(&row.tenant_id))
                .collect(),
        )
        .await?;
        let outcomes = of_tenants(outcomes, &live);
        let pending = of_tenants(pending, &live);
        Ok::<_, StoreError>(StoredRows {
            outcomes: replace_pending(conn, &outcomes, &pending_kind).await?,
            pending: insert_batch(conn, &pending).await?,
            dropped: received - outcomes.len() - pending.len(),
            erased,
        })
    })
    .await
}

/// The rows of `live` tenants; borrowed when that is all of them, as it nearly always is.
fn of_tenants<'a>(rows: &'a [AttemptRow], live: &HashSet<Uuid>) -> Cow<'a, [AttemptRow]> {
    if rows.iter().all(|row| live.contains(&row.tenant_id)) {
        Cow::Borrowed(rows)
    } else {
        Cow::Owned(
            rows.iter()
                .filter(|row| live.contains(&row.tenant_id))
                .cloned()
                .collect(),
        )
    }
}

/// Whether this (automatic) attempt of the delivery is already in the log with an outcome that
/// needs nothing more: a 2xx, or the end of the delivery. A failed attempt with a retry planned
/// does not count: its retry may never have been scheduled.
pub async fn attempt_settled(
    conn: &mut AsyncPgConnection,
    delivery_id: Uuid,
    attempt_number: i32,
    pending_kind: &str,
) -> Result<bool, StoreError> {
    Ok(diesel::select(diesel::dsl::exists(
        delivery_attempts::table
            .filter(delivery_attempts::delivery_id.eq(delivery_id))
            .filter(delivery_attempts::attempt_number.eq(attempt_number))
            .filter(delivery_attempts::manual.eq(false))
            .filter(delivery_attempts::error_kind.is_distinct_from(pending_kind))
            .filter(
                delivery_attempts::is_final
                    .eq(true)
                    .or(delivery_attempts::response_status.between(200, 299)),
            ),
    ))
    .get_result(conn)
    .await?)
}

/// When the newest pending record of an attempt was made, if the log has one (a dispatcher sent,
/// or was about to send, this attempt and its outcome has not been logged). Its maker may still
/// be waiting to record the outcome on a new broker connection, or may have died.
pub async fn attempt_pending_since(
    conn: &mut AsyncPgConnection,
    delivery_id: Uuid,
    attempt_number: i32,
    pending_kind: &str,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(delivery_attempts::table
        .filter(delivery_attempts::delivery_id.eq(delivery_id))
        .filter(delivery_attempts::attempt_number.eq(attempt_number))
        .filter(delivery_attempts::manual.eq(false))
        .filter(delivery_attempts::error_kind.eq(pending_kind))
        .select(diesel::dsl::max(delivery_attempts::attempted_at))
        .first::<Option<DateTime<Utc>>>(conn)
        .await?)
}

/// The tenant's newest attempts first.
pub async fn newest_for_tenant(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    limit: i64,
) -> Result<Vec<AttemptRow>, StoreError> {
    let query = AttemptQuery {
        tenant_id: Some(tenant_id),
        limit,
        ..AttemptQuery::default()
    };
    Ok(page(conn, &query).await?.0)
}

/// Which response codes a log query wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Exact(i32),
    /// `2` for 2xx, `5` for 5xx, ...
    Class(i32),
    /// Attempts that got no HTTP answer (blocked, DNS, connect, TLS, timeout).
    NoResponse,
}

/// A page of a log query: newest first, keyset-paged by `(attempted_at, id)`.
#[derive(Debug, Clone, Default)]
pub struct AttemptQuery {
    /// `None` only for the platform-wide admin view.
    pub tenant_id: Option<Uuid>,
    pub event_type: Option<String>,
    pub status: Option<StatusFilter>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// The last entry of the previous page.
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

type PageStatement = delivery_attempts::BoxedQuery<
    'static,
    diesel::pg::Pg,
    diesel::dsl::AsSelect<AttemptRow, diesel::pg::Pg>,
>;

/// The statement behind [`page`]; [`explain_page`] plans the very same one.
fn page_statement(query: &AttemptQuery) -> PageStatement {
    use delivery_attempts::dsl;

    let mut statement = dsl::delivery_attempts
        .select(AttemptRow::as_select())
        .into_boxed();
    if let Some(tenant_id) = query.tenant_id {
        statement = statement.filter(dsl::tenant_id.eq(tenant_id));
    }
    if let Some(event_type) = &query.event_type {
        statement = statement.filter(dsl::event_type.eq(event_type.clone()));
    }
    statement = match query.status {
        None => statement,
        Some(StatusFilter::Exact(code)) => statement.filter(dsl::response_status.eq(code)),
        Some(StatusFilter::Class(class)) => {
            statement.filter(dsl::response_status.between(class * 100, class * 100 + 99))
        }
        Some(StatusFilter::NoResponse) => statement.filter(dsl::response_status.is_null()),
    };
    if let Some(from) = query.from {
        statement = statement.filter(dsl::attempted_at.ge(from));
    }
    if let Some(to) = query.to {
        statement = statement.filter(dsl::attempted_at.lt(to));
    }
    if let Some((at, id)) = query.after {
        // A row comparison rather than `a < x OR (a = x AND id < y)`: PostgreSQL turns it into an
        // index range bound, so a deep page starts where the last one ended instead of filtering.
        statement = statement.filter(
            diesel::dsl::sql::<sql_types::Bool>("(attempted_at, id) < (")
                .bind::<sql_types::Timestamptz, _>(at)
                .sql(", ")
                .bind::<sql_types::Uuid, _>(id)
                .sql(")"),
        );
    }
    statement
        .order((dsl::attempted_at.desc(), dsl::id.desc()))
        .limit(query.limit + 1)
}

/// The opaque cursor of a page position (`AttemptQuery::after`): the api and the dashboard both
/// hand it out as `next_cursor`, so either reads the other's.
pub fn encode_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}|{id}", at.timestamp_micros()))
}

/// The position a cursor of [`encode_cursor`] names; `None` for anything else.
pub fn decode_cursor(cursor: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let (micros, id) = text.split_once('|')?;
    let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
    Some((at, Uuid::parse_str(id).ok()?))
}

/// One page of attempts matching `query`, and whether more follow.
pub async fn page(
    conn: &mut AsyncPgConnection,
    query: &AttemptQuery,
) -> Result<(Vec<AttemptRow>, bool), StoreError> {
    let mut rows = page_statement(query).load(conn).await?;
    let more = rows.len() as i64 > query.limit;
    rows.truncate(usize::try_from(query.limit).unwrap_or(0));
    Ok((rows, more))
}

/// PostgreSQL's plan for the page `query` asks for, one line a row, so operators and tests can
/// check that log pages stay index scans as the table grows.
pub async fn explain_page(
    conn: &mut AsyncPgConnection,
    query: &AttemptQuery,
) -> Result<Vec<String>, StoreError> {
    Ok(Explain(page_statement(query)).load(conn).await?)
}

/// `EXPLAIN` in front of any query, keeping its bind parameters.
#[derive(diesel::query_builder::QueryId)]
struct Explain<Q>(Q);

impl<Q: diesel::query_builder::QueryFragment<diesel::pg::Pg>>
    diesel::query_builder::QueryFragment<diesel::pg::Pg> for Explain<Q>
{
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> QueryResult<()> {
        out.push_sql("EXPLAIN ");
        self.0.walk_ast(out.reborrow())
    }
}

impl<Q> diesel::query_builder::Query for Explain<Q> {
    type SqlType = sql_types::Text;
}

/// One attempt; with `tenant_id`, only if it is that tenant's (so another tenant's id is not found).
pub async fn find(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    tenant_id: Option<Uuid>,
) -> Result<Option<AttemptRow>, StoreError> {
    use delivery_attempts::dsl;

    let mut statement = dsl::delivery_attempts
        .filter(dsl::id.eq(id))
        .select(AttemptRow::as_select())
        .into_boxed();
    if let Some(tenant_id) = tenant_id {
        statement = statement.filter(dsl::tenant_id.eq(tenant_id));
    }
    Ok(statement.first(conn).await.optional()?)
}

type DeliveryStatement = diesel::dsl::Order<
    diesel::dsl::Select<
        diesel::dsl::Filter<
            diesel::dsl::Filter<
                delivery_attempts::table,
                diesel::dsl::Eq<delivery_attempts::delivery_id, Uuid>,
            >,
            diesel::dsl::Eq<delivery_attempts::tenant_id, Uuid>,
        >,
        diesel::dsl::AsSelect<AttemptRow, diesel::pg::Pg>,
    >,
    (
        delivery_attempts::attempt_number,
        delivery_attempts::attempted_at,
        delivery_attempts::id,
    ),
>;

fn delivery_statement(tenant_id: Uuid, delivery_id: Uuid) -> DeliveryStatement {
    use delivery_attempts::dsl;

    dsl::delivery_attempts
        .filter(dsl::delivery_id.eq(delivery_id))
        .filter(dsl::tenant_id.eq(tenant_id))
        .select(AttemptRow::as_select())
        .order((dsl::attempt_number, dsl::attempted_at, dsl::id))
}

/// Every attempt of one delivery, in the order they were made.
pub async fn of_delivery(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    delivery_id: Uuid,
) -> Result<Vec<AttemptRow>, StoreError> {
    Ok(delivery_statement(tenant_id, delivery_id)
        .load(conn)
        .await?)
}

/// PostgreSQL's plan for [`of_delivery`].
pub async fn explain_of_delivery(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    delivery_id: Uuid,
) -> Result<Vec<String>, StoreError> {
    Ok(Explain(delivery_statement(tenant_id, delivery_id))
        .load(conn)
        .await?)
}

/// What redelivering a delivery needs: the request one of its attempts sent, and how far the
/// delivery got.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct StoredDelivery {
    #[diesel(sql_type = sql_types::Uuid)]
    pub delivery_id: Uuid,
    #[diesel(sql_type = sql_types::Uuid)]
    pub event_id: Uuid,
    #[diesel(sql_type = sql_types::Text)]
    pub event_type: String,
    #[diesel(sql_type = sql_types::Text)]
    pub url: String,
    /// The exact bytes sent.
    #[diesel(sql_type = sql_types::Bytea)]
    pub request_body: Vec<u8>,
    /// The highest attempt number recorded for the delivery.
    #[diesel(sql_type = sql_types::Int4)]
    pub last_attempt_number: i32,
    /// The trace of the attempt (empty when unknown): a redelivery joins it.
    #[diesel(sql_type = sql_types::Text)]
    pub traceparent: String,
    #[diesel(sql_type = sql_types::Text)]
    pub tracestate: String,
}

/// The delivery of the tenant's attempt `attempt_id`, with the request that attempt sent; `None`
/// when the tenant has no such attempt (another tenant's id included).
pub async fn stored_delivery(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    attempt_id: Uuid,
) -> Result<Option<StoredDelivery>, StoreError> {
    Ok(diesel::sql_query(
        "SELECT a.delivery_id, a.event_id, a.event_type, a.url, a.request_body, a.traceparent, a.tracestate, \
           (SELECT max(m.attempt_number) FROM delivery_attempts m \
             WHERE m.tenant_id = a.tenant_id AND m.delivery_id = a.delivery_id) \
             AS last_attempt_number \
         FROM delivery_attempts a WHERE a.tenant_id = $1 AND a.id = $2",
    )
    .bind::<sql_types::Uuid, _>(tenant_id)
    .bind::<sql_types::Uuid, _>(attempt_id)
    .get_result(conn)
    .await
    .optional()?)
}

/// The tenant's deliveries that failed for good: an attempt in `[$2, $3)`, no 2xx answer ever, and
/// a final latest attempt (deliveries still being retried are left to their retries), whose
/// request was not cleared by the tenant's payload retention (there is nothing to send again).
/// Each with its latest attempt's request and when its first attempt in the range was made. The range is
/// read through `delivery_attempts_tenant_time`; each delivery's attempts through
/// `delivery_attempts_delivery`.
const FAILED_DELIVERIES: &str = "\
    WITH touched AS ( \
        SELECT delivery_id, min(attempted_at) AS first_at FROM delivery_attempts \
        WHERE tenant_id = $1 AND attempted_at >= $2 AND attempted_at < $3 \
        GROUP BY delivery_id \
    ), failed AS ( \
        SELECT touched.first_at, latest.* FROM touched \
        CROSS JOIN LATERAL ( \
            SELECT a.delivery_id, a.event_id, a.event_type, a.url, a.request_body, \
                   a.attempt_number AS last_attempt_number, a.final, a.traceparent, a.tracestate, \
                   a.payload_cleared_at \
            FROM delivery_attempts a \
            WHERE a.tenant_id = $1 AND a.delivery_id = touched.delivery_id \
            ORDER BY a.attempt_number DESC, a.attempted_at DESC, a.id DESC LIMIT 1 \
        ) latest \
        WHERE latest.final AND latest.payload_cleared_at IS NULL AND NOT EXISTS ( \
            SELECT 1 FROM delivery_attempts ok \
            WHERE ok.tenant_id = $1 AND ok.delivery_id = touched.delivery_id \
              AND ok.response_status BETWEEN 200 AND 299) \
    ) ";

/// How the failed deliveries of a time range split: those the endpoint takes now, and those it
/// does not (the caller decides by the URL each went to).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailedCounts {
    /// Sent to a URL the caller's rule accepts.
    pub redeliverable: i64,
    /// Sent to a URL it does not.
    pub skipped: i64,
}

impl FailedCounts {
    pub fn total(self) -> i64 {
        self.redeliverable + self.skipped
    }
}

/// Failed deliveries of a time range, split by whether the endpoint takes them now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedDeliveries {
    /// Those sent to a URL the caller's rule accepts, oldest first, at most the limit asked for.
    pub redeliverable: Vec<StoredDelivery>,
    /// More than the limit are redeliverable.
    pub more: bool,
    pub counts: FailedCounts,
}

/// The URLs the tenant's failed deliveries with an attempt in `[from, to)` (see
/// `FAILED_DELIVERIES`) last went to, each with how many: a handful, whatever the range holds.
async fn failed_per_url(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(String, i64)>, StoreError> {
    #[derive(QueryableByName)]
    struct PerUrl {
        #[diesel(sql_type = sql_types::Text)]
        url: String,
        #[diesel(sql_type = sql_types::Int8)]
        count: i64,
    }
    let rows: Vec<PerUrl> = diesel::sql_query(format!(
        "{FAILED_DELIVERIES} SELECT url, count(*) AS count FROM failed GROUP BY url ORDER BY url"
    ))
    .bind::<sql_types::Uuid, _>(tenant_id)
    .bind::<sql_types::Timestamptz, _>(from)
    .bind::<sql_types::Timestamptz, _>(to)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|row| (row.url, row.count)).collect())
}

/// Splits `per_url` by `takes`: the URLs it accepts, and the counts.
fn split_by(
    per_url: Vec<(String, i64)>,
    takes: impl Fn(&str) -> bool,
) -> (Vec<String>, FailedCounts) {
    let mut counts = FailedCounts::default();
    let mut accepted = Vec::new();
    for (url, count) in per_url {
        if takes(&url) {
            counts.redeliverable += count;
            accepted.push(url);
        } else {
            counts.skipped += count;
        }
    }
    (accepted, counts)
}

/// How many of the tenant's failed deliveries with an attempt in `[from, to)` went to a URL that
/// `takes` accepts, and how many did not; reads no request.
pub async fn count_failed_deliveries(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    takes: impl Fn(&str) -> bool,
) -> Result<FailedCounts, StoreError> {
    let per_url = failed_per_url(conn, tenant_id, from, to).await?;
    Ok(split_by(per_url, takes).1)
}

/// The tenant's failed deliveries with an attempt in `[from, to)` (see `FAILED_DELIVERIES`): up
/// to `limit` of those whose latest attempt went to a URL that `takes` accepts, with their
/// requests, and the counts of both kinds.
pub async fn failed_deliveries(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    takes: impl Fn(&str) -> bool,
    limit: i64,
) -> Result<FailedDeliveries, StoreError> {
    let per_url = failed_per_url(conn, tenant_id, from, to).await?;
    let (urls, counts) = split_by(per_url, takes);
    if urls.is_empty() || limit <= 0 {
        return Ok(FailedDeliveries {
            redeliverable: Vec::new(),
            more: counts.redeliverable > 0,
            counts,
        });
    }
    let mut redeliverable: Vec<StoredDelivery> = diesel::sql_query(format!(
        "{FAILED_DELIVERIES} SELECT delivery_id, event_id, event_type, url, request_body, \
           last_attempt_number, traceparent, tracestate FROM failed WHERE url = ANY($4) \
         ORDER BY first_at, delivery_id LIMIT $5"
    ))
    .bind::<sql_types::Uuid, _>(tenant_id)
    .bind::<sql_types::Timestamptz, _>(from)
    .bind::<sql_types::Timestamptz, _>(to)
    .bind::<sql_types::Array<sql_types::Text>, _>(urls)
    .bind::<sql_types::Int8, _>(limit + 1)
    .load(conn)
    .await?;
    let more = redeliverable.len() as i64 > limit;
    redeliverable.truncate(usize::try_from(limit).unwrap_or(0));
    Ok(FailedDeliveries {
        redeliverable,
        more,
        counts,
    })
}

/// `StatusFilter` text was none of a code, a class or `none`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be a code from 100 to 599 (e.g. 404), a class (1xx to 5xx) or `none`")]
pub struct InvalidStatusFilter;

/// The text form the api and the dashboard share: `404`, `5xx` (any case) or `none`.
impl std::str::FromStr for StatusFilter {
    type Err = InvalidStatusFilter;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim().to_ascii_lowercase();
        if text == "none" {
            return Ok(StatusFilter::NoResponse);
        }
        if let Some(class) = text.strip_suffix("xx") {
            return class
                .parse::<i32>()
                .ok()
                .filter(|class| (1..=5).contains(class))
                .map(StatusFilter::Class)
                .ok_or(InvalidStatusFilter);
        }
        text.parse::<i32>()
            .ok()
            .filter(|code| (100..=599).contains(code))
            .map(StatusFilter::Exact)
            .ok_or(InvalidStatusFilter)
    }
}

/// The attempts a log view's statistics count: its filters over a bounded time range `[from, to)`,
/// so every statistic is a range scan of `delivery_attempts_tenant_time` (tenant view) or
/// `delivery_attempts_time` (admin view).
#[derive(Debug, Clone)]
pub struct AttemptFilter {
    /// `None` only for the platform-wide admin view.
    pub tenant_id: Option<Uuid>,
    pub event_type: Option<String>,
    pub status: Option<StatusFilter>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// What counts as a failure in statistics: anything but a 2xx answer, no answer included.
const FAILED: &str = "(response_status IS NULL OR response_status NOT BETWEEN 200 AND 299)";

/// Raw SQL with numbered bind parameters: a boxed `sql_query` takes its binds in order but does not
/// write their placeholders, so this writes `$n` as it binds.
pub(crate) struct Statement {
    pub(crate) query: diesel::query_builder::BoxedSqlQuery<
        'static,
        diesel::pg::Pg,
        diesel::query_builder::SqlQuery,
    >,
    binds: usize,
}

impl Statement {
    pub(crate) fn new(sql: &str) -> Self {
        Statement {
            query: diesel::sql_query(sql).into_boxed(),
            binds: 0,
        }
    }

    pub(crate) fn sql(mut self, sql: &str) -> Self {
        self.query = self.query.sql(sql);
        self
    }

    pub(crate) fn bind<ST, V>(mut self, value: V) -> Self
    where
        diesel::pg::Pg: sql_types::HasSqlType<ST>,
        V: diesel::serialize::ToSql<ST, diesel::pg::Pg> + Send + 'static,
        ST: Send + 'static,
    {
        self.binds += 1;
        self.query = self
            .query
            .sql(format!("${}", self.binds))
            .bind::<ST, V>(value);
        self
    }

    /// ` FROM delivery_attempts WHERE <the filter>`.
    fn filtered_rows(self, filter: &AttemptFilter) -> Self {
        let mut statement = self
            .sql(" FROM delivery_attempts WHERE attempted_at >= ")
            .bind::<sql_types::Timestamptz, _>(filter.from)
            .sql(" AND attempted_at < ")
            .bind::<sql_types::Timestamptz, _>(filter.to);
        if let Some(tenant_id) = filter.tenant_id {
            statement = statement
                .sql(" AND tenant_id = ")
                .bind::<sql_types::Uuid, _>(tenant_id);
        }
        if let Some(event_type) = &filter.event_type {
            statement = statement
                .sql(" AND event_type = ")
                .bind::<sql_types::Text, _>(event_type.clone());
        }
        match filter.status {
            None => statement,
            Some(StatusFilter::Exact(code)) => statement
                .sql(" AND response_status = ")
                .bind::<sql_types::Int4, _>(code),
            Some(StatusFilter::Class(class)) => statement
                .sql(" AND response_status BETWEEN ")
                .bind::<sql_types::Int4, _>(class * 100)
                .sql(" AND ")
                .bind::<sql_types::Int4, _>(class * 100 + 99),
            Some(StatusFilter::NoResponse) => statement.sql(" AND response_status IS NULL"),
        }
    }
}

/// Successes and failures of one time bucket; `bucket` counts buckets from the filter's `from`.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct BucketCounts {
    #[diesel(sql_type = sql_types::Int8)]
    pub bucket: i64,
    #[diesel(sql_type = sql_types::Int8)]
    pub succeeded: i64,
    #[diesel(sql_type = sql_types::Int8)]
    pub failed: i64,
}

/// The filter's attempts counted per `bucket_seconds` from `filter.from`, 2xx answers apart from
/// the rest; buckets without attempts are absent.
pub async fn counts_per_bucket(
    conn: &mut AsyncPgConnection,
    filter: &AttemptFilter,
    bucket_seconds: i64,
) -> Result<Vec<BucketCounts>, StoreError> {
    // Seconds as float8: `extract(epoch ...)` is numeric, and numeric - float8 is float8.
    let origin = filter.from.timestamp_micros() as f64 / 1e6;
    let statement = Statement::new("SELECT floor((extract(epoch FROM attempted_at) - ")
        .bind::<sql_types::Double, _>(origin)
        .sql(") / ")
        .bind::<sql_types::Double, _>(bucket_seconds as f64)
        .sql(&format!(
            ")::int8 AS bucket, \
             count(*) FILTER (WHERE response_status BETWEEN 200 AND 299) AS succeeded, \
             count(*) FILTER (WHERE {FAILED}) AS failed"
        ))
        .filtered_rows(filter)
        .sql(" GROUP BY 1 ORDER BY 1");
    Ok(statement.query.load(conn).await?)
}

/// How the filter's attempts went: how many, how many got a 2xx answer, the median and the 95th
/// percentile of their durations (`None` without attempts).
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct AttemptSummary {
    #[diesel(sql_type = sql_types::Int8)]
    pub attempts: i64,
    #[diesel(sql_type = sql_types::Int8)]
    pub succeeded: i64,
    #[diesel(sql_type = sql_types::Nullable<sql_types::Double>)]
    pub p50_duration_ms: Option<f64>,
    #[diesel(sql_type = sql_types::Nullable<sql_types::Double>)]
    pub p95_duration_ms: Option<f64>,
}

pub async fn summary(
    conn: &mut AsyncPgConnection,
    filter: &AttemptFilter,
) -> Result<AttemptSummary, StoreError> {
    let statement = Statement::new(
        "SELECT count(*) AS attempts, \
         count(*) FILTER (WHERE response_status BETWEEN 200 AND 299) AS succeeded, \
         percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50_duration_ms, \
         percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95_duration_ms",
    )
    .filtered_rows(filter);
    Ok(statement.query.get_result(conn).await?)
}

/// A tenant and how many of the filter's attempts to it failed.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct TenantFailures {
    #[diesel(sql_type = sql_types::Uuid)]
    pub tenant_id: Uuid,
    #[diesel(sql_type = sql_types::Text)]
    pub name: String,
    #[diesel(sql_type = sql_types::Int8)]
    pub failures: i64,
}

/// The `limit` tenants with the most failed attempts among the filter's, most first; for the
/// superadmin's platform view only (it names tenants).
pub async fn most_failing_tenants(
    conn: &mut AsyncPgConnection,
    filter: &AttemptFilter,
    limit: i64,
) -> Result<Vec<TenantFailures>, StoreError> {
    let statement = Statement::new(
        "SELECT f.tenant_id, t.name, f.failures FROM (SELECT tenant_id, count(*) AS failures",
    )
    .filtered_rows(filter)
    .sql(&format!(
        " AND {FAILED} GROUP BY tenant_id ORDER BY failures DESC, tenant_id LIMIT "
    ))
    .bind::<sql_types::Int8, _>(limit)
    .sql(") f JOIN tenants t ON t.id = f.tenant_id ORDER BY f.failures DESC, f.tenant_id");
    Ok(statement.query.load(conn).await?)
}

/// The names of `tenant_ids` (those that exist), for labelling platform-wide log rows.
pub async fn tenant_names(
    conn: &mut AsyncPgConnection,
    tenant_ids: &[Uuid],
) -> Result<Vec<(Uuid, String)>, StoreError> {
    use crate::schema::tenants::dsl;

    Ok(dsl::tenants
        .filter(dsl::id.eq_any(tenant_ids.to_vec()))
        .select((dsl::id, dsl::name))
        .load(conn)
        .await?)
}

#[cfg(test)]
mod status_filter_tests {
    use super::*;

    #[test]
    fn status_filters_parse_codes_classes_and_none() {
        assert_eq!("404".parse(), Ok(StatusFilter::Exact(404)));
        assert_eq!(" 5xx ".parse(), Ok(StatusFilter::Class(5)));
        assert_eq!("2XX".parse(), Ok(StatusFilter::Class(2)));
        assert_eq!("None".parse(), Ok(StatusFilter::NoResponse));
        for bad in ["6xx", "0xx", "99", "600", "abc", "xx", "", "4o4"] {
            assert_eq!(
                bad.parse::<StatusFilter>(),
                Err(InvalidStatusFilter),
                "{bad}"
            );
        }
    }
}

#[cfg(test)]
mod stored_headers_tests {
    use super::*;

    fn pair(name: &str, value: &str) -> (String, String) {
        (name.to_owned(), value.to_owned())
    }

    #[test]
    fn headers_are_written_as_json_pairs_in_order() {
        let headers = StoredHeaders::of([
            ("content-type", "application/json"),
            ("x-quote", "say \"hi\" \\ \u{1} ü"),
        ]);
        let text: serde_json::Value = serde_json::from_slice(&headers.0).expect("valid JSON");
        assert_eq!(
            text,
            serde_json::json!([
                ["content-type", "application/json"],
                ["x-quote", "say \"hi\" \\ \u{1} ü"]
            ])
        );
        assert_eq!(
            headers.pairs(),
            [
                pair("content-type", "application/json"),
                pair("x-quote", "say \"hi\" \\ \u{1} ü")
            ]
        );
        assert_eq!(StoredHeaders::none().pairs(), []);
        assert_eq!(StoredHeaders::of([]), StoredHeaders::none());
    }

    #[test]
    fn headers_are_read_leniently_and_compared_by_their_pairs() {
        let stored = StoredHeaders(br#"[["a", "1"], ["b"], "c", [1, 2], ["d", "4"]]"#.to_vec());
        assert_eq!(stored.pairs(), [pair("a", "1"), pair("d", "4")]);
        assert_eq!(StoredHeaders(br#"{"a": "1"}"#.to_vec()).pairs(), []);
        assert_eq!(StoredHeaders(b"not json".to_vec()).pairs(), []);
        // PostgreSQL gives the text back with its own spacing.
        assert_eq!(
            StoredHeaders(br#"[["a", "1"]]"#.to_vec()),
            StoredHeaders::of([("a", "1")])
        );
        assert_ne!(
            StoredHeaders::of([("a", "2")]),
            StoredHeaders::of([("a", "1")])
        );
    }
}
