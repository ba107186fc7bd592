//! The exchanges, queues and bindings of one namespace, declared on a channel. Declarations are
//! idempotent, so every service can make them on every (re)connect.

use std::time::Duration;

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use crate::{BrokerError, Names, amqp};

/// A quorum queue dead-letters a message redelivered this often: a message that crashes its
/// consumer every time cannot keep it in a crash loop.
const DELIVERY_LIMIT: i64 = 20;

/// How the queues of a deployment are made, beyond their names (`broker.*` settings). Changing
/// it changes the queues' x-arguments, and RabbitMQ refuses to declare an existing queue with
/// other arguments (PRECONDITION_FAILED): a changed value needs new queues (a new namespace, or
/// the old queues drained and deleted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueOptions {
    /// `x-quorum-initial-group-size` of every quorum queue: how many nodes hold a replica when
    /// the queue is made. `None` leaves it to the broker (every cluster member). 3 on a
    /// three-node cluster.
    pub quorum_initial_group_size: Option<u32>,
}

/// Declares every exchange, queue and binding.
pub async fn declare_topology(
    channel: &Channel,
    names: &Names,
    options: QueueOptions,
) -> Result<(), BrokerError> {
    declare_exchange(channel, &names.events_exchange, ExchangeKind::Topic).await?;
    declare_exchange(channel, &names.attempts_exchange, ExchangeKind::Topic).await?;
    declare_exchange(
        channel,
        &names.endpoint_health_exchange,
        ExchangeKind::Topic,
    )
    .await?;
    declare_exchange(channel, &names.dead_letter_exchange, ExchangeKind::Fanout).await?;

    declare_quorum_queue(channel, &names.dead_letter_queue, None, options).await?;
    bind(
        channel,
        &names.dead_letter_queue,
        &names.dead_letter_exchange,
        "",
    )
    .await?;

    let dead_letters = Some(names.dead_letter_exchange.as_str());
    declare_quorum_queue(channel, &names.dispatcher_queue, dead_letters, options).await?;
    bind(
        channel,
        &names.dispatcher_queue,
        &names.events_exchange,
        "#",
    )
    .await?;
    declare_quorum_queue(channel, &names.retry_queue, dead_letters, options).await?;
    declare_quorum_queue(channel, &names.attempts_queue, dead_letters, options).await?;
    bind(
        channel,
        &names.attempts_queue,
        &names.attempts_exchange,
        "#",
    )
    .await?;
    declare_quorum_queue(channel, &names.endpoint_health_queue, dead_letters, options).await?;
    bind(
        channel,
        &names.endpoint_health_queue,
        &names.endpoint_health_exchange,
        "#",
    )
    .await?;
    Ok(())
}

/// Declares one delay queue per tier, so a changed schedule brings its queues along.
pub async fn declare_delay_tiers(
    channel: &Channel,
    names: &Names,
    tiers: &[Duration],
    options: QueueOptions,
) -> Result<(), BrokerError> {
    for tier in tiers {
        let mut arguments = quorum_arguments(options);
        let ttl = i64::try_from(tier.as_millis()).unwrap_or(i64::MAX);
        arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
        // Expired messages go, through the default exchange, to the retry queue...
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        arguments.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(names.retry_queue.as_str().into()),
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
        declare_durable_queue(channel, &names.delay_queue(*tier), arguments).await?;
    }
    Ok(())
}

/// Removes everything `declare_topology` and `declare_delay_tiers` made. For tests and for
/// retiring a namespace.
pub async fn delete_topology(
    channel: &Channel,
    names: &Names,
    delay_tiers: &[Duration],
) -> Result<(), BrokerError> {
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
fn quorum_arguments(options: QueueOptions) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    if let Some(size) = options.quorum_initial_group_size {
        arguments.insert(
            "x-quorum-initial-group-size".into(),
            AMQPValue::LongLongInt(i64::from(size)),
        );
    }
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
    options: QueueOptions,
) -> Result<(), BrokerError> {
    let mut arguments = quorum_arguments(options);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn argument<'a>(arguments: &'a FieldTable, key: &str) -> Option<&'a AMQPValue> {
        arguments.inner().get(key)
    }

    #[test]
    fn queues_are_quorum_queues_with_the_broker_default_group_size_unless_set() {
        let arguments = quorum_arguments(QueueOptions::default());
        assert_eq!(
            argument(&arguments, "x-queue-type"),
            Some(&AMQPValue::LongString("quorum".into()))
        );
        assert_eq!(argument(&arguments, "x-quorum-initial-group-size"), None);
        assert_eq!(arguments.inner().len(), 1);
    }

    #[test]
    fn a_set_group_size_goes_into_every_quorum_queue() {
        let options = QueueOptions {
            quorum_initial_group_size: Some(3),
        };
        let arguments = quorum_arguments(options);
        assert_eq!(
            argument(&arguments, "x-queue-type"),
            Some(&AMQPValue::LongString("quorum".into()))
        );
        assert_eq!(
            argument(&arguments, "x-quorum-initial-group-size"),
            Some(&AMQPValue::LongLongInt(3))
        );
    }
}
