//! Gauges the api samples for operators: the outbox backlog (events committed but not yet
//! published) and its oldest row's age, and the dead letters waiting in the broker. The api owns
//! the outbox, and every deployment runs it, so these are sampled here, once per api process.

use std::time::Duration;

use fp_broker::Broker;
use fp_store::PgPool;
use tokio::sync::watch;

/// How often the gauges are refreshed; Prometheus scrapes no faster than this matters.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

pub struct Sampler {
    pub pool: PgPool,
    pub broker: Broker,
}

impl Sampler {
    /// Samples until `stop` turns true. A failed sample leaves the last values (and is logged at
    /// debug level: readiness already reports an unreachable database or broker).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut every = tokio::time::interval(SAMPLE_INTERVAL);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.wait_for(|stopping| *stopping) => return,
            }
            if let Err(error) = self.sample_outbox().await {
                tracing::debug!(%error, "outbox backlog not sampled");
            }
            match self
                .broker
                .queue_depth(&self.broker.names.dead_letter_queue)
                .await
            {
                Ok(depth) => {
                    metrics::gauge!("fp_broker_dead_letter_queue_messages").set(f64::from(depth));
                }
                Err(error) => tracing::debug!(%error, "dead-letter queue not sampled"),
            }
        }
    }

    async fn sample_outbox(&self) -> Result<(), fp_store::StoreError> {
        let mut conn = self.pool.get().await?;
        let (rows, oldest) = fp_store::outbox::backlog(&mut conn).await?;
        let age = oldest
            .and_then(|oldest| (chrono::Utc::now() - oldest).to_std().ok())
            .unwrap_or_default();
        metrics::gauge!("fp_api_outbox_backlog").set(rows as f64);
        metrics::gauge!("fp_api_outbox_oldest_age_seconds").set(age.as_secs_f64());
        Ok(())
    }
}
