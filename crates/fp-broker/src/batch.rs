//! Many small messages to one destination, published together: each caller hands over its
//! message and waits for the confirm of the batch that carried it.
//!
//! A batch is whatever was waiting when a publish slot came free; nothing waits for company (no
//! linger), so an idle dispatcher's record leaves at once, and a busy one's records share one
//! publish, one confirm and one delivery to the consumer instead of one each.

use std::sync::Arc;
use std::time::Duration;

use fp_telemetry::propagation::{self, Context, StoredContext};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

use crate::BrokerError;
use crate::publisher::{OutgoingMessage, Production, Publisher, producer_span, record_failure};

/// Where batches go and how they are framed.
#[derive(Clone)]
pub struct BatchTarget {
    pub exchange: String,
    pub routing_key: String,
    /// AMQP `type` of a batch, which tells its consumer the framing.
    pub message_type: &'static str,
    /// Frames encoded messages as one message body.
    pub frame: fn(&[Vec<u8>]) -> Vec<u8>,
}

/// How large batches grow and how many are in flight at once.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Messages per batch at most.
    pub max_messages: usize,
    /// A batch takes no further message once its bodies reach this many bytes (a message larger
    /// than that goes alone).
    pub max_bytes: usize,
    /// Batches awaiting their confirm at once: while all are out, messages gather for the next.
    pub in_flight: usize,
}

/// A message waiting for its batch.
struct Waiting {
    body: Vec<u8>,
    /// The context of the caller's span for this message: the batch's span is linked to it.
    context: Context,
    /// Until when a lost connection may be waited for (now, for a message that must be confirmed
    /// on this connection or not at all).
    deadline: Instant,
    confirmed: oneshot::Sender<Result<(), Arc<BrokerError>>>,
}

/// Publishes messages in batches (see the module's documentation). Cheap to clone; the batching
/// task ends when the last clone goes.
#[derive(Clone)]
pub struct BatchPublisher {
    queue: mpsc::UnboundedSender<Waiting>,
    /// The target's, for the messages' spans.
    exchange: Arc<str>,
    routing_key: Arc<str>,
}

impl BatchPublisher {
    /// Starts the batching task on the current runtime.
    pub(crate) fn start(publisher: Publisher, target: BatchTarget, limits: BatchLimits) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        let exchange = target.exchange.as_str().into();
        let routing_key = target.routing_key.as_str().into();
        tokio::spawn(gather(publisher, target, limits, waiting));
        BatchPublisher {
            queue,
            exchange,
            routing_key,
        }
    }

    /// Publishes one message in the next batch and returns once that batch is confirmed. The
    /// message gets a `create` span (its id `message_id`) in the current trace, and `encode` makes
    /// its body knowing that span's context, which the body must carry: a batch's headers carry
    /// only the batch's. While the connection is down or lost before the confirm, the batch is
    /// published again on the next connection for up to `patience` (zero: this connection or
    /// not at all).
    pub async fn publish(
        &self,
        message_id: &str,
        patience: Duration,
        encode: impl FnOnce(StoredContext) -> Vec<u8>,
    ) -> Result<(), Arc<BrokerError>> {
        let span = producer_span(
            Production::Create,
            &self.exchange,
            &self.routing_key,
            message_id,
        );
        let body = encode(StoredContext::of_span(&span));
        let result = self
            .enqueue(body, propagation::context(&span), patience)
            .instrument(span.clone())
            .await;
        if let Err(error) = &result {
            record_failure(&span, error);
        }
        result
    }

    async fn enqueue(
        &self,
        body: Vec<u8>,
        context: Context,
        patience: Duration,
    ) -> Result<(), Arc<BrokerError>> {
        let (confirmed, confirmation) = oneshot::channel();
        let stopped = || {
            Arc::new(BrokerError::Unavailable {
                reason: "the batching task has stopped".to_owned(),
            })
        };
        self.queue
            .send(Waiting {
                body,
                context,
                deadline: Instant::now() + patience,
                confirmed,
            })
            .map_err(|_| stopped())?;
        confirmation.await.map_err(|_| stopped())?
    }
}

/// Takes what is waiting whenever a publish slot is free, and publishes it in a task of its own.
async fn gather(
    publisher: Publisher,
    target: BatchTarget,
    limits: BatchLimits,
    mut waiting: mpsc::UnboundedReceiver<Waiting>,
) {
    let slots = Arc::new(Semaphore::new(limits.in_flight.max(1)));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = waiting.recv().await else {
            return;
        };
        let mut bytes = first.body.len();
        let mut batch = vec![first];
        while batch.len() < limits.max_messages && bytes < limits.max_bytes {
            let Ok(next) = waiting.try_recv() else {
                break;
            };
            bytes += next.body.len();
            batch.push(next);
        }
        metrics::histogram!("fp_broker_batch_messages", "exchange" => target.exchange.clone())
            .record(batch.len() as f64);
        let publisher = publisher.clone();
        let target = target.clone();
        tokio::spawn(async move {
            publish_batch(&publisher, &target, batch).await;
            drop(slot);
        });
    }
}

/// Publishes one batch and tells each member how it went. On a lost connection, members still
/// within their patience go again together on the next connection; the others fail at once.
async fn publish_batch(publisher: &Publisher, target: &BatchTarget, mut batch: Vec<Waiting>) {
    loop {
        let bodies: Vec<Vec<u8>> = batch
            .iter_mut()
            .map(|member| std::mem::take(&mut member.body))
            .collect();
        let contexts: Vec<Context> = batch.iter().map(|member| member.context.clone()).collect();
        let message_id = uuid::Uuid::now_v7().to_string();
        let result = publisher
            .publish_linked(
                &OutgoingMessage {
                    exchange: &target.exchange,
                    routing_key: &target.routing_key,
                    message_id: &message_id,
                    // The batch is in the trace of its first message, linked to all of them.
                    parent: contexts.first(),
                    payload: &(target.frame)(&bodies),
                    headers: &[],
                    expiration: None,
                },
                Some(target.message_type),
                &contexts,
            )
            .await;
        let error = match result {
            Ok(()) => {
                for member in batch {
                    let _ = member.confirmed.send(Ok(()));
                }
                return;
            }
            Err(error) => Arc::new(error),
        };
        let now = Instant::now();
        let (patient, impatient): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .zip(bodies)
            .map(|(member, body)| Waiting { body, ..member })
            .partition(|member| error.is_connection_loss() && member.deadline > now);
        for member in impatient {
            let _ = member.confirmed.send(Err(error.clone()));
        }
        let Some(latest) = patient.iter().map(|member| member.deadline).max() else {
            return;
        };
        tracing::debug!(%error, waiting = patient.len(), "batch waits for the next connection");
        if publisher
            .broker()
            .wait_connected(latest.saturating_duration_since(now))
            .await
            .is_err()
        {
            for member in patient {
                let _ = member.confirmed.send(Err(error.clone()));
            }
            return;
        }
        let now = Instant::now();
        let (patient, late): (Vec<_>, Vec<_>) = patient
            .into_iter()
            .partition(|member| member.deadline > now);
        for member in late {
            let _ = member.confirmed.send(Err(error.clone()));
        }
        if patient.is_empty() {
            return;
        }
        batch = patient;
    }
}
