//! Publishes committed outbox rows to RabbitMQ and marks them published.
//!
//! Two ways, the same guarantee (a row is marked only after the broker confirmed its message; a
//! row left unmarked goes out again, at least once; receivers deduplicate on the delivery id):
//!
//! - **The hand-off.** Whatever the api commits to the outbox it hands to its relay in memory
//!   ([`OutboxHandoff`]), which publishes it at once and then marks it: no claim, no transaction,
//!   no wait for a poll. Marks gather for 100 ms into one `UPDATE`, since nothing waits for them.
//!   The hand-off never blocks the request that committed: when the relay is behind, or the
//!   broker away, the rows simply stay for the poll, and a hand-off that waited in the relay's
//!   queue for half the grace is left to it too.
//! - **The poll.** Every `api.outbox_poll_interval_ms`, `api.outbox_relay_pipelines` loops claim
//!   unmarked rows created at least `api.outbox_handoff_grace_ms` ago (when their transaction
//!   began; `FOR UPDATE SKIP LOCKED`, so batches stay disjoint across loops and api instances),
//!   publish them and mark them in the claim's transaction. That is what a failed hand-off, a
//!   crashed api's rows and rows written by hand come out through. A row both ways took (a
//!   hand-off slower than the grace, a transaction that ran longer than it) is published twice: at
//!   least once, as before.

use std::num::NonZeroUsize;
use std::time::Duration;

use fp_broker::{Broker, BrokerError, OutgoingMessage, Publisher};
use fp_contracts::EventMessage;
use fp_store::outbox::{self, OutboxEvent};
use fp_store::{AsyncConnection, PgPool, StoreError};
use futures_util::StreamExt;
use futures_util::future::{join_all, try_join_all};
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use uuid::Uuid;

/// Rows a poll's batch claims: enough to keep confirms streaming, few enough that a failed batch
/// (sent again in full) and its row locks stay small.
const BATCH_SIZE: i64 = 500;

/// Handed-off events being published at once; beyond that, hand-offs queue (up to
/// [`HANDOFFS_QUEUED`] batches) and then fall to the poll.
const HANDOFF_EVENTS_IN_FLIGHT: usize = 2 * BATCH_SIZE as usize;

/// Committed batches waiting for the relay: a writer's batch is at most `api.submission_batch_max`.
const HANDOFFS_QUEUED: usize = 256;

/// How long confirmed hand-offs gather before one `UPDATE` marks them all. No request waits for a
/// mark (only the poll's grace does, and it is 50 times longer by default), and at paced rates,
/// where a writer's batch holds a submission or two, a mark per batch was a commit per batch.
const MARK_LINGER: Duration = Duration::from_millis(100);

/// Most events one mark names (16 bytes each in its array).
const MARK_MAX: usize = 5_000;

/// Confirmed batches waiting for the mark loop; when it is behind, publishing waits for it.
const CONFIRMED_QUEUED: usize = 256;

/// Events committed together, handed to the relay.
pub struct Handoff {
    pub events: Vec<OutboxEvent>,
    committed_at: Instant,
}

/// The committing side of the hand-off: cheap to clone, never waits.
#[derive(Clone)]
pub struct OutboxHandoff {
    sender: mpsc::Sender<Handoff>,
}

impl OutboxHandoff {
    /// A hand-off and the receiving end, for [`OutboxRelay::handoffs`].
    pub fn channel() -> (Self, mpsc::Receiver<Handoff>) {
        let (sender, receiver) = mpsc::channel(HANDOFFS_QUEUED);
        (Self { sender }, receiver)
    }

    /// Hands `events` to the relay. Call only once they are committed: the relay publishes them
    /// straight away. Where it cannot take them now, they stay for the poll.
    pub fn committed(&self, events: Vec<OutboxEvent>) {
        if events.is_empty() {
            return;
        }
        let handoff = Handoff {
            events,
            committed_at: Instant::now(),
        };
        if let Err(error) = self.sender.try_send(handoff) {
            let (reason, handoff) = match error {
                TrySendError::Full(handoff) => ("queue_full", handoff),
                TrySendError::Closed(handoff) => ("stopped", handoff),
            };
            missed(reason, handoff.events.len());
        }
    }
}

/// Counts `count` handed-off events left to the poll, and why.
fn missed(reason: &'static str, count: usize) {
    metrics::counter!("fp_api_outbox_handoff_events_missed_total", "reason" => reason)
        .increment(count as u64);
    tracing::debug!(reason, count, "outbox events left to the relay's poll");
}

pub struct OutboxRelay {
    pub pool: PgPool,
    pub broker: Broker,
    pub publisher: Publisher,
    pub exchange: String,
    /// What the api committed, from [`OutboxHandoff::committed`].
    pub handoffs: mpsc::Receiver<Handoff>,
    /// How long a committed row is left to the hand-off before the poll takes it.
    pub handoff_grace: Duration,
    pub poll_interval: Duration,
    /// Poll loops running side by side, each with its own connection and transaction.
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

/// What a failing loop says: once per outage, not every attempt.
#[derive(Default)]
struct Failures(u32);

impl Failures {
    /// `what` says what failed and what becomes of its events.
    fn record(&mut self, error: &RelayError, what: &str) {
        self.0 = self.0.saturating_add(1);
        if self.0 == 1 {
            tracing::warn!(%error, "{what}");
        } else {
            tracing::debug!(%error, failures = self.0, "{what} (again)");
        }
    }

    fn clear(&mut self) {
        self.0 = 0;
    }
}

const HANDOFF_FAILED: &str = "outbox hand-off failed; its events wait for the relay's poll";

impl OutboxRelay {
    /// Relays until `stop` turns true. The hand-off publishes what was handed over before the stop
    /// (so stop the relay after whatever commits to the outbox); each poll loop finishes the batch
    /// it has under way.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        let Self {
            pool,
            broker,
            publisher,
            exchange,
            handoffs,
            handoff_grace,
            poll_interval,
            pipelines,
        } = self;
        let relay = Relay {
            pool,
            broker,
            publisher,
            exchange,
            wakeup: Notify::new(),
            handoff_grace,
            poll_interval,
        };
        let polls = join_all((0..pipelines.get()).map(|_| relay.poll_loop(stop.clone())));
        let (confirmed, to_mark) = mpsc::channel(CONFIRMED_QUEUED);
        tokio::join!(
            polls,
            relay.handoff_loop(handoffs, confirmed, stop.clone()),
            relay.mark_loop(to_mark),
        );
    }
}

/// The relay's shared part, borrowed by every loop.
struct Relay {
    pool: PgPool,
    broker: Broker,
    publisher: Publisher,
    exchange: String,
    /// A poll loop that found a full batch wakes another for the next.
    wakeup: Notify,
    handoff_grace: Duration,
    poll_interval: Duration,
}

impl Relay {
    /// Publishes what is handed over, many batches at once, and passes each confirmed batch's
    /// event ids to [`Relay::mark_loop`]; ends once stopped and everything taken is confirmed or
    /// failed (dropping `confirmed` then ends the marks too).
    async fn handoff_loop(
        &self,
        mut handoffs: mpsc::Receiver<Handoff>,
        confirmed: mpsc::Sender<Vec<Uuid>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut in_flight = FuturesUnordered::new();
        let mut events_in_flight = 0usize;
        let mut failures = Failures::default();
        let mut stopping = false;
        loop {
            tokio::select! {
                Some((count, result)) = in_flight.next(), if !in_flight.is_empty() => {
                    events_in_flight -= count;
                    match result {
                        Ok(()) => failures.clear(),
                        Err(error) => failures.record(&error, HANDOFF_FAILED),
                    }
                }
                handoff = handoffs.recv(), if events_in_flight < HANDOFF_EVENTS_IN_FLIGHT => {
                    match handoff {
                        // Queued so long that the poll may take these rows soon: published
                        // now, they would likely go out twice.
                        Some(handoff) if handoff.committed_at.elapsed() > self.handoff_grace / 2 => {
                            missed("stale", handoff.events.len());
                        }
                        Some(handoff) => {
                            events_in_flight += handoff.events.len();
                            in_flight.push(self.publish_handed(handoff.events, &confirmed));
                        }
                        // Stopped, and everything handed over is under way.
                        None => break,
                    }
                }
                // What was handed over before the stop still goes out; nothing more is taken.
                _ = stop.wait_for(|stop| *stop), if !stopping => {
                    stopping = true;
                    handoffs.close();
                }
            }
        }
        while let Some((_, result)) = in_flight.next().await {
            if let Err(error) = result {
                failures.record(&error, HANDOFF_FAILED);
            }
        }
    }

    /// Publishes a handed-off batch and, once the broker confirmed all of it, passes it on to be
    /// marked; returns its size with the outcome. Nothing is claimed: rows this young are the
    /// hand-off's alone (the poll leaves them for the grace).
    async fn publish_handed(
        &self,
        events: Vec<OutboxEvent>,
        confirmed: &mpsc::Sender<Vec<Uuid>>,
    ) -> (usize, Result<(), RelayError>) {
        // Refused at once while the broker is away: the rows stay for the poll.
        let outcome = try_join_all(events.iter().map(|event| self.publish(event))).await;
        if outcome.is_err() {
            missed("publish_failed", events.len());
        } else {
            // The mark loop outlives this loop, so the send fails only if it panicked; the rows
            // then stay for the poll.
            let _ = confirmed
                .send(events.iter().map(|event| event.event_id).collect())
                .await;
        }
        (events.len(), outcome.map(drop).map_err(RelayError::from))
    }

    /// Marks confirmed hand-offs published, gathered for [`MARK_LINGER`] into one `UPDATE`; ends
    /// when the hand-off loop has ended and everything it confirmed is marked. A mark that fails
    /// leaves its rows to the poll, which publishes them again after the grace (at least once).
    async fn mark_loop(&self, mut confirmed: mpsc::Receiver<Vec<Uuid>>) {
        let mut failures = Failures::default();
        while let Some(mut event_ids) = confirmed.recv().await {
            let deadline = tokio::time::Instant::now() + MARK_LINGER;
            while event_ids.len() < MARK_MAX {
                match tokio::time::timeout_at(deadline, confirmed.recv()).await {
                    Ok(Some(more)) => event_ids.extend(more),
                    Ok(None) | Err(_) => break,
                }
            }
            match self.mark(&event_ids).await {
                Ok(marked) => {
                    failures.clear();
                    metrics::counter!("fp_api_outbox_published_total", "path" => "handoff")
                        .increment(marked as u64);
                }
                Err(error) => {
                    missed("mark_failed", event_ids.len());
                    failures.record(
                        &error,
                        "marking published outbox events failed; the poll publishes them again",
                    );
                }
            }
        }
    }

    /// Marks `event_ids`; returns how many were not marked already (by the poll).
    async fn mark(&self, event_ids: &[Uuid]) -> Result<usize, RelayError> {
        let mut conn = self.pool.get().await.map_err(StoreError::from)?;
        Ok(outbox::mark_published(&mut conn, event_ids).await?)
    }

    async fn poll_loop(&self, mut stop: watch::Receiver<bool>) {
        let mut failures = Failures::default();
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
            match self.publish_claimed().await {
                // A full batch suggests more are waiting.
                Ok(published) if published as i64 >= BATCH_SIZE => {
                    failures.clear();
                    continue;
                }
                Ok(_) => failures.clear(),
                Err(error) => failures.record(&error, "outbox poll failed; retrying at the next"),
            }
            tokio::select! {
                () = self.wakeup.notified() => {}
                () = tokio::time::sleep(self.poll_interval) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Claims a batch of rows the hand-off left, publishes it and marks it, in one transaction.
    async fn publish_claimed(&self) -> Result<usize, RelayError> {
        let mut conn = self.pool.get().await.map_err(StoreError::from)?;
        let published = conn
            .transaction(async |conn| {
                let pending =
                    outbox::claim_unpublished(conn, BATCH_SIZE, self.handoff_grace).await?;
                if pending.is_empty() {
                    return Ok(0);
                }
                // More are probably waiting: another loop claims them while this batch's
                // confirms come in (or, all busy, the first to finish does).
                if pending.len() as i64 == BATCH_SIZE {
                    self.wakeup.notify_one();
                }
                try_join_all(pending.iter().map(|event| self.publish(event))).await?;
                let event_ids: Vec<Uuid> = pending.iter().map(|event| event.event_id).collect();
                let marked = outbox::mark_published(conn, &event_ids).await?;
                tracing::debug!(count = marked, "outbox events published");
                Ok::<_, RelayError>(marked)
            })
            .await?;
        // Counted once committed: a batch whose commit failed goes out again.
        metrics::counter!("fp_api_outbox_published_total", "path" => "poll")
            .increment(published as u64);
        Ok(published)
    }

    async fn publish(&self, event: &OutboxEvent) -> Result<(), BrokerError> {
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
