//! fp-api's per-tenant rate limits: one token bucket row per tenant and action, shared by every api
//! replica. The rule is `fp_domain::rate_limit`'s; here it is applied to the stored state with a
//! compare-and-swap in one statement, so concurrent requests on any replica never both spend the
//! same token. Times come from the database's clock, which every replica shares.

use chrono::{DateTime, Utc};
use diesel::sql_types::{Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use fp_domain::rate_limit::{Admission, LimitedAction, RateLimit};
use uuid::Uuid;

use crate::{PgConnection, StoreError};

/// How often a take reads its bucket again when another request changed it in between. Each lost
/// swap means another request took tokens; past this many the request is refused for a second,
/// as it would almost surely have been anyway.
const MAX_SWAPS: usize = 16;

/// What a refused take under that much contention is told to wait.
const CONTENDED_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(diesel::QueryableByName)]
struct Bucket {
    #[diesel(sql_type = Nullable<Timestamptz>)]
    full_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Timestamptz)]
    now: DateTime<Utc>,
}

async fn bucket(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    action: LimitedAction,
) -> Result<Bucket, StoreError> {
    Ok(diesel::sql_query(
        "SELECT now() AS now, (SELECT full_at FROM rate_limit_buckets \
         WHERE tenant_id = $1 AND action = $2) AS full_at",
    )
    .bind::<SqlUuid, _>(tenant_id)
    .bind::<Text, _>(action.as_str())
    .get_result::<Bucket>(conn)
    .await?)
}

/// The tokens `tenant_id`'s bucket of `action` holds now, or how long until it holds one; takes
/// nothing.
pub async fn room(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    action: LimitedAction,
    limit: RateLimit,
) -> Result<Result<u32, std::time::Duration>, StoreError> {
    let bucket = bucket(conn, tenant_id, action).await?;
    Ok(limit.room(bucket.full_at, bucket.now))
}

/// Takes up to `wanted` tokens (at least one) from `tenant_id`'s bucket of `action`.
pub async fn take(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    action: LimitedAction,
    limit: RateLimit,
    wanted: u32,
) -> Result<Admission, StoreError> {
    for _ in 0..MAX_SWAPS {
        let bucket = bucket(conn, tenant_id, action).await?;
        let admission = limit.take(bucket.full_at, bucket.now, wanted);
        let Admission::Granted { full_at, .. } = admission else {
            return Ok(admission);
        };
        // Written only if the bucket is still as read: a missing row is inserted, a changed one
        // is left alone (no row affected) and read again.
        let swapped = diesel::sql_query(
            "INSERT INTO rate_limit_buckets (tenant_id, action, full_at) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id, action) DO UPDATE SET full_at = EXCLUDED.full_at \
             WHERE rate_limit_buckets.full_at IS NOT DISTINCT FROM $4",
        )
        .bind::<SqlUuid, _>(tenant_id)
        .bind::<Text, _>(action.as_str())
        .bind::<Timestamptz, _>(full_at)
        .bind::<Nullable<Timestamptz>, _>(bucket.full_at)
        .execute(conn)
        .await?;
        if swapped == 1 {
            return Ok(admission);
        }
    }
    Ok(Admission::Refused {
        retry_after: CONTENDED_RETRY_AFTER,
    })
}
