//! Records the endpoint health that dispatchers report, and disables endpoints that have failed
//! every delivery for longer than `api.disable_failing_endpoints_after`. The api does this because
//! it owns webhook configs; dispatchers only observe.
//!
//! After each failure it records it wakes the notifier (`notifier`), which emails the tenant's
//! admins when one is due.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use fp_broker::{Deliveries, Delivery, Names, Publisher};
use fp_contracts::{DecodeError, ProtoMessage, time_from, uuid_from, v1};
use fp_domain::url_redaction::redact_url;
use fp_store::{PgPool, StoreError, webhook_config};
use futures_util::StreamExt;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

/// Pause before retrying a report the database refused.
const STORE_RETRY_DELAY: Duration = Duration::from_secs(1);

pub struct EndpointHealthRecorder {
    pub pool: PgPool,
    pub publisher: Publisher,
    pub names: Names,
    pub disable_after: Duration,
    /// The notifier's bell, rung after each failure recorded; `None` when notifications are off.
    pub notifier: Option<Arc<Notify>>,
}

impl EndpointHealthRecorder {
    /// Records reports until `stop` turns true (the report in hand is finished) or the broker is
    /// closed. A lost connection is consumed again by the broker's supervisor.
    pub async fn run(self, mut consumer: Deliveries, mut stop: watch::Receiver<bool>) {
        loop {
            let next = tokio::select! {
                next = consumer.next() => next,
                _ = stop.wait_for(|stopping| *stopping) => return,
            };
            let Some(delivery) = next else {
                return;
            };
            self.handle(delivery).await;
        }
    }

    async fn handle(&self, delivery: Delivery) {
        let report = match Report::decode(&delivery.data) {
            Ok(report) => report,
            Err(error) => {
                let reason = format!("not a usable endpoint health report: {error}");
                if let Err(error) = self
                    .publisher
                    .dead_letter(
                        &self.names,
                        &self.names.endpoint_health_queue,
                        &delivery,
                        &reason,
                    )
                    .await
                {
                    tracing::error!(%error, "could not dead-letter a health report");
                }
                return;
            }
        };
        // The database may be briefly away; a report is never dropped for that.
        while let Err(error) = self.record(&report).await {
            tracing::warn!(%error, "could not record endpoint health; retrying");
            tokio::time::sleep(STORE_RETRY_DELAY).await;
        }
        if let Err(error) = fp_broker::ack(&delivery).await {
            tracing::warn!(%error, "ack of a health report failed; it will be recorded again");
        }
    }

    async fn record(&self, report: &Report) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        match report.failing_since {
            None => {
                webhook_config::record_success(
                    &mut conn,
                    report.tenant_id,
                    &report.url,
                    report.observed_at,
                )
                .await
            }
            Some(since) => {
                let disable_before = Utc::now()
                    - chrono::Duration::from_std(self.disable_after)
                        .unwrap_or(chrono::Duration::MAX);
                let disabled = webhook_config::record_failure(
                    &mut conn,
                    report.tenant_id,
                    &report.url,
                    since,
                    disable_before,
                )
                .await?;
                if disabled {
                    metrics::counter!("fp_api_endpoints_disabled_total").increment(1);
                    tracing::warn!(tenant_id = %report.tenant_id, url = %redact_url(&report.url), %since, "endpoint disabled: every delivery failed for too long");
                }
                if let Some(notifier) = &self.notifier {
                    notifier.notify_one();
                }
                Ok(())
            }
        }
    }
}

/// A decoded, validated report. `failing_since` is `None` for a healthy endpoint.
struct Report {
    tenant_id: Uuid,
    url: String,
    observed_at: DateTime<Utc>,
    failing_since: Option<DateTime<Utc>>,
}

impl Report {
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let report = v1::EndpointHealthReport::decode(bytes)?;
        Ok(Report {
            tenant_id: uuid_from("tenant_id", &report.tenant_id)?,
            observed_at: time_from("observed_at", report.observed_at.as_ref())?,
            failing_since: if report.healthy {
                None
            } else {
                Some(time_from("failing_since", report.failing_since.as_ref())?)
            },
            url: report.url,
        })
    }
}
