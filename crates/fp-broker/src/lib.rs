//! RabbitMQ adapter: the topology every service relies on, a publisher that waits for the broker's
//! confirm, consumers with a prefetch limit, and a dead-letter path for messages nobody can read.
//!
//! Every name starts with a namespace (`fp` by default) so that several deployments, or parallel test
//! runs, share one broker without seeing each other's messages.

use lapin::Confirmation;
use std::time::Duration;

use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

pub use lapin::Consumer;
pub use lapin::message::Delivery;
pub use lapin::options::{BasicAckOptions, BasicNackOptions};

/// AMQP header carrying the W3C trace context.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// AMQP header saying why a message was dead-lettered.
pub const DEAD_LETTER_REASON_HEADER: &str = "x-fp-dead-letter-reason";
/// AMQP header naming the queue a dead letter came from.
pub const DEAD_LETTER_SOURCE_HEADER: &str = "x-fp-dead-letter-source";
/// A quorum queue dead-letters a message redelivered this often: a message that crashes its
/// consumer every time cannot keep it in a crash loop.
const DELIVERY_LIMIT: i64 = 20;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("could not connect to RabbitMQ at {url}: {source}")]
    Connect { url: String, source: lapin::Error },
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

/// One AMQP connection of a process, and the names it uses.
pub struct Broker {
    connection: Connection,
    pub names: Names,
}

impl Broker {
    pub async fn connect(url: &str, namespace: &str) -> Result<Self, BrokerError> {
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .map_err(|source| BrokerError::Connect {
                url: redact(url),
                source,
            })?;
        Ok(Broker {
            connection,
            names: Names::new(namespace),
        })
    }

    pub async fn channel(&self) -> Result<Channel, BrokerError> {
        self.connection
            .create_channel()
            .await
            .map_err(amqp("channel.open"))
    }

    /// Declares every exchange, queue and binding. Idempotent: safe on every start.
    pub async fn declare_topology(&self) -> Result<(), BrokerError> {
        let channel = self.channel().await?;
        let names = &self.names;
        declare_exchange(&channel, &names.events_exchange, ExchangeKind::Topic).await?;
        declare_exchange(&channel, &names.attempts_exchange, ExchangeKind::Topic).await?;
        declare_exchange(
            &channel,
            &names.endpoint_health_exchange,
            ExchangeKind::Topic,
        )
        .await?;
        declare_exchange(&channel, &names.dead_letter_exchange, ExchangeKind::Fanout).await?;

        declare_quorum_queue(&channel, &names.dead_letter_queue, None).await?;
        bind(
            &channel,
            &names.dead_letter_queue,
            &names.dead_letter_exchange,
            "",
        )
        .await?;

        let dead_letters = Some(names.dead_letter_exchange.as_str());
        declare_quorum_queue(&channel, &names.dispatcher_queue, dead_letters).await?;
        bind(
            &channel,
            &names.dispatcher_queue,
            &names.events_exchange,
            "#",
        )
        .await?;
        declare_quorum_queue(&channel, &names.retry_queue, dead_letters).await?;
        declare_quorum_queue(&channel, &names.attempts_queue, dead_letters).await?;
        bind(
            &channel,
            &names.attempts_queue,
            &names.attempts_exchange,
            "#",
        )
        .await?;
        declare_quorum_queue(&channel, &names.endpoint_health_queue, dead_letters).await?;
        bind(
            &channel,
            &names.endpoint_health_queue,
            &names.endpoint_health_exchange,
            "#",
        )
        .await?;
        channel.close(200, "topology declared".into()).await.ok();
        Ok(())
    }

    /// Declares one delay queue per tier. Idempotent; the dispatcher calls it on start, so a changed
    /// schedule brings its queues along.
    pub async fn declare_delay_tiers(&self, tiers: &[Duration]) -> Result<(), BrokerError> {
        let channel = self.channel().await?;
        for tier in tiers {
            let mut arguments = quorum_arguments();
            let ttl = i64::try_from(tier.as_millis()).unwrap_or(i64::MAX);
            arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
            // Expired messages go, through the default exchange, to the retry queue...
            arguments.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString("".into()),
            );
            arguments.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(self.names.retry_queue.as_str().into()),
            );
            // ...and leave the delay queue only once the retry queue has them.
            arguments.insert(
                "x-dead-letter-strategy".into(),
                AMQPValue::LongString("at-least-once".into()),
            );
            arguments.insert(
                "x-overflow".into(),
                AMQPValue::LongString("reject-publish".into()),
            );
            declare_durable_queue(&channel, &self.names.delay_queue(*tier), arguments).await?;
        }
        channel.close(200, "delay tiers declared".into()).await.ok();
        Ok(())
    }

    /// Removes everything `declare_topology` and `declare_delay_tiers` made. For tests and for
    /// retiring a namespace.
    pub async fn delete_topology(&self, delay_tiers: &[Duration]) -> Result<(), BrokerError> {
        let channel = self.channel().await?;
        let names = &self.names;
        let mut queues = vec![
            names.dispatcher_queue.clone(),
            names.retry_queue.clone(),
            names.attempts_queue.clone(),
            names.endpoint_health_queue.clone(),
            names.dead_letter_queue.clone(),
        ];
        queues.extend(delay_tiers.iter().map(|tier| names.delay_queue(*tier)));
        for queue in queues {
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await
                .map_err(amqp("queue.delete"))?;
        }
        for exchange in [
            &names.events_exchange,
            &names.attempts_exchange,
            &names.endpoint_health_exchange,
            &names.dead_letter_exchange,
        ] {
            channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await
                .map_err(amqp("exchange.delete"))?;
        }
        Ok(())
    }

    /// A publisher on its own channel with confirms on. Keep one per process and share it.
    pub async fn publisher(&self) -> Result<Publisher, BrokerError> {
        let channel = self.channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(amqp("confirm.select"))?;
        Ok(Publisher { channel })
    }

    /// Consumes `queue` on a channel of its own, with at most `prefetch` unacknowledged messages.
    pub async fn consume(
        &self,
        queue: &str,
        consumer_tag: &str,
        prefetch: u16,
    ) -> Result<Consumer, BrokerError> {
        let channel = self.channel().await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(amqp("basic.qos"))?;
        channel
            .basic_consume(
                queue.into(),
                consumer_tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp("basic.consume"))
    }

    pub async fn close(&self) {
        self.connection
            .close(200, "shutting down".into())
            .await
            .ok();
    }
}

async fn declare_exchange(
    channel: &Channel,
    name: &str,
    kind: ExchangeKind,
) -> Result<(), BrokerError> {
    channel
        .exchange_declare(
            name.into(),
            kind,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(amqp("exchange.declare"))
}

/// Arguments every queue starts from: quorum queues are replicated in a cluster, and on
/// RabbitMQ 3.10 faster than classic durable queues.
fn quorum_arguments() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    arguments
}

async fn declare_durable_queue(
    channel: &Channel,
    name: &str,
    arguments: FieldTable,
) -> Result<(), BrokerError> {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await
        .map_err(amqp("queue.declare"))?;
    Ok(())
}

/// A work queue; with a dead-letter exchange, also a delivery limit so a message that crashes its
/// consumer every time ends there instead of looping.
async fn declare_quorum_queue(
    channel: &Channel,
    name: &str,
    dead_letter_exchange: Option<&str>,
) -> Result<(), BrokerError> {
    let mut arguments = quorum_arguments();
    if let Some(exchange) = dead_letter_exchange {
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(exchange.into()),
        );
        arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DELIVERY_LIMIT),
        );
    }
    declare_durable_queue(channel, name, arguments).await
}

async fn bind(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    routing_key: &str,
) -> Result<(), BrokerError> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            routing_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(amqp("queue.bind"))
}

/// A message to publish: persistent, with an id and the trace context.
pub struct OutgoingMessage<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub message_id: &'a str,
    pub traceparent: &'a str,
    pub payload: &'a [u8],
    /// Extra string headers.
    pub headers: &'a [(&'a str, &'a str)],
    /// Per-message TTL, for delay queues.
    pub expiration: Option<Duration>,
}

/// Publishes with publisher confirms: `publish` returns only once the broker has taken
/// responsibility for the message (written to the quorum queue), so callers may then ack their input
/// or mark their outbox row.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
}

impl Publisher {
    pub async fn publish(&self, message: &OutgoingMessage<'_>) -> Result<(), BrokerError> {
        let mut headers = FieldTable::default();
        headers.insert(
            TRACEPARENT_HEADER.into(),
            AMQPValue::LongString(message.traceparent.into()),
        );
        for (name, value) in message.headers {
            headers.insert((*name).into(), AMQPValue::LongString((*value).into()));
        }
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/x-protobuf".into())
            .with_message_id(message.message_id.into())
            .with_headers(headers);
        if let Some(expiration) = message.expiration {
            properties =
                properties.with_expiration(expiration.as_millis().to_string().as_str().into());
        }
        let confirmation = self
            .channel
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

    /// Moves an unreadable message to the dead-letter exchange with the reason, then acks it. The
    /// copy is confirmed before the original goes, so the message is never lost.
    pub async fn dead_letter(
        &self,
        names: &Names,
        source_queue: &str,
        delivery: &Delivery,
        reason: &str,
    ) -> Result<(), BrokerError> {
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(ShortString::to_string)
            .unwrap_or_default();
        let traceparent = header_text(delivery, TRACEPARENT_HEADER).unwrap_or_default();
        self.publish(&OutgoingMessage {
            exchange: &names.dead_letter_exchange,
            routing_key: source_queue,
            message_id: &message_id,
            traceparent: &traceparent,
            payload: &delivery.data,
            headers: &[
                (DEAD_LETTER_REASON_HEADER, reason),
                (DEAD_LETTER_SOURCE_HEADER, source_queue),
            ],
            expiration: None,
        })
        .await?;
        delivery
            .ack(BasicAckOptions::default())
            .await
            .map_err(amqp("basic.ack"))?;
        Ok(())
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

/// Acks every unacknowledged delivery up to and including `delivery` on its channel.
pub async fn ack_up_to(delivery: &Delivery) -> Result<(), BrokerError> {
    delivery
        .ack(BasicAckOptions { multiple: true })
        .await
        .map(|_| ())
        .map_err(amqp("basic.ack"))
}

/// Returns a delivery to its queue, e.g. when the database is down, so another try can succeed.
pub async fn requeue(delivery: &Delivery) -> Result<(), BrokerError> {
    delivery
        .nack(BasicNackOptions {
            requeue: true,
            multiple: false,
        })
        .await
        .map(|_| ())
        .map_err(amqp("basic.nack"))
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
