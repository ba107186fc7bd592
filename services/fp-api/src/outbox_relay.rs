//! Publishes committed outbox rows to RabbitMQ and marks them, in one database transaction per batch.
//!
//! A row is marked only after the broker confirmed every message of its batch; if publishing or the
//! commit fails, the rows stay unmarked and go out again (at least once; receivers deduplicate on the
//! delivery id). `FOR UPDATE SKIP LOCKED` keeps batches disjoint, so several loops of one api (its
//! pipelines) and several api instances relay side by side: one loop claims and publishes the next
//! batch while another waits for its confirms and commit.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use fp_broker::{Broker, BrokerError, OutgoingMessage, Publisher};
use fp_contracts::EventMessage;
use fp_store::outbox::{self, PendingEvent};
use fp_store::{AsyncConnection, PgPool, StoreError};
use futures_util::future::{join_all, try_join_all};
use tokio::sync::{Notify, watch};

/// Rows a batch claims: enough to keep confirms streaming, few enough that a failed batch (sent
/// again in full) and its row locks stay small.
const BATCH_SIZE: i64 = 500;

pub struct OutboxRelay {
    pub pool: PgPool,
    pub broker: Broker,
    pub publisher: Publisher,
    pub exchange: String,
    /// Notified after each outbox commit; a notification with no loop waiting is kept for the next.
    pub wakeup: Arc<Notify>,
    pub poll_interval: Duration,
    /// Relay loops running side by side, each with its own connection and transaction.
    pub pipelines: NonZeroUsize,
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl From<fp_store::DieselError> for RelayError {
    fn from(error: fp_store::DieselError) -> Self {
        RelayError::Store(error.into())
    }
}

impl OutboxRelay {
    /// Relays with [`OutboxRelay::pipelines`] loops until `stop` turns true; each finishes the
    /// batch it has under way first.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        join_all((0..self.pipelines.get()).map(|_| self.relay_loop(stop.clone()))).await;
    }

    async fn relay_loop(&self, mut stop: watch::Receiver<bool>) {
        let mut failures: u32 = 0;
        while !*stop.borrow() {
            // While the broker is away nothing is claimed: events wait in the outbox, and the
            // relay waits for the supervisor's next connection instead of failing every poll.
            if !self.broker.is_connected() {
                tracing::info!("outbox relay waiting for RabbitMQ");
                tokio::select! {
                    _ = self.broker.wait_connected(Duration::from_secs(3600)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            match self.publish_batch().await {
                // A full batch suggests more are waiting.
                Ok(published) if published as i64 == BATCH_SIZE => {
                    failures = 0;
                    continue;
                }
                Ok(_) => failures = 0,
                Err(error) => {
                    failures = failures.saturating_add(1);
                    // Said once per outage, not every poll.
                    if failures == 1 {
                        tracing::warn!(%error, "outbox relay failed; retrying");
                    } else {
                        tracing::debug!(%error, failures, "outbox relay failed again");
                    }
                }
            }
            tokio::select! {
                () = self.wakeup.notified() => {}
                () = tokio::time::sleep(self.poll_interval) => {}
                _ = stop.changed() => {}
            }
        }
    }

    async fn publish_batch(&self) -> Result<usize, RelayError> {
        let mut conn = self.pool.get().await.map_err(StoreError::from)?;
        let published = conn
            .transaction(async |conn| {
                let pending = outbox::claim_unpublished(conn, BATCH_SIZE).await?;
                if pending.is_empty() {
                    return Ok(0);
                }
                // More are probably waiting: another loop claims them while this batch's
                // confirms come in (or, all busy, the first to finish does).
                if pending.len() as i64 == BATCH_SIZE {
                    self.wakeup.notify_one();
                }
                try_join_all(pending.iter().map(|event| self.publish(event))).await?;
                let ids: Vec<i64> = pending.iter().map(|event| event.id).collect();
                outbox::mark_published(conn, &ids).await?;
                tracing::debug!(count = ids.len(), "outbox events published");
                Ok::<_, RelayError>(ids.len())
            })
            .await?;
        // Counted once committed: a batch whose commit failed goes out again.
        metrics::counter!("fp_api_outbox_published_total").increment(published as u64);
        Ok(published)
    }

    async fn publish(&self, event: &PendingEvent) -> Result<(), BrokerError> {
        // The publish continues the trace of the request that recorded the event.
        let parent =
            fp_telemetry::propagation::stored_context(&event.traceparent, &event.tracestate);
        // The contract's message, as every other publisher of events builds it.
        let message =
            EventMessage::encoded(event.event_id, &event.event_type, event.payload.clone());
        self.publisher
            .publish_as(
                &OutgoingMessage {
                    exchange: &self.exchange,
                    routing_key: &message.routing_key,
                    message_id: &message.message_id,
                    parent: Some(&parent),
                    payload: &message.body,
                    headers: &[],
                    expiration: None,
                },
                Some(EventMessage::MESSAGE_TYPE),
            )
            .await
    }
}
