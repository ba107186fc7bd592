//! Channels this crate closes itself. When the last handle of a lapin channel or consumer is dropped,
//! lapin cancels or closes it in a background future, and if the connection closes first that
//! future fails and lapin marks the whole connection as failed with an ERROR log: every clean
//! shutdown that dropped a consumer just before closing looked like a broker failure. Here a dropped
//! channel is closed by a task the broker tracks, and `Broker::close` waits for those tasks before it
//! closes the connection.

use lapin::options::BasicCancelOptions;
use lapin::{Channel, Consumer};
use tokio_util::task::TaskTracker;

/// A channel, with the consumer on it if any, cancelled and closed in order when dropped.
pub(crate) struct OwnedChannel {
    pub(crate) channel: Channel,
    pub(crate) consumer: Option<Consumer>,
    closing: TaskTracker,
}

impl OwnedChannel {
    pub(crate) fn new(channel: Channel, closing: TaskTracker) -> Self {
        OwnedChannel {
            channel,
            consumer: None,
            closing,
        }
    }

    pub(crate) fn with_consumer(mut self, consumer: Consumer) -> Self {
        self.consumer = Some(consumer);
        self
    }
}

impl Drop for OwnedChannel {
    fn drop(&mut self) {
        // A channel of a lost connection has nothing to close, and lapin leaves it alone too.
        if !self.channel.status().connected() {
            return;
        }
        // Without a runtime (the process is ending) there is nothing to close it on.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let channel = self.channel.clone();
        let consumer = self.consumer.take();
        // The clones move into the task, so lapin's own drop handling runs only after the close,
        // when there is nothing left for it to do.
        self.closing.spawn_on(
            async move {
                if let Some(consumer) = &consumer {
                    channel
                        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                        .await
                        .ok();
                }
                // Unacknowledged deliveries go back to their queue with the channel.
                channel.close(200, "closed by its owner".into()).await.ok();
                drop(consumer);
            },
            &runtime,
        );
    }
}
