//! A classic queue in a namespace of its own, for tests of the broker adapter's consumers: no
//! delivery limit (a message can come back any number of times), and a ready count that is exact
//! as soon as a consumer's connection is closed.

use fp_broker::{Broker, OutgoingMessage, Publisher};
use lapin::Channel;
use lapin::options::QueueDeclareOptions;

use crate::environment::broker_url;

pub struct ScratchQueue {
    pub namespace: String,
    pub name: String,
    /// A connection of the test's own, which declared the queue.
    pub admin: Broker,
    channel: Channel,
}

impl ScratchQueue {
    /// Declares `<fresh namespace>.<suffix>`; the namespace starts with `prefix`.
    pub async fn declare(prefix: &str, suffix: &str) -> anyhow::Result<Self> {
        let namespace = format!("{prefix}{}", uuid::Uuid::new_v4().simple());
        let admin = Broker::connect(&broker_url(), &namespace).await?;
        let name = format!("{namespace}.{suffix}");
        let channel = admin.channel().await?;
        channel
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions::default(),
                Default::default(),
            )
            .await?;
        Ok(ScratchQueue {
            namespace,
            name,
            admin,
            channel,
        })
    }

    /// Publishes `text` as a message's id and body, through `publisher` (confirmed).
    pub async fn publish(&self, publisher: &Publisher, text: &str) -> anyhow::Result<()> {
        publisher
            .publish(&OutgoingMessage {
                // The default exchange routes by queue name.
                exchange: "",
                routing_key: &self.name,
                message_id: text,
                parent: None,
                payload: text.as_bytes(),
                headers: &[],
                expiration: None,
            })
            .await?;
        Ok(())
    }

    /// Messages ready in the queue now.
    pub async fn ready(&self) -> anyhow::Result<usize> {
        let declared = self
            .channel
            .queue_declare(
                self.name.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await?;
        Ok(usize::try_from(declared.message_count())?)
    }

    /// Deletes the queue and closes the test's connection.
    pub async fn delete(self) -> anyhow::Result<()> {
        self.channel
            .queue_delete(self.name.as_str().into(), Default::default())
            .await?;
        self.admin.close().await;
        Ok(())
    }
}
