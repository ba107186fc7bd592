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
    next_id: u64,
    /// Each consuming channel, from before its `basic.consume` is sent (the broker may start
    /// sending as soon as it takes it, whether or not anyone still waits for its answer); those
    /// of closed channels are pruned as new ones come.
    consuming: Vec<Consuming>,
}

struct Consuming {
    id: u64,
    channel: Channel,
    /// Once the broker confirmed the consume.
    tag: Option<ShortString>,
}

/// What [`Consumers::stop`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoppedConsumers {
    /// Consumers cancelled, or closed with their channel before their consume was confirmed.
    pub cancelled: usize,
    /// Cancels or closes that failed; their channels are going anyway.
    pub failed: usize,
}

impl Consumers {
    fn lock(&self) -> std::sync::MutexGuard<'_, ConsumersState> {
        // Every change is one assignment or push: a panic leaves nothing half-changed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `channel` as about to consume; `None` once consuming has stopped.
    fn starting(&self, channel: &Channel) -> Option<u64> {
        let mut state = self.lock();
        if state.stopped {
            return None;
        }
        state
            .consuming
            .retain(|consuming| consuming.channel.status().connected());
        let id = state.next_id;
        state.next_id += 1;
        state.consuming.push(Consuming {
            id,
            channel: channel.clone(),
            tag: None,
        });
        Some(id)
    }

    /// Records the tag of `id`'s consume, which the broker confirmed; false once consuming has
    /// stopped (its channel was closed, or the caller drops it).
    fn confirm(&self, id: u64, tag: ShortString) -> bool {
        let mut state = self.lock();
        if state.stopped {
            return false;
        }
        if let Some(consuming) = state.consuming.iter_mut().find(|entry| entry.id == id) {
            consuming.tag = Some(tag);
        }
        true
    }

    fn stopped(&self) -> bool {
        self.lock().stopped
    }

    /// Stops consuming: no consumer starts from now on, every confirmed one is cancelled and
    /// every channel whose consume is not confirmed yet is closed (it has handed nothing out).
    pub(crate) async fn stop(&self) -> StoppedConsumers {
        let consuming = {
            let mut state = self.lock();
            state.stopped = true;
            std::mem::take(&mut state.consuming)
        };
        let stops = consuming
            .into_iter()
            .filter(|consuming| consuming.channel.status().connected())
            .map(|Consuming { channel, tag, .. }| async move {
                let stopped = match tag {
                    Some(tag) => channel
                        .basic_cancel(tag, BasicCancelOptions::default())
                        .await
                        .map_err(amqp("basic.cancel")),
                    None => channel
                        .close(200, "consuming stopped".into())
                        .await
                        .map_err(amqp("channel.close")),
                };
                if let Err(error) = &stopped {
                    tracing::debug!(%error, "could not stop a consumer");
                }
                stopped.is_ok()
            });
        let outcomes = futures_util::future::join_all(stops).await;
        let cancelled = outcomes.iter().filter(|cancelled| **cancelled).count();
        StoppedConsumers {
            cancelled,
            failed: outcomes.len() - cancelled,
        }
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

async fn next_delivery<H: HandOut>(state: Attachment<H>) -> Option<(H::Item, Attachment<H>)> {
    let state = match next_or_stopped(state).await {
        Ok(next) => return next,
        Err(stopped) => stopped,
    };
    // Consuming stopped: nothing more comes, but the channel stays open to settle what it handed
    // out, until the broker closes.
    state.broker.closed().await;
    None
}

/// The next delivery, or the stream's end; `Err` once consuming has stopped.
async fn next_or_stopped<H: HandOut>(
    mut state: Attachment<H>,
) -> Result<Option<(H::Item, Attachment<H>)>, Attachment<H>> {
    loop {
        if state.broker.consumers().stopped() {
            return Err(state);
        }
        if state.attached.is_none() {
            if state.broker.session_when_up().await.is_none() {
                return Ok(None);
            }
            match attach(&state).await {
                Ok((generation, attached)) => {
                    if state.failures > 0 {
                        tracing::info!(queue = %state.queue, "consuming again");
                    }
                    state.failures = 0;
                    let connection_ended = Box::pin(state.broker.connection_ended(generation));
                    state.attached = Some((attached, state.hand_out.attached(connection_ended)));
                }
                // Refused, or its channel closed, because consuming stopped.
                Err(_) if state.broker.consumers().stopped() => return Err(state),
                Err(error) => {
                    state.failures = state.failures.saturating_add(1);
                    tracing::warn!(queue = %state.queue, %error, "cannot consume; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff(state.failures)) => {}
                        () = state.broker.closed() => return Ok(None),
                    }
                    continue;
                }
            }
        }
        let Some((channel, per_channel)) = state.attached.as_mut() else {
            return Ok(None);
        };
        let Some(consumer) = channel.consumer.as_mut() else {
            return Ok(None);
        };
        let next = consumer.next().await;
        if state.broker.is_closed() {
            return Ok(None);
        }
        match next {
            Some(Ok(delivery)) => {
                let item = H::hand_out(per_channel, delivery);
                return Ok(Some((item, state)));
            }
            // Its cancel ended the consumer: the channel is kept, to settle what it handed out.
            _ if state.broker.consumers().stopped() => return Err(state),
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
            () = state.broker.closed() => return Ok(None),
        }
    }
}

/// A consuming channel, and the generation of the connection it is on.
async fn attach<H: HandOut>(state: &Attachment<H>) -> Result<(u64, OwnedChannel), BrokerError> {
    let (generation, owned) = state.broker.owned_channel().await?;
    let stopped = || BrokerError::Unavailable {
        reason: "consuming has stopped".to_owned(),
    };
    let registered = state.broker.consumers().starting(&owned.channel);
    let registered = registered.ok_or_else(stopped)?;
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
    if !state.broker.consumers().confirm(registered, tag) {
        return Err(stopped());
    }
    Ok((generation, owned))
}
