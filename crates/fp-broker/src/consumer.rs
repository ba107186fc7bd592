//! Consumers that outlive their connection: a lost channel or connection is consumed again as soon
//! as the supervisor has a new one. Deliveries of the lost channel were not acked, so the broker
//! hands them out again (with `redelivered` set).

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;

use crate::connection::{Broker, backoff};
use crate::owned_channel::OwnedChannel;
use crate::{BrokerError, Delivery, amqp};

/// The deliveries of one queue, across reconnects. Ends only when the broker is closed.
pub type Deliveries = Pin<Box<dyn Stream<Item = Delivery> + Send>>;

struct Attachment {
    broker: Broker,
    queue: String,
    consumer_tag: String,
    prefetch: u16,
    /// The channel consuming now; dropping it cancels the consumer and closes the channel.
    attached: Option<OwnedChannel>,
    failures: u32,
}

pub(crate) fn consume(
    broker: Broker,
    queue: &str,
    consumer_tag: &str,
    prefetch: u16,
) -> Deliveries {
    let attachment = Attachment {
        broker,
        queue: queue.to_owned(),
        consumer_tag: consumer_tag.to_owned(),
        prefetch,
        attached: None,
        failures: 0,
    };
    Box::pin(futures_util::stream::unfold(attachment, next_delivery))
}

async fn next_delivery(mut state: Attachment) -> Option<(Delivery, Attachment)> {
    loop {
        if state.attached.is_none() {
            state.broker.session_when_up().await?;
            match attach(&state).await {
                Ok(attached) => {
                    if state.failures > 0 {
                        tracing::info!(queue = %state.queue, "consuming again");
                    }
                    state.failures = 0;
                    state.attached = Some(attached);
                }
                Err(error) => {
                    state.failures = state.failures.saturating_add(1);
                    tracing::warn!(queue = %state.queue, %error, "cannot consume; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff(state.failures)) => {}
                        () = state.broker.closed() => return None,
                    }
                    continue;
                }
            }
        }
        let consumer = state.attached.as_mut()?.consumer.as_mut()?;
        let next = consumer.next().await;
        if state.broker.is_closed() {
            return None;
        }
        match next {
            Some(Ok(delivery)) => return Some((delivery, state)),
            Some(Err(error)) => {
                tracing::warn!(queue = %state.queue, %error, "consumer lost; consuming again once connected");
            }
            None => {
                tracing::warn!(queue = %state.queue, "the broker cancelled the consumer; consuming again");
            }
        }
        state.attached = None;
        // A pause, so a queue that cancels every consumer at once cannot make this spin.
        tokio::select! {
            () = tokio::time::sleep(backoff(1)) => {}
            () = state.broker.closed() => return None,
        }
    }
}

async fn attach(state: &Attachment) -> Result<OwnedChannel, BrokerError> {
    let (_, owned) = state.broker.owned_channel().await?;
    owned
        .channel
        .basic_qos(state.prefetch, BasicQosOptions::default())
        .await
        .map_err(amqp("basic.qos"))?;
    let consumer = owned
        .channel
        .basic_consume(
            state.queue.as_str().into(),
            state.consumer_tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(amqp("basic.consume"))?;
    Ok(owned.with_consumer(consumer))
}
