//! The Health section of the tenant's Webhook Logs page: the platform summary's figures (attempts,
//! success rate, median and 95th percentile duration) over the last 24 hours and 7 days, whatever
//! the list's filters, and the endpoint's state with when a failing one will be disabled.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use fp_domain::endpoint_health::endpoint_state;
use fp_domain::time_zone::Tz;
use fp_store::attempts::{self, AttemptFilter};
use fp_store::{PgConnection, StoreError, webhook_config};
use uuid::Uuid;

use super::success_rate;
use crate::i18n::Lang;
use crate::views::health::{HealthView, PeriodView, StateView};

/// The periods shown, each ending now: its id (`PeriodView::id`) and length.
const PERIODS: [(&str, TimeDelta); 2] = [("day", TimeDelta::days(1)), ("week", TimeDelta::days(7))];

/// The tenant's health at `now`; `disable_after` is the api's `api.disable_failing_endpoints_after`.
pub async fn health(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    disable_after: Duration,
    now: DateTime<Utc>,
    lang: Lang,
    zone: Tz,
) -> Result<HealthView, StoreError> {
    let mut periods = Vec::with_capacity(PERIODS.len());
    for (id, length) in PERIODS {
        let filter = AttemptFilter {
            tenant_id: Some(tenant_id),
            event_type: None,
            status: None,
            from: now - length,
            to: now,
        };
        let summary = attempts::summary(conn, &filter).await?;
        periods.push(PeriodView {
            id,
            attempts: summary.attempts,
            success_rate: success_rate(summary.succeeded, summary.attempts, lang),
            p50_ms: summary.p50_duration_ms.map(|ms| ms.round() as i64),
            p95_ms: summary.p95_duration_ms.map(|ms| ms.round() as i64),
        });
    }
    let record = webhook_config::health(conn, tenant_id)
        .await?
        .map(Into::into);
    let state = endpoint_state(record.as_ref(), disable_after, now);
    Ok(HealthView {
        periods,
        state: StateView::new(state, zone),
    })
}
