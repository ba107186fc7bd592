//! Publishes committed outbox rows to RabbitMQ and marks them, in one database transaction per batch.
//!
//! A row is marked only after the broker confirmed every message of its batch; if publishing or the
//! commit fails, the rows stay unmarked and go out again (at least once; receivers deduplicate on the
//! delivery id). `FOR UPDATE SKIP LOCKED` lets several api instances relay side by side.

use std::sync::Arc;
use std::time::Duration;

use fp_broker::{BrokerError, OutgoingMessage, Publisher};
use fp_store::outbox::{self, PendingEvent};
use fp_store::{AsyncConnection, PgPool, StoreError};
use futures_util::future::try_join_all;
use tokio::sync::Notify;

const BATCH_SIZE: i64 = 200;

pub struct OutboxRelay {
    pub pool: PgPool,
    pub publisher: Publisher,
    pub exchange: String,
    pub wakeup: Arc<Notify>,
    pub poll_interval: Duration,
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
    pub async fn run(self) {
        loop {
            match self.publish_batch().await {
                // A full batch suggests more are waiting.
                Ok(published) if published as i64 == BATCH_SIZE => continue,
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "outbox relay failed; retrying"),
            }
            tokio::select! {
                () = self.wakeup.notified() => {}
                () = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }

    async fn publish_batch(&self) -> Result<usize, RelayError> {
        let mut conn = self.pool.get().await.map_err(StoreError::from)?;
        conn.transaction(async |conn| {
            let pending = outbox::claim_unpublished(conn, BATCH_SIZE).await?;
            if pending.is_empty() {
                return Ok(0);
            }
            try_join_all(pending.iter().map(|event| self.publish(event))).await?;
            let ids: Vec<i64> = pending.iter().map(|event| event.id).collect();
            outbox::mark_published(conn, &ids).await?;
            tracing::debug!(count = ids.len(), "outbox events published");
            Ok::<_, RelayError>(ids.len())
        })
        .await
    }

    async fn publish(&self, event: &PendingEvent) -> Result<(), BrokerError> {
        self.publisher
            .publish(&OutgoingMessage {
                exchange: &self.exchange,
                routing_key: &event.event_type,
                message_id: &event.event_id.to_string(),
                traceparent: &event.traceparent,
                payload: &event.payload,
                headers: &[],
                expiration: None,
            })
            .await
    }
}
