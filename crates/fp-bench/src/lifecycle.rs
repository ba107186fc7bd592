//! The lifecycle phase's database work (issue 15): a month of delivery attempts generated in the
//! database, the maintenance steps timed as the services run them, and the seeded data removed
//! again. The driver runs the load beside them (`driver::lifecycle_phase`).

use std::num::NonZeroU32;
use std::time::Instant;

use anyhow::{Context, bail};
use chrono::{DateTime, NaiveTime, TimeDelta, Utc};
use diesel::sql_types::{Array, BigInt, Integer, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use fp_store::maintenance::{self, StepReport};
use fp_store::partitions::{self, PartitionPolicy};
use uuid::Uuid;

use crate::load::Tenant;
use crate::report::{MaintenanceStep, TableSize};

/// Days of attempts seeded: one partition each, the days before the run's first day.
pub const SEEDED_DAYS: u32 = 30;

/// Texts of the seeded submissions, one per row in turn, repeated to the run's text length.
const FEEDBACK: [&str; 6] = [
    "Delivery was quick and the packaging was fine, but the size chart is off by one size.",
    "Great support on the phone, they solved my billing problem in five minutes.",
    "The app crashes when I open my order history on an older phone.",
    "Love the new recipes section, please add more vegetarian options.",
    "Checkout asked me for my address twice and then forgot the discount code.",
    "Friendly staff at the Hamburg store, but the queue at the till was very long.",
];

const CUSTOMERS: [&str; 5] = [
    "Anna Schmidt",
    "James O'Neill",
    "Maria Rossi",
    "Kenji Tanaka",
    "Fatima Haddad",
];

/// What seeding made and what it took.
pub struct Seeded {
    pub rows: u64,
    /// Every seeded attempt is before this (midnight, UTC, of the run's first day).
    pub end: DateTime<Utc>,
    pub seconds: f64,
    pub vacuum_seconds: f64,
    pub size: TableSize,
}

/// Midnight (UTC) of `at`'s day.
pub fn day_start(at: DateTime<Utc>) -> DateTime<Utc> {
    at.date_naive().and_time(NaiveTime::MIN).and_utc()
}

/// Generates `rows` attempts in the database over the [`SEEDED_DAYS`] days before `end` (evenly
/// in time, a day's rows in one statement), round-robin over `tenants`, each a first attempt
/// answered 200 as the dispatcher records one: a signed request with the custom JSON body of a
/// `submission.created` event (`text_bytes` of text), the receiver's short answer. The days'
/// partitions are made first, as log-ingest's maintenance would have made them. Then VACUUM
/// ANALYZE, as autovacuum would have done to a month-old table, so it does not run during the
/// phases; then the seeded partitions' size.
pub async fn seed_attempts(
    database_url: &str,
    tenants: &[Tenant],
    rows: u64,
    end: DateTime<Utc>,
    text_bytes: usize,
) -> anyhow::Result<Seeded> {
    let mut conn = fp_store::connect(database_url).await?;
    let first_day = end - TimeDelta::days(i64::from(SEEDED_DAYS));
    partitions::ensure_attempt_partitions(&mut conn, first_day, SEEDED_DAYS - 1, NonZeroU32::MIN)
        .await?;
    let tenant_ids: Vec<Uuid> = tenants.iter().map(|tenant| tenant.id).collect();
    let urls: Vec<String> = tenants.iter().map(|tenant| tenant.url.clone()).collect();
    let feedback: Vec<String> = FEEDBACK.iter().map(|text| (*text).to_owned()).collect();
    let customers: Vec<String> = CUSTOMERS.iter().map(|name| (*name).to_owned()).collect();
    let started = Instant::now();
    let mut first_row = 0u64;
    for day in 0..SEEDED_DAYS {
        let day_rows = rows / u64::from(SEEDED_DAYS)
            + u64::from(u64::from(day) < rows % u64::from(SEEDED_DAYS));
        if day_rows == 0 {
            continue;
        }
        diesel::sql_query(SEED_DAY)
            .bind::<Array<diesel::sql_types::Uuid>, _>(&tenant_ids)
            .bind::<Array<Text>, _>(&urls)
            .bind::<Timestamptz, _>(first_day + TimeDelta::days(i64::from(day)))
            .bind::<BigInt, _>(i64::try_from(day_rows)?)
            .bind::<BigInt, _>(i64::try_from(first_row)?)
            .bind::<Integer, _>(i32::try_from(text_bytes)?)
            .bind::<Text, _>(fp_domain::request::USER_AGENT)
            .bind::<Array<Text>, _>(&feedback)
            .bind::<Array<Text>, _>(&customers)
            .execute(&mut conn)
            .await
            .with_context(|| format!("seeding day {} of {SEEDED_DAYS}", day + 1))?;
        first_row += day_rows;
        eprintln!(
            "fp-bench: lifecycle: seeded {first_row} of {rows} attempts ({:.0} s)",
            started.elapsed().as_secs_f64()
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    let vacuum_started = Instant::now();
    diesel::sql_query("VACUUM (ANALYZE) delivery_attempts")
        .execute(&mut conn)
        .await?;
    let vacuum_seconds = vacuum_started.elapsed().as_secs_f64();
    let size = seeded_size(&mut conn, end).await?;
    Ok(Seeded {
        rows,
        end,
        seconds,
        vacuum_seconds,
        size,
    })
}

/// One day of seeded attempts: `$4` rows from row number `$5`, evenly over the day from `$3`.
/// Ids are UUIDv7-shaped from the attempt's time (as `Uuid::now_v7` makes them), so each
/// partition's indexes grow at their end as they do under the pipeline.
const SEED_DAY: &str = r#"
INSERT INTO delivery_attempts (id, delivery_id, event_id, tenant_id, event_type, url,
    attempt_number, attempted_at, duration_ms, request_headers, request_body, response_status,
    response_headers, response_body, response_truncated, error_kind, error_message, final,
    next_retry_at, manual, traceparent, tracestate)
WITH numbered AS (
    SELECT n,
           $3::timestamptz + (n - $5)::float8 * (interval '1 day' / $4::float8) AS at,
           (n % cardinality($1::uuid[]))::int + 1 AS tenant,
           gen_random_uuid() AS delivery_id,
           replace(gen_random_uuid()::text, '-', '') AS random_a,
           replace(gen_random_uuid()::text, '-', '') AS random_b
    FROM generate_series($5::bigint, $5::bigint + $4::bigint - 1) AS n
), rendered AS (
    SELECT numbered.*,
           floor(extract(epoch FROM at) * 1000)::bigint AS millis,
           convert_to(format(
               '{"event":"submission.created","timestamp":"%s","data":{"id":%s,"campaign_id":%s,"star_rating":%s,"text_feedback":"%s","customer_name":"%s","status":"pending"}}',
               to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
               n + 1, 1 + n % 7, 1 + n % 5,
               left(repeat(($8::text[])[1 + n % cardinality($8::text[])] || ' ', 1 + $6 / 20), $6),
               replace(($9::text[])[1 + n % cardinality($9::text[])], '"', '')),
             'UTF8') AS body
    FROM numbered
)
SELECT
    (lpad(to_hex(millis), 12, '0') || '7' || substr(random_a, 1, 3) || '8' || substr(random_a, 4, 15))::uuid,
    delivery_id,
    (lpad(to_hex(millis - 30), 12, '0') || '7' || substr(random_b, 1, 3) || '8' || substr(random_b, 4, 15))::uuid,
    ($1::uuid[])[tenant],
    'submission.created',
    ($2::text[])[tenant],
    1,
    at,
    5 + n % 40,
    jsonb_build_array(
        jsonb_build_array('Content-Type', 'application/json'),
        jsonb_build_array('User-Agent', $7::text),
        jsonb_build_array('X-FeedbackPulse-Event', 'submission.created'),
        jsonb_build_array('X-FeedbackPulse-Delivery', delivery_id::text),
        jsonb_build_array('webhook-id', delivery_id::text),
        jsonb_build_array('webhook-timestamp', (millis / 1000)::text),
        jsonb_build_array('X-FeedbackPulse-Signature', 'sha256=' || encode(sha256(body), 'hex')),
        jsonb_build_array('webhook-signature', 'v1,' || encode(sha256(body || '\x01'::bytea), 'base64'))),
    body,
    200,
    jsonb_build_array(
        jsonb_build_array('content-length', '2'),
        jsonb_build_array('date', to_char(at AT TIME ZONE 'UTC', 'Dy, DD Mon YYYY HH24:MI:SS "GMT"'))),
    convert_to('ok', 'UTF8'),
    false, NULL, NULL, true, NULL, false,
    '00-' || random_b || '-' || substr(random_a, 17, 16) || '-01',
    ''
FROM rendered
"#;

#[derive(diesel::QueryableByName)]
struct Sizes {
    #[diesel(sql_type = BigInt)]
    total: i64,
    #[diesel(sql_type = BigInt)]
    heap: i64,
    #[diesel(sql_type = BigInt)]
    indexes: i64,
    #[diesel(sql_type = BigInt)]
    rows: i64,
}

/// On-disk size of the partitions wholly before `end` (the seeded ones): heap with TOAST, and
/// indexes. A partitioned table's own `pg_total_relation_size` is 0; its partitions hold the data.
pub async fn seeded_size(
    conn: &mut AsyncPgConnection,
    end: DateTime<Utc>,
) -> anyhow::Result<TableSize> {
    let names: Vec<String> = partitions::attempt_partitions(conn)
        .await?
        .into_iter()
        .filter(|partition| partition.to.is_some_and(|to| to <= end))
        .map(|partition| partition.name)
        .collect();
    let sizes: Sizes = diesel::sql_query(
        "SELECT coalesce(sum(pg_total_relation_size(p)), 0)::bigint AS total, \
                coalesce(sum(pg_table_size(p)), 0)::bigint AS heap, \
                coalesce(sum(pg_indexes_size(p)), 0)::bigint AS indexes, \
                coalesce(sum((SELECT reltuples FROM pg_class WHERE oid = p)), 0)::bigint AS rows \
         FROM unnest($1::text[]::regclass[]) AS p",
    )
    .bind::<Array<Text>, _>(&names)
    .get_result(conn)
    .await?;
    let as_u64 = |value: i64| u64::try_from(value).unwrap_or(0);
    Ok(TableSize {
        partitions: names.len(),
        estimated_rows: as_u64(sizes.rows),
        total_bytes: as_u64(sizes.total),
        heap_bytes: as_u64(sizes.heap),
        index_bytes: as_u64(sizes.indexes),
    })
}

/// Gives `tenants` a payload retention of `days`, as a tenant sets it through the api.
pub async fn set_payload_retention(
    database_url: &str,
    tenants: impl Iterator<Item = Uuid>,
    days: i32,
) -> anyhow::Result<()> {
    let mut conn = fp_store::connect(database_url).await?;
    for tenant_id in tenants {
        fp_store::payload_retention::set(&mut conn, tenant_id, Some(days), Utc::now()).await?;
    }
    Ok(())
}

/// log-ingest's maintenance round with `max_days` as the retention, on a connection of its own
/// (the same step functions, locks, logs and metrics as the service's loop and `fpctl
/// maintenance run`): partitions made ahead, those past the retention dropped, payloads past
/// their tenant's retention cleared. `began` is the phase's start, for each step's offset.
pub async fn maintenance_round(
    database_url: &str,
    max_days: NonZeroU32,
    began: Instant,
) -> anyhow::Result<Vec<MaintenanceStep>> {
    let mut conn = fp_store::connect(database_url).await?;
    let policy = PartitionPolicy {
        partition_days: NonZeroU32::MIN,
        days_ahead: 3,
        max_days,
    };
    let mut steps = Vec::new();
    let offset = || began.elapsed().as_secs_f64();
    let now = Utc::now();
    let from = offset();
    steps.push(step_of(
        maintenance::create_partitions(&mut conn, now, policy).await,
        from,
    )?);
    let from = offset();
    steps.push(step_of(
        maintenance::drop_partitions(&mut conn, now, policy).await,
        from,
    )?);
    let from = offset();
    steps.push(step_of(
        maintenance::clear_payloads(&mut conn, now).await,
        from,
    )?);
    Ok(steps)
}

fn step_of(report: StepReport, started_after_seconds: f64) -> anyhow::Result<MaintenanceStep> {
    let count = match report.outcome {
        Ok(count) => count,
        Err(error) => bail!("maintenance step {} failed: {error}", report.step.name()),
    };
    Ok(MaintenanceStep {
        step: report.step.name().to_owned(),
        skipped: count.is_none(),
        count: count.unwrap_or(0),
        counted: report.step.counted().to_owned(),
        started_after_seconds,
        seconds: report.duration.as_secs_f64(),
    })
}

#[derive(diesel::QueryableByName)]
struct Logged {
    #[diesel(sql_type = BigInt)]
    attempts: i64,
}

/// Waits until a final attempt of one of the submission's events is logged.
pub async fn wait_until_delivered(
    database_url: &str,
    tenant_id: Uuid,
    submission_id: i64,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let mut conn = fp_store::connect(database_url).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let logged: Logged = diesel::sql_query(
            "SELECT count(*) AS attempts FROM delivery_attempts attempt \
             JOIN submission_events event ON event.event_id = attempt.event_id \
             WHERE event.tenant_id = $1 AND event.submission_id = $2 AND attempt.final",
        )
        .bind::<diesel::sql_types::Uuid, _>(tenant_id)
        .bind::<BigInt, _>(submission_id)
        .get_result(&mut conn)
        .await?;
        if logged.attempts > 0 {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("submission {submission_id} was not delivered and logged within {timeout:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Drops the seeded partitions that retention left, so the attempt table again holds only what
/// the pipeline wrote (the final check counts every row).
pub async fn drop_seeded(database_url: &str, end: DateTime<Utc>) -> anyhow::Result<usize> {
    let mut conn = fp_store::connect(database_url).await?;
    Ok(partitions::drop_attempt_partitions_before(&mut conn, end)
        .await?
        .len())
}
