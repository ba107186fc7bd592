//! RabbitMQ adapter: one supervised connection per process that reconnects by itself
//! (`connection`), the topology every service relies on, a publisher that waits for the broker's
//! confirm, consumers with a prefetch limit that survive reconnects (with acks coalesced per
//! channel for concurrent handlers: `settlement`), and a dead-letter path for messages nobody can
//! read.
//!
//! Every name starts with a namespace (`fp` by default) so that several deployments, or parallel test
//! runs, share one broker without seeing each other's messages.

use std::time::Duration;

use lapin::types::{AMQPValue, LongString};

mod batch;
mod connection;
mod consumer;
mod owned_channel;
mod propagation;
mod publisher;
mod settlement;
pub mod topology;

pub use batch::{BatchLimits, BatchPublisher, BatchTarget};
pub use connection::{Broker, Declarations, endpoints};
pub use consumer::{Deliveries, SettledDeliveries, StoppedConsumers};
pub use lapin::message::Delivery;
pub use lapin::options::{BasicAckOptions, BasicNackOptions};
pub use propagation::{AmqpHeaders, AmqpHeadersMut, trace_context};
pub use publisher::{OutgoingMessage, Publisher};
pub use settlement::{Inbound, Settlement};
pub use topology::QueueOptions;

/// AMQP header carrying the W3C trace context (with `tracestate` beside it when the trace has one).
pub const TRACEPARENT_HEADER: &str = fp_telemetry::propagation::TRACEPARENT;
/// AMQP header saying why a message was dead-lettered.
pub const DEAD_LETTER_REASON_HEADER: &str = "x-fp-dead-letter-reason";
/// AMQP header naming the queue a dead letter came from.
pub const DEAD_LETTER_SOURCE_HEADER: &str = "x-fp-dead-letter-source";
/// AMQP header with the stable code of why a message was dead-lettered: `unreadable` for a
/// message a service cannot decode, or one of the dispatcher's rejection codes for an event
/// (`fp_domain::inbound_event::RejectionReason`).
pub const REJECTION_HEADER: &str = "x-fp-rejection";
/// The code of a message a service cannot decode.
pub const UNREADABLE: &str = "unreadable";

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("could not connect to RabbitMQ at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("RabbitMQ is unavailable: {reason}")]
    Unavailable { reason: String },
    #[error("RabbitMQ operation `{operation}` failed: {source}")]
    Amqp {
        operation: &'static str,
        source: lapin::Error,
    },
    #[error("RabbitMQ refused message for `{exchange}` / `{routing_key}` (nack)")]
    Nacked {
        exchange: String,
        routing_key: String,
    },
    #[error(
        "no queue is bound for `{exchange}` / `{routing_key}`: declare the topology (`fpctl migrate`)"
    )]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
}

impl BrokerError {
    /// A short, fixed name of the failure, for a span's `error.type`.
    pub fn kind(&self) -> &'static str {
        match self {
            BrokerError::Connect { .. } => "connect",
            BrokerError::Unavailable { .. } => "unavailable",
            BrokerError::Amqp { .. } => "amqp",
            BrokerError::Nacked { .. } => "nacked",
            BrokerError::Unroutable { .. } => "unroutable",
        }
    }

    /// Whether the failure came from the connection (down, or lost before the confirm), so the same
    /// publish can succeed on the next one; a refusal by the broker cannot.
    pub fn is_connection_loss(&self) -> bool {
        matches!(
            self,
            BrokerError::Unavailable { .. }
                | BrokerError::Connect { .. }
                | BrokerError::Amqp { .. }
        )
    }
}

fn amqp(operation: &'static str) -> impl FnOnce(lapin::Error) -> BrokerError {
    move |source| BrokerError::Amqp { operation, source }
}

/// Exchange and queue names of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// Topic exchange of domain events; routing key = event type.
    pub events_exchange: String,
    /// The dispatchers' shared work queue.
    pub dispatcher_queue: String,
    /// Delivery jobs whose delay is over (retries, deferred attempts), also shared by dispatchers.
    pub retry_queue: String,
    /// Topic exchange of delivery-attempt records.
    pub attempts_exchange: String,
    /// log-ingest's queue.
    pub attempts_queue: String,
    /// Topic exchange of endpoint health reports, and fp-api's queue of them.
    pub endpoint_health_exchange: String,
    pub endpoint_health_queue: String,
    /// Fanout exchange and queue of messages that could not be processed.
    pub dead_letter_exchange: String,
    pub dead_letter_queue: String,
    namespace: String,
}

impl Names {
    pub fn new(namespace: &str) -> Self {
        Names {
            events_exchange: format!("{namespace}.events"),
            dispatcher_queue: format!("{namespace}.dispatcher.events"),
            retry_queue: format!("{namespace}.dispatcher.retries"),
            attempts_exchange: format!("{namespace}.attempts"),
            attempts_queue: format!("{namespace}.log-ingest.attempts"),
            endpoint_health_exchange: format!("{namespace}.endpoint-health"),
            endpoint_health_queue: format!("{namespace}.api.endpoint-health"),
            dead_letter_exchange: format!("{namespace}.dead"),
            dead_letter_queue: format!("{namespace}.dead-letters"),
            namespace: namespace.to_owned(),
        }
    }

    /// The delay queue of one retry tier: messages wait there until their TTL, then move to
    /// `retry_queue`. One queue per delay, since RabbitMQ expires only the head of a queue.
    pub fn delay_queue(&self, tier: Duration) -> String {
        format!("{}.delay.{}ms", self.namespace, tier.as_millis())
    }
}

/// A string header of a delivery, if present.
pub fn header_text(delivery: &Delivery, name: &str) -> Option<String> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(value) => Some(long_string_text(value)),
        AMQPValue::ShortString(value) => Some(value.to_string()),
        _ => None,
    }
}

fn long_string_text(value: &LongString) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

/// Acks one delivery, naming the operation in the error.
pub async fn ack(delivery: &Delivery) -> Result<(), BrokerError> {
    delivery
        .ack(BasicAckOptions::default())
        .await
        .map(|_| ())
        .map_err(amqp("basic.ack"))
}

/// Returns one delivery to its queue (`basic.nack` with requeue), naming the operation in the
/// error.
pub async fn requeue(delivery: &Delivery) -> Result<(), BrokerError> {
    delivery
        .nack(BasicNackOptions {
            multiple: false,
            requeue: true,
        })
        .await
        .map(|_| ())
        .map_err(amqp("basic.nack"))
}

/// Acks every unacknowledged delivery up to and including `delivery` on its channel.
pub async fn ack_up_to(delivery: &Delivery) -> Result<(), BrokerError> {
    delivery
        .ack(BasicAckOptions { multiple: true })
        .await
        .map(|_| ())
        .map_err(amqp("basic.ack"))
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_share_the_namespace() {
        let names = Names::new("t42");
        assert_eq!(names.events_exchange, "t42.events");
        assert_eq!(names.dispatcher_queue, "t42.dispatcher.events");
        assert_eq!(names.attempts_queue, "t42.log-ingest.attempts");
        assert_eq!(
            names.delay_queue(Duration::from_secs(5)),
            "t42.delay.5000ms"
        );
    }

    #[test]
    fn credentials_are_not_logged() {
        assert_eq!(
            redact("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("amqp://127.0.0.1"), "amqp://127.0.0.1");
    }
}
