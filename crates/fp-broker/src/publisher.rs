//! Publishing with confirms on the supervised connection.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation};
use tokio::sync::Mutex;

use fp_telemetry::OTEL_TARGET;
use fp_telemetry::propagation::{self, Context};
use tracing::Instrument;
use tracing::field::Empty;

use crate::batch::{BatchLimits, BatchPublisher, BatchTarget};
use crate::connection::Broker;
use crate::owned_channel::OwnedChannel;
use crate::propagation::AmqpHeadersMut;
use crate::{
    BrokerError, DEAD_LETTER_REASON_HEADER, DEAD_LETTER_SOURCE_HEADER, Delivery, Names,
    REJECTION_HEADER, UNREADABLE, amqp,
};

/// A message to publish: persistent, with an id and the trace context of its publish span.
pub struct OutgoingMessage<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub message_id: &'a str,
    /// The parent of the publish span: `None` for the current span (the usual case), `Some` for
    /// work that continues a stored context (the outbox relay, a manual redelivery).
    pub parent: Option<&'a Context>,
    pub payload: &'a [u8],
    /// Extra string headers.
    pub headers: &'a [(&'a str, &'a str)],
    /// Per-message TTL, for delay queues.
    pub expiration: Option<Duration>,
}

/// What a producer span stands for, in the OpenTelemetry messaging conventions.
#[derive(Clone, Copy)]
pub(crate) enum Production {
    /// A message sent to the broker (its span is named `publish <destination>`).
    Publish,
    /// One message of a batch, made here and sent with the batch (`create <destination>`).
    Create,
}

/// A producer span; its context goes with the message.
pub(crate) fn producer_span(
    production: Production,
    destination: &str,
    routing_key: &str,
    message_id: &str,
) -> tracing::Span {
    let (name, operation_type) = match production {
        Production::Publish => ("publish", "send"),
        Production::Create => ("create", "create"),
    };
    tracing::info_span!(
        target: OTEL_TARGET,
        "publish",
        "otel.name" = %format!("{name} {destination}"),
        "otel.kind" = "producer",
        "otel.status_code" = Empty,
        "messaging.system" = "rabbitmq",
        "messaging.operation.type" = operation_type,
        "messaging.destination.name" = %destination,
        "messaging.rabbitmq.destination.routing_key" = %routing_key,
        "messaging.message.id" = %message_id,
        "error.type" = Empty,
    )
}

/// Marks a producer span failed.
pub(crate) fn record_failure(span: &tracing::Span, error: &BrokerError) {
    span.record("error.type", error.kind());
    span.record("otel.status_code", "ERROR");
}

/// Publishes with publisher confirms: `publish` returns only once the broker has taken
/// responsibility for the message (written to the quorum queue), so callers may then ack their input
/// or mark their outbox row. Its channel is opened on first use and again on each new connection.
#[derive(Clone)]
pub struct Publisher {
    broker: Broker,
    /// The confirm-mode channel and the connection generation it belongs to; closed when the last
    /// clone of this publisher goes.
    channel: Arc<Mutex<Option<(u64, OwnedChannel)>>>,
}

impl Publisher {
    pub(crate) fn new(broker: Broker) -> Self {
        Publisher {
            broker,
            channel: Arc::new(Mutex::new(None)),
        }
    }

    pub(crate) fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Publishes messages to `target` in batches (`BatchPublisher`), through this publisher's
    /// channel.
    pub fn batched(&self, target: BatchTarget, limits: BatchLimits) -> BatchPublisher {
        BatchPublisher::start(self.clone(), target, limits)
    }

    async fn channel(&self) -> Result<Channel, BrokerError> {
        let current_generation = self.broker.session()?.generation;
        let mut cached = self.channel.lock().await;
        if let Some((generation, owned)) = cached.as_ref()
            && *generation == current_generation
            && owned.channel.status().connected()
        {
            return Ok(owned.channel.clone());
        }
        let (generation, owned) = self.broker.owned_channel().await?;
        owned
            .channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(amqp("confirm.select"))?;
        let channel = owned.channel.clone();
        *cached = Some((generation, owned));
        Ok(channel)
    }

    /// Publishes once, in a producer span whose context the message carries. Refused at once with
    /// `Unavailable` while the broker is disconnected.
    pub async fn publish(&self, message: &OutgoingMessage<'_>) -> Result<(), BrokerError> {
        self.publish_as(message, None).await
    }

    /// `publish`, with the AMQP `type` property: the contract's events carry the name of their
    /// protobuf message there (`fp_contracts::EventMessage::MESSAGE_TYPE`).
    pub async fn publish_as(
        &self,
        message: &OutgoingMessage<'_>,
        message_type: Option<&str>,
    ) -> Result<(), BrokerError> {
        self.publish_linked(message, message_type, &[]).await
    }

    /// `publish_as`, with the publish span linked to `links`: a message that carries the work of
    /// several traces (a batch) is linked to each.
    pub(crate) async fn publish_linked(
        &self,
        message: &OutgoingMessage<'_>,
        message_type: Option<&str>,
        links: &[Context],
    ) -> Result<(), BrokerError> {
        // The destination is the exchange, or the queue for the default exchange.
        let destination = if message.exchange.is_empty() {
            message.routing_key
        } else {
            message.exchange
        };
        let span = producer_span(
            Production::Publish,
            destination,
            message.routing_key,
            message.message_id,
        );
        if let Some(parent) = message.parent {
            propagation::set_parent(&span, parent.clone());
        }
        for link in links {
            propagation::add_link(&span, link);
        }
        let result = self
            .publish_in(message, message_type, &span)
            .instrument(span.clone())
            .await;
        if let Err(error) = &result {
            record_failure(&span, error);
            // Refusals while disconnected are not confirms that failed: readiness shows those.
            if !matches!(error, BrokerError::Unavailable { .. }) {
                metrics::counter!("fp_broker_publish_confirms_failed_total").increment(1);
            }
        }
        result
    }

    async fn publish_in(
        &self,
        message: &OutgoingMessage<'_>,
        message_type: Option<&str>,
        span: &tracing::Span,
    ) -> Result<(), BrokerError> {
        let channel = self.channel().await?;
        let mut headers = FieldTable::default();
        propagation::inject(span, &mut AmqpHeadersMut(&mut headers));
        for (name, value) in message.headers {
            headers.insert((*name).into(), AMQPValue::LongString((*value).into()));
        }
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/x-protobuf".into())
            .with_message_id(message.message_id.into())
            .with_headers(headers);
        if let Some(message_type) = message_type {
            properties = properties.with_type(message_type.into());
        }
        if let Some(expiration) = message.expiration {
            properties =
                properties.with_expiration(expiration.as_millis().to_string().as_str().into());
        }
        let confirmation = channel
            .basic_publish(
                message.exchange.into(),
                message.routing_key.into(),
                // Mandatory: a message no queue takes comes back instead of vanishing.
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                message.payload,
                properties,
            )
            .await
            .map_err(amqp("basic.publish"))?
            .await
            .map_err(amqp("basic.publish confirm"))?;
        let failure = |unroutable: bool| {
            let exchange = message.exchange.to_owned();
            let routing_key = message.routing_key.to_owned();
            if unroutable {
                BrokerError::Unroutable {
                    exchange,
                    routing_key,
                }
            } else {
                BrokerError::Nacked {
                    exchange,
                    routing_key,
                }
            }
        };
        match confirmation {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(_)) => Err(failure(true)),
            Confirmation::Nack(_) => Err(failure(false)),
        }
    }

    /// Moves an unreadable message to the dead-letter exchange with the reason, then acks it.
    pub async fn dead_letter(
        &self,
        names: &Names,
        source_queue: &str,
        delivery: &Delivery,
        reason: &str,
    ) -> Result<(), BrokerError> {
        self.copy_to_dead_letters(names, source_queue, delivery, UNREADABLE, reason)
            .await?;
        crate::ack(delivery).await
    }

    /// Moves a copy of a message refused for `code` (a stable word, such as the dispatcher's
    /// rejection reasons) to the dead-letter exchange, with `code` in [`REJECTION_HEADER`] and
    /// `reason` in [`DEAD_LETTER_REASON_HEADER`], and waits for its confirm. The caller then
    /// settles the original (acks it).
    pub async fn copy_to_dead_letters(
        &self,
        names: &Names,
        source_queue: &str,
        delivery: &Delivery,
        code: &str,
        reason: &str,
    ) -> Result<(), BrokerError> {
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(ShortString::to_string)
            .unwrap_or_default();
        // The dead letter stays in the trace of the message it was.
        let parent = crate::trace_context(delivery);
        self.publish(&OutgoingMessage {
            exchange: &names.dead_letter_exchange,
            routing_key: source_queue,
            message_id: &message_id,
            parent: Some(&parent),
            payload: &delivery.data,
            headers: &[
                (DEAD_LETTER_REASON_HEADER, reason),
                (DEAD_LETTER_SOURCE_HEADER, source_queue),
                (REJECTION_HEADER, code),
            ],
            expiration: None,
        })
        .await?;
        // Every dead letter is a message its consumer could not use; the queue it came from is one
        // of the topology's few, so both labels stay bounded. The code and the reason text go in
        // the headers (the dispatcher counts its codes itself).
        metrics::counter!(
            "fp_broker_dead_lettered_total",
            "reason" => UNREADABLE,
            "queue" => source_queue.to_owned(),
        )
        .increment(1);
        Ok(())
    }
}
