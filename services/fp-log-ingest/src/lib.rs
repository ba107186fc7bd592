//! log-ingest: consumes attempt records and inserts them in batches. A batch is acked only after
//! its transaction commits; rows are keyed by attempt id and time, so a record that arrives twice
//! (a redelivery after a crash) still makes one row. Its maintenance loop keeps the table's
//! partitions (`maintenance`).

mod maintenance;
mod record;

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use fp_broker::{Broker, Declarations, Deliveries, Delivery, Publisher, QueueOptions};
use fp_settings::{ExposeSecret, Settings};
use fp_store::PgPool;
use fp_store::attempts::AttemptRow;
use fp_telemetry::health::{self, Health};
use fp_telemetry::propagation::StoredContext;
use futures_util::StreamExt;
use tokio::time::Instant;
use tracing::Instrument;
use uuid::Uuid;

/// Pause before retrying a batch the database refused, so a down database is not hammered.
const STORE_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Pause before returning an unreadable record that could not be dead-lettered to its queue, so a
/// broker refusing the copy is not asked again at once.
const DEAD_LETTER_RETRY_DELAY: Duration = Duration::from_secs(1);

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let ingest = &settings.log_ingest;
    let health = Health::new();
    let health_addr = health::serve(ingest.health_listen, health.clone())
        .await
        .with_context(|| format!("cannot serve health on {}", ingest.health_listen))?;
    tracing::info!(%health_addr, "health endpoints up");

    let pool = fp_store::pool(settings.database.url.expose_secret(), 2)?;
    fp_store::ensure_migrated(&pool)
        .await
        .context("fp-log-ingest cannot start")?;
    health.require(
        "database",
        fp_store::Reachability::watch(pool.clone(), settings.lifecycle.readiness_probe_interval())
            .into_check(),
    );
    let broker = Broker::supervise(
        settings.broker.url.expose_secret(),
        &settings.broker.namespace,
        Declarations::topology(QueueOptions {
            quorum_initial_group_size: settings.broker.quorum_initial_group_size,
        }),
    );
    health.require("broker", broker.readiness_check());
    let publisher = broker.publisher();
    let consumer = broker.consume(
        &broker.names.attempts_queue,
        &format!("fp-log-ingest-{}", std::process::id()),
        ingest.prefetch,
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let maintenance_task = tokio::spawn(
        maintenance::Maintenance::new(settings.database.url.clone(), &settings.retention)
            .run(stopped),
    );
    health.set_ready(true);
    tracing::info!(queue = %broker.names.attempts_queue, "log-ingest consuming");

    let ingestor = Ingestor {
        pool,
        publisher,
        broker: &broker,
        batch_size: ingest.batch_size.max(1),
        linger: Duration::from_millis(ingest.batch_linger_ms),
        messages_per_batch: (usize::from(ingest.prefetch) / 2).max(1),
    };
    ingestor
        .run(consumer, settings.lifecycle.drain_timeout())
        .await;
    health.set_ready(false);
    let _ = stop.send(true);
    let _ = maintenance_task.await;
    broker.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// The rows of one batch: attempts with their outcome, and pending records of attempts sent
/// just now (or interrupted).
#[derive(Default)]
struct BatchRows {
    outcomes: Vec<AttemptRow>,
    pending: Vec<AttemptRow>,
}

impl BatchRows {
    /// How long each outcome waited, from the end of its attempt to the commit of its row: the
    /// attempt record's way through the broker, this batch's linger and the insert.
    fn record_lag(&self, committed_at: chrono::DateTime<chrono::Utc>) {
        let lag = metrics::histogram!("fp_log_ingest_lag_seconds");
        for row in &self.outcomes {
            let ended = row.attempted_at + chrono::TimeDelta::milliseconds(row.duration_ms);
            lag.record(
                (committed_at - ended)
                    .to_std()
                    .unwrap_or_default()
                    .as_secs_f64(),
            );
        }
    }

    fn add(&mut self, record: record::AttemptRecord) {
        if record.outcome_pending {
            self.pending.push(record.row);
        } else {
            self.outcomes.push(record.row);
        }
    }

    /// A pending record and its outcome often share a batch: only the outcome is stored.
    fn drop_pending_with_outcome(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let settled: HashSet<Uuid> = self.outcomes.iter().map(|row| row.id).collect();
        self.pending.retain(|row| !settled.contains(&row.id));
    }
}

/// A message from the attempts queue and the records it holds (one, or a dispatcher's batch).
struct Received {
    delivery: Delivery,
    records: Result<Vec<record::AttemptRecord>, fp_contracts::DecodeError>,
}

impl Received {
    fn decode(delivery: Delivery) -> Self {
        let message_type = delivery
            .properties
            .kind()
            .as_ref()
            .map(|kind| kind.as_str());
        let records = record::attempt_records(message_type, &delivery.data).map(|mut records| {
            // A record published alone carries its trace in the message's headers; each record of
            // a batch carries its own. The context is kept with the row, so a manual redelivery
            // joins the record's trace.
            let mut header = None;
            for record in records
                .iter_mut()
                .filter(|record| record.row.traceparent.is_empty())
            {
                let header = header.get_or_insert_with(|| {
                    StoredContext::of_context(&fp_broker::trace_context(&delivery))
                });
                record.row.traceparent.clone_from(&header.traceparent);
                record.row.tracestate.clone_from(&header.tracestate);
            }
            records
        });
        Received { delivery, records }
    }

    fn records(&self) -> &[record::AttemptRecord] {
        self.records.as_deref().unwrap_or_default()
    }

    /// Records it holds (an unreadable message counts as one: it is handled like one).
    fn len(&self) -> usize {
        self.records.as_ref().map_or(1, Vec::len)
    }
}

struct Ingestor<'a> {
    pool: PgPool,
    publisher: Publisher,
    broker: &'a Broker,
    batch_size: usize,
    linger: Duration,
    /// Half the consumer's prefetch (see `next_batch`).
    messages_per_batch: usize,
}

impl Ingestor<'_> {
    /// Stores batches until SIGTERM; then the batch being stored is finished (within `drain`) and
    /// acked, and what was not yet taken returns to the queue when the connection closes.
    async fn run(&self, mut consumer: Deliveries, drain: Duration) {
        let shutdown = fp_telemetry::lifecycle::shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            let batch = tokio::select! {
                batch = self.next_batch(&mut consumer) => batch,
                () = &mut shutdown => return,
            };
            let Some(batch) = batch else {
                return;
            };
            let store = self.store(batch);
            tokio::pin!(store);
            tokio::select! {
                () = &mut store => {}
                () = &mut shutdown => {
                    tracing::info!("stopping: finishing the batch in hand");
                    if tokio::time::timeout(drain, store).await.is_err() {
                        tracing::warn!("drain timed out; the batch returns to the queue");
                    }
                    return;
                }
            }
        }
    }

    /// Waits for one message, then gathers more until the batch holds `batch_size` records, has
    /// waited `linger`, or holds half the prefetch window. The broker sends nothing beyond the
    /// window until this batch is acked, so lingering on a full window would only wait; stopping
    /// at half lets the other half arrive while this batch is stored. `None` once the broker is
    /// closed.
    async fn next_batch(&self, consumer: &mut Deliveries) -> Option<Vec<Received>> {
        let first = Received::decode(consumer.next().await?);
        let mut records = first.len();
        let mut batch = vec![first];
        let deadline = Instant::now() + self.linger;
        while records < self.batch_size && batch.len() < self.messages_per_batch {
            tokio::select! {
                next = consumer.next() => match next {
                    Some(delivery) => {
                        let received = Received::decode(delivery);
                        records += received.len();
                        batch.push(received);
                    }
                    None => break,
                },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        Some(batch)
    }

    /// Stores a batch and acks it, retrying until the database takes it: records are never dropped.
    ///
    /// The batch's insert span is linked to every record it stores (a batch spans many traces),
    /// and is a child of the first record's publish span, so the trace of that record's event
    /// reaches the database.
    async fn store(&self, batch: Vec<Received>) {
        let span = tracing::info_span!(
            target: fp_telemetry::OTEL_TARGET,
            "insert",
            "otel.name" = "INSERT delivery_attempts",
            "otel.kind" = "internal",
            "otel.status_code" = tracing::field::Empty,
            "db.system.name" = "postgresql",
            "db.operation.name" = "INSERT",
            "db.collection.name" = "delivery_attempts",
            "db.operation.batch.size" = batch.iter().map(Received::len).sum::<usize>(),
            "fp.rows.outcomes" = tracing::field::Empty,
            "fp.rows.pending" = tracing::field::Empty,
            "error.type" = tracing::field::Empty,
        );
        let mut first = true;
        for record in batch.iter().flat_map(Received::records) {
            let context = fp_telemetry::propagation::stored_context(
                &record.row.traceparent,
                &record.row.tracestate,
            );
            fp_telemetry::propagation::add_link(&span, &context);
            if std::mem::take(&mut first) {
                fp_telemetry::propagation::set_parent(&span, context);
            }
        }
        self.store_in_span(batch, &span)
            .instrument(span.clone())
            .await;
    }

    async fn store_in_span(&self, batch: Vec<Received>, span: &tracing::Span) {
        let mut rows = BatchRows::default();
        let mut last_readable = None;
        let mut not_dead_lettered = Vec::new();
        let mut received = 0;
        for message in batch {
            match message.records {
                Ok(records) => {
                    received += records.len();
                    for record in records {
                        tracing::debug!(
                            traceparent = record.row.traceparent,
                            attempt_id = %record.row.id,
                            delivery_id = %record.row.delivery_id,
                            pending = record.outcome_pending,
                            "attempt received"
                        );
                        rows.add(record);
                    }
                    last_readable = Some(message.delivery);
                }
                Err(error) => {
                    if !self
                        .dead_letter(&message.delivery, &error.to_string())
                        .await
                    {
                        not_dead_lettered.push(message.delivery);
                    }
                }
            }
        }
        if !not_dead_lettered.is_empty() {
            // Returned before the batch's multiple-ack, which would otherwise settle them too,
            // and they would be lost; after one pause, so that a broker refusing the copies is
            // not asked again at once. Up to RabbitMQ 4.2 a nack counts towards the queue's
            // delivery limit (20), past which the queue dead-letters them itself; from 4.3 it does
            // not, and they are returned until the broker takes the copy.
            tokio::time::sleep(DEAD_LETTER_RETRY_DELAY).await;
            for delivery in &not_dead_lettered {
                if let Err(error) = fp_broker::requeue(delivery).await {
                    tracing::warn!(%error, "could not return it; it comes back when its channel closes");
                }
            }
        }
        rows.drop_pending_with_outcome();
        let Some(last) = last_readable else {
            return;
        };
        loop {
            match self.insert(&mut rows).await {
                Ok(stored) => {
                    span.record("fp.rows.outcomes", stored.outcomes);
                    span.record("fp.rows.pending", stored.pending);
                    tracing::debug!(
                        received,
                        outcomes = stored.outcomes,
                        pending = stored.pending,
                        "attempt batch stored"
                    );
                    // Attempts whose outcome is stored: what "logged" means to a tenant.
                    metrics::counter!("fp_log_ingest_rows_inserted_total")
                        .increment(stored.outcomes as u64);
                    metrics::counter!("fp_log_ingest_pending_rows_total")
                        .increment(stored.pending as u64);
                    if stored.dropped > 0 {
                        // A retry or a last attempt that ended after `fpctl tenant delete`.
                        tracing::info!(
                            dropped = stored.dropped,
                            "attempt records of deleted tenants dropped, not stored"
                        );
                        metrics::counter!("fp_log_ingest_records_dropped_total")
                            .increment(stored.dropped as u64);
                    }
                    metrics::histogram!("fp_log_ingest_batch_rows").record(received as f64);
                    rows.record_lag(chrono::Utc::now());
                    break;
                }
                Err(error) => {
                    span.record("error.type", "database");
                    tracing::warn!(
                        error = format!("{error:#}"),
                        records = received,
                        "could not store attempts; retrying"
                    );
                    tokio::time::sleep(STORE_RETRY_DELAY).await;
                }
            }
        }
        // Unreadable messages were settled one by one already (dead-lettered and acked, or
        // returned); acking the rest up to the last one covers exactly this batch, since one
        // consumer owns the channel and batches are in order.
        if let Err(error) = fp_broker::ack_up_to(&last).await {
            tracing::warn!(%error, "ack failed; the batch will be delivered again and deduplicated");
        }
    }

    async fn insert(&self, rows: &mut BatchRows) -> anyhow::Result<fp_store::attempts::StoredRows> {
        let mut conn = self.pool.get().await.map_err(fp_store::StoreError::from)?;
        let stored = fp_store::attempts::store_batch(
            &mut conn,
            &mut rows.outcomes,
            &mut rows.pending,
            fp_contracts::INTERRUPTED_ERROR_KIND,
        )
        .await?;
        if stored.erased > 0 {
            tracing::info!(
                erased = stored.erased,
                "records of erased events: personal data erased before storing"
            );
        }
        Ok(stored)
    }

    /// Dead-letters an unreadable message and acks it; false where the broker did not take the
    /// copy (the message is then still unsettled).
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> bool {
        tracing::error!(reason, "unreadable attempt record: dead-lettering");
        let names = &self.broker.names;
        match self
            .publisher
            .dead_letter(names, &names.attempts_queue, delivery, reason)
            .await
        {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(%error, "could not dead-letter; returning it to its queue");
                false
            }
        }
    }
}
