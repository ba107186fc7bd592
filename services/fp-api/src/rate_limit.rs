//! The per-tenant rate limits of the actions that send requests on a tenant's word: taken from the
//! tenant's bucket in the database (`fp_store::rate_limits`), shared by every api replica; over
//! the limit, a 429 with `Retry-After`.

use std::time::Duration;

use fp_domain::rate_limit::{Admission, LimitedAction, RateLimit, retry_after_seconds};
use fp_store::PgConnection;
use uuid::Uuid;

use crate::error::ApiError;

/// What the tenant did too often, for the 429's message.
fn what(action: LimitedAction) -> &'static str {
    match action {
        LimitedAction::Redelivery => "redeliveries",
        LimitedAction::BulkRedelivery => "deliveries queued by bulk redelivery",
        LimitedAction::TestEvent => "test events",
    }
}

fn refused(action: LimitedAction, limit: RateLimit, retry_after: Duration) -> ApiError {
    ApiError::RateLimited {
        message: format!("too many {}: this tenant may have {limit}", what(action)),
        retry_after_secs: retry_after_seconds(retry_after),
    }
}

/// Takes up to `wanted` (at least one) of `action`'s budget; returns how many were granted, or
/// a 429 when none is left.
pub async fn take(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    action: LimitedAction,
    limit: RateLimit,
    wanted: u32,
) -> Result<u32, ApiError> {
    match fp_store::rate_limits::take(conn, tenant_id, action, limit, wanted).await? {
        Admission::Granted { granted, .. } => Ok(granted),
        Admission::Refused { retry_after } => Err(refused(action, limit, retry_after)),
    }
}

/// How much of `action`'s budget is left, taking nothing; a 429 when none is.
pub async fn room(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    action: LimitedAction,
    limit: RateLimit,
) -> Result<u32, ApiError> {
    fp_store::rate_limits::room(conn, tenant_id, action, limit)
        .await?
        .map_err(|retry_after| refused(action, limit, retry_after))
}
