//! Publishes FeedbackPulse events to the broker as `docs/publishing-events.md` says: the
//! contract's messages (`fp_contracts::EventMessage`), persistent, `mandatory`, with publisher
//! confirms. [`Publisher::publish`] returns only once the broker has the event; while the
//! connection is lost it reconnects with backoff and publishes again (the dispatcher deduplicates
//! by event id, so a publish repeated after a lost confirm is harmless).
//!
//! ```no_run
//! # async fn example() -> Result<(), fp_publisher::PublishError> {
//! use fp_publisher::{EventBuilder, Publisher, PublisherOptions, Submission, SubmissionStatus};
//! use secrecy::SecretString;
//!
//! let url = SecretString::from("amqp://survey:password@rabbitmq:5672/%2f");
//! let publisher = Publisher::connect(url, PublisherOptions::default()).await?;
//! let tenant_id = uuid::Uuid::parse_str("0190c2d4-0000-7000-8000-000000000001").expect("uuid");
//! let event = EventBuilder::submission_created(
//!     tenant_id,
//!     Submission {
//!         id: 42,
//!         campaign_id: 7,
//!         star_rating: 5,
//!         text_feedback: "Great service".into(),
//!         customer_name: None,
//!         status: SubmissionStatus::Pending,
//!     },
//! )
//! .build();
//! publisher.publish(&event).await?;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;
use tokio::time::Instant;
use uuid::Uuid;

pub use fp_contracts::{Change, Event, EventMessage, EventType, Submission, SubmissionStatus};

/// The W3C trace context header the dispatcher continues.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// How a [`Publisher`] reaches the broker and how long it keeps trying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherOptions {
    /// The events exchange: `fp.events`, or `<namespace>.events` for another namespace.
    pub exchange: String,
    /// Longest wait for one connection to open.
    pub connect_timeout: Duration,
    /// Longest wait for the broker's confirm of one publish; past it the connection is given up
    /// and the event published again on a new one.
    pub confirm_timeout: Duration,
    /// How long one `publish` keeps trying through lost connections before it returns the
    /// last error.
    pub patience: Duration,
    /// The first pause between tries; it doubles up to `max_backoff`, each with jitter.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for PublisherOptions {
    fn default() -> Self {
        PublisherOptions {
            exchange: EventMessage::EXCHANGE.to_owned(),
            connect_timeout: Duration::from_secs(10),
            confirm_timeout: Duration::from_secs(30),
            patience: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the AMQP URL is not valid: {reason}")]
    InvalidUrl { reason: String },
    #[error("could not connect to RabbitMQ at {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("the connection to RabbitMQ was lost during `{operation}`: {source}")]
    ConnectionLost {
        operation: &'static str,
        source: lapin::Error,
    },
    #[error("RabbitMQ sent no confirm within {0:?}")]
    ConfirmTimeout(Duration),
    #[error("RabbitMQ refused the message (nack)")]
    Nacked,
    #[error("RabbitMQ refused `{operation}`: {source}")]
    Refused {
        operation: &'static str,
        source: lapin::Error,
    },
    #[error(
        "no queue is bound for `{exchange}` / `{routing_key}`: the exchange is not FeedbackPulse's, \
         or its topology is not declared yet"
    )]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
}

impl PublishError {
    /// Whether the same publish may succeed on another connection; a refusal by the broker
    /// (unroutable, access refused, no such exchange) cannot.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            PublishError::Connect { .. }
                | PublishError::ConnectionLost { .. }
                | PublishError::ConfirmTimeout(_)
                | PublishError::Nacked
        )
    }
}

/// What a lapin failure means here: a channel-level refusal stays one, anything else lost the
/// connection.
fn lapin_failure(operation: &'static str) -> impl FnOnce(lapin::Error) -> PublishError {
    move |source| {
        if source.is_amqp_soft_error() {
            PublishError::Refused { operation, source }
        } else {
            PublishError::ConnectionLost { operation, source }
        }
    }
}

/// Builds the contract's message of one event. The event id defaults to a new UUIDv7 and the
/// time to now; a publisher that retries on its own side must keep the id it first used, so the
/// event is deduplicated, not delivered twice.
#[derive(Debug, Clone)]
pub struct EventBuilder {
    event_id: Uuid,
    tenant_id: Uuid,
    occurred_at: DateTime<Utc>,
    change: Change,
}

impl EventBuilder {
    /// `submission.created`.
    pub fn submission_created(tenant_id: Uuid, submission: Submission) -> Self {
        Self::new(tenant_id, Change::SubmissionCreated { submission })
    }

    /// `submission.status_changed`.
    pub fn submission_status_changed(
        tenant_id: Uuid,
        submission: Submission,
        previous_status: SubmissionStatus,
    ) -> Self {
        Self::new(
            tenant_id,
            Change::SubmissionStatusChanged {
                submission,
                previous_status,
            },
        )
    }

    fn new(tenant_id: Uuid, change: Change) -> Self {
        EventBuilder {
            event_id: Uuid::now_v7(),
            tenant_id,
            occurred_at: Utc::now(),
            change,
        }
    }

    pub fn event_id(mut self, event_id: Uuid) -> Self {
        self.event_id = event_id;
        self
    }

    pub fn occurred_at(mut self, occurred_at: DateTime<Utc>) -> Self {
        self.occurred_at = occurred_at;
        self
    }

    pub fn event(&self) -> Event {
        Event {
            id: self.event_id,
            tenant_id: self.tenant_id,
            occurred_at: self.occurred_at,
            change: self.change.clone(),
        }
    }

    pub fn build(&self) -> EventMessage {
        EventMessage::of_event(&self.event())
    }
}

/// A connection and its confirm-mode channel.
struct Session {
    connection: Connection,
    channel: Channel,
}

impl Session {
    fn is_open(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }
}

/// A publisher of events, with one connection and one confirm-mode channel that it opens again
/// when they are lost. Declares nothing: the exchange and its queues are FeedbackPulse's.
pub struct Publisher {
    url: SecretString,
    /// Host, port and virtual host: what errors and `Debug` may show of the URL.
    address: String,
    options: PublisherOptions,
    /// One publish at a time on the channel, so a confirm always belongs to its publish.
    session: Mutex<Option<Session>>,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("address", &self.address)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// Checks the URL and opens the first connection, so a wrong URL or password shows at once.
    pub async fn connect(
        url: SecretString,
        options: PublisherOptions,
    ) -> Result<Self, PublishError> {
        let uri: AMQPUri = url
            .expose_secret()
            .parse()
            // lapin's reason names the part it could not read, never the password.
            .map_err(|reason: String| PublishError::InvalidUrl { reason })?;
        let address = format!(
            "{}:{} (vhost `{}`)",
            uri.authority.host, uri.authority.port, uri.vhost
        );
        let publisher = Publisher {
            url,
            address,
            options,
            session: Mutex::new(None),
        };
        *publisher.session.lock().await = Some(publisher.open().await?);
        Ok(publisher)
    }

    /// Publishes the event and returns once the broker has confirmed it. Through a lost
    /// connection it publishes again, with backoff, for up to `options.patience`.
    pub async fn publish(&self, message: &EventMessage) -> Result<(), PublishError> {
        self.publish_in_trace(message, None).await
    }

    /// `publish`, carrying the W3C `traceparent` of the caller's span, so the dispatcher's spans
    /// join the caller's trace.
    pub async fn publish_in_trace(
        &self,
        message: &EventMessage,
        traceparent: Option<&str>,
    ) -> Result<(), PublishError> {
        let deadline = Instant::now() + self.options.patience;
        let mut backoff = self.options.initial_backoff;
        let mut session = self.session.lock().await;
        loop {
            let outcome = self.publish_once(&mut session, message, traceparent).await;
            match outcome {
                Err(error) if error.is_transient() && Instant::now() + backoff < deadline => {
                    tracing::debug!(%error, event_id = %message.message_id, "publishing again");
                    // A fresh connection for the next try: the old one may be half-dead.
                    if let Some(lost) = session.take() {
                        // Closing a connection already lost fails; there is nothing to do about it.
                        let _ = lost.connection.close(200, "reconnecting".into()).await;
                    }
                    tokio::time::sleep(with_jitter(backoff)).await;
                    backoff = (backoff * 2).min(self.options.max_backoff);
                }
                outcome => return outcome,
            }
        }
    }

    /// Closes the connection; an event not yet confirmed is not published.
    pub async fn close(&self) -> Result<(), PublishError> {
        if let Some(session) = self.session.lock().await.take() {
            session
                .connection
                .close(200, "publisher closed".into())
                .await
                .map_err(lapin_failure("connection.close"))?;
        }
        Ok(())
    }

    async fn publish_once(
        &self,
        session: &mut Option<Session>,
        message: &EventMessage,
        traceparent: Option<&str>,
    ) -> Result<(), PublishError> {
        let channel = match session.as_ref() {
            Some(open) if open.is_open() => open.channel.clone(),
            _ => {
                let opened = self.open().await?;
                let channel = opened.channel.clone();
                *session = Some(opened);
                channel
            }
        };
        let mut headers = FieldTable::default();
        if let Some(traceparent) = traceparent {
            headers.insert(
                TRACEPARENT_HEADER.into(),
                AMQPValue::LongString(traceparent.into()),
            );
        }
        let properties = BasicProperties::default()
            .with_delivery_mode(EventMessage::DELIVERY_MODE)
            .with_content_type(EventMessage::CONTENT_TYPE.into())
            .with_type(EventMessage::MESSAGE_TYPE.into())
            .with_message_id(message.message_id.as_str().into())
            .with_headers(headers);
        let confirm = channel
            .basic_publish(
                self.options.exchange.as_str().into(),
                message.routing_key.as_str().into(),
                // Mandatory: an event no queue takes comes back instead of vanishing.
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &message.body,
                properties,
            )
            .await
            .map_err(lapin_failure("basic.publish"))?;
        let confirmation = tokio::time::timeout(self.options.confirm_timeout, confirm)
            .await
            .map_err(|_| PublishError::ConfirmTimeout(self.options.confirm_timeout))?
            .map_err(lapin_failure("basic.publish confirm"))?;
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            // The broker acks a mandatory message it returned: no queue has it.
            Confirmation::Ack(Some(_)) => Err(PublishError::Unroutable {
                exchange: self.options.exchange.clone(),
                routing_key: message.routing_key.clone(),
            }),
            Confirmation::Nack(_) => Err(PublishError::Nacked),
            // Never on a channel in confirm mode; treated as a lost confirm, so it is sent again.
            Confirmation::NotRequested => Err(PublishError::ConfirmTimeout(Duration::ZERO)),
        }
    }

    async fn open(&self) -> Result<Session, PublishError> {
        let connect_error = |reason: String| PublishError::Connect {
            address: self.address.clone(),
            reason,
        };
        let connection = tokio::time::timeout(
            self.options.connect_timeout,
            Connection::connect(self.url.expose_secret(), ConnectionProperties::default()),
        )
        .await
        .map_err(|_| {
            connect_error(format!(
                "no answer within {:?}",
                self.options.connect_timeout
            ))
        })?
        .map_err(|error| connect_error(error.to_string()))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(lapin_failure("channel.open"))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(lapin_failure("confirm.select"))?;
        Ok(Session {
            connection,
            channel,
        })
    }
}

/// A pause between half and all of `backoff`, so publishers that lost the same broker do not
/// all come back in the same instant.
fn with_jitter(backoff: Duration) -> Duration {
    backoff.mul_f64(rand::random_range(0.5..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_password_shows_neither_in_errors_nor_in_debug() {
        let options = PublisherOptions {
            connect_timeout: Duration::from_millis(500),
            ..PublisherOptions::default()
        };
        // Port 1 on loopback: nothing listens there.
        let error = Publisher::connect(
            SecretString::from("amqp://survey:hunter2-secret@127.0.0.1:1/%2f"),
            options,
        )
        .await
        .expect_err("nothing listens");
        let text = format!("{error} {error:?}");
        assert!(!text.contains("hunter2-secret"), "{text}");
        assert!(text.contains("127.0.0.1:1"), "{text}");
        assert!(error.is_transient());
    }

    #[tokio::test]
    async fn a_malformed_url_is_refused_without_a_connection() {
        let error = Publisher::connect(
            SecretString::from("http://survey:hunter2-secret@host"),
            PublisherOptions::default(),
        )
        .await
        .expect_err("not amqp");
        assert!(matches!(error, PublishError::InvalidUrl { .. }), "{error}");
        assert!(!format!("{error} {error:?}").contains("hunter2-secret"));
    }

    #[test]
    fn built_events_are_the_contracts_messages() {
        let tenant_id = Uuid::now_v7();
        let event_id = Uuid::now_v7();
        let submission = Submission {
            id: 3,
            campaign_id: 9,
            star_rating: 2,
            text_feedback: "slow".into(),
            customer_name: Some("Ada".into()),
            status: SubmissionStatus::Approved,
        };
        let builder = EventBuilder::submission_status_changed(
            tenant_id,
            submission,
            SubmissionStatus::Pending,
        )
        .event_id(event_id);
        let message = builder.build();
        assert_eq!(message.routing_key, "submission.status_changed");
        assert_eq!(message.message_id, event_id.to_string());
        let decoded = fp_contracts::decode_event(&message.body).expect("decodes");
        assert_eq!(decoded, builder.event());
        assert_eq!(decoded.tenant_id, tenant_id);
    }

    #[test]
    fn backoff_jitter_stays_within_the_pause() {
        for _ in 0..100 {
            let pause = with_jitter(Duration::from_secs(2));
            assert!(pause >= Duration::from_secs(1) && pause <= Duration::from_secs(2));
        }
    }
}
