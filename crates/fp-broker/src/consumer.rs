//! Consumers that outlive their connection: a lost channel or connection is consumed again as soon
//! as the supervisor has a new one. Deliveries of the lost channel were not acked, so the broker
//! hands them out again (with `redelivered` set).

use std::pin::Pin;
use std::sync::{Mutex, PoisonError};

use futures_util::{Stream, StreamExt};
use lapin::Channel;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};

use crate::connection::{Broker, backoff};
use crate::owned_channel::OwnedChannel;
use crate::settlement::{ChannelWindow, ConnectionEnded, Inbound};
use crate::{BrokerError, Delivery, amqp};

/// The deliveries of one queue, across reconnects. Ends only when the broker is closed.
pub type Deliveries = Pin<Box<dyn Stream<Item = Delivery> + Send>>;

/// The deliveries of one queue with their settlements (acks coalesced per channel), across
/// reconnects. Ends only when the broker is closed.
pub type SettledDeliveries = Pin<Box<dyn Stream<Item = Inbound> + Send>>;

/// What a consumer hands out for each delivery, and what it keeps per channel to do so.
pub(crate) trait HandOut: Send + Sync + 'static {
    type PerChannel: Send + Sync;
    type Item: Send;
    /// What the deliveries of a channel just consumed from share; `connection_ended` resolves
    /// once that channel's connection is gone.
    fn attached(&self, connection_ended: ConnectionEnded) -> Self::PerChannel;
    fn hand_out(per_channel: &Self::PerChannel, delivery: Delivery) -> Self::Item;
}

/// The delivery alone; its receiver acks it itself.
pub(crate) struct Plain;

impl HandOut for Plain {
    type PerChannel = ();
    type Item = Delivery;
    fn attached(&self, _: ConnectionEnded) {}
    fn hand_out((): &(), delivery: Delivery) -> Delivery {
        delivery
    }
}

/// The delivery with its settlement through the channel's ack window.
pub(crate) struct Windowed;

impl HandOut for Windowed {
    type PerChannel = ChannelWindow;
    type Item = Inbound;
    fn attached(&self, connection_ended: ConnectionEnded) -> ChannelWindow {
        ChannelWindow::open(connection_ended)
    }
    fn hand_out(window: &ChannelWindow, delivery: Delivery) -> Inbound {
        window.hand_out(delivery)
    }
}

/// The consumers of a broker's connections, so that a stopping service can cancel them all at
/// once while their channels stay open to settle what they handed out.
#[derive(Default)]
pub(crate) struct Consumers {
    state: Mutex<ConsumersState>,
}

#[derive(Default)]
struct ConsumersState {
    stopped: bool,
    /// Each consuming channel with its consumer's tag; those of closed channels are pruned as
    /// new ones come.
    consuming: Vec<(Channel, ShortString)>,
}

impl Consumers {
    /// Records a consumer just started; false once consuming has stopped (the caller then drops
    /// its channel).
    fn register(&self, channel: &Channel, tag: ShortString) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.stopped {
            return false;
        }
        state
            .consuming
            .retain(|(channel, _)| channel.status().connected());
        state.consuming.push((channel.clone(), tag));
        true
    }

    fn stopped(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stopped
    }

    /// Stops consuming: no consumer starts from now on, and every live one is cancelled.
    pub(crate) async fn stop(&self) {
        let consuming = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.stopped = true;
            std::mem::take(&mut state.consuming)
        };
        let cancels = consuming
            .into_iter()
            .filter(|(channel, _)| channel.status().connected())
            .map(|(channel, tag)| async move {
                if let Err(error) = channel
                    .basic_cancel(tag, BasicCancelOptions::default())
                    .await
                {
                    // Its channel is going: the broker sends it nothing more either way.
                    tracing::debug!(%error, "could not cancel a consumer");
                }
            });
        futures_util::future::join_all(cancels).await;
    }
}

struct Attachment<H: HandOut> {
    broker: Broker,
    queue: String,
    consumer_tag: String,
    prefetch: u16,
    /// The channel consuming now; dropping it cancels the consumer and closes the channel.
    attached: Option<(OwnedChannel, H::PerChannel)>,
    failures: u32,
    hand_out: H,
}

pub(crate) fn consume<H: HandOut>(
    broker: Broker,
    queue: &str,
    consumer_tag: &str,
    prefetch: u16,
    hand_out: H,
) -> Pin<Box<dyn Stream<Item = H::Item> + Send>> {
    let attachment = Attachment::<H> {
        broker,
        queue: queue.to_owned(),
        consumer_tag: consumer_tag.to_owned(),
        prefetch,
        attached: None,
        failures: 0,
        hand_out,
    };
    Box::pin(futures_util::stream::unfold(attachment, next_delivery))
}

async fn next_delivery<H: HandOut>(mut state: Attachment<H>) -> Option<(H::Item, Attachment<H>)> {
    loop {
        if state.broker.consumers().stopped() {
            // Consuming stopped: nothing more comes, but the channel stays open to settle what it
            // handed out, until the broker closes.
            state.broker.closed().await;
            return None;
        }
        if state.attached.is_none() {
            state.broker.session_when_up().await?;
            match attach(&state).await {
                Ok((generation, attached)) => {
                    if state.failures > 0 {
                        tracing::info!(queue = %state.queue, "consuming again");
                    }
                    state.failures = 0;
                    let connection_ended = Box::pin(state.broker.connection_ended(generation));
                    state.attached = Some((attached, state.hand_out.attached(connection_ended)));
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
        let (channel, per_channel) = state.attached.as_mut()?;
        let next = channel.consumer.as_mut()?.next().await;
        if state.broker.is_closed() {
            return None;
        }
        match next {
            Some(Ok(delivery)) => {
                let item = H::hand_out(per_channel, delivery);
                return Some((item, state));
            }
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

/// A consuming channel, and the generation of the connection it is on.
async fn attach<H: HandOut>(state: &Attachment<H>) -> Result<(u64, OwnedChannel), BrokerError> {
    let (generation, owned) = state.broker.owned_channel().await?;
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
    let tag = consumer.tag();
    let owned = owned.with_consumer(consumer);
    if !state.broker.consumers().register(&owned.channel, tag) {
        return Err(BrokerError::Unavailable {
            reason: "consuming has stopped".to_owned(),
        });
    }
    Ok((generation, owned))
}
