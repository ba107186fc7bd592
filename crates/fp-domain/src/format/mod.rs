//! Endpoint formats: Slack and Discord endpoints get a message people can read, every other endpoint
//! the product page's raw JSON.
//!
//! The format is chosen from the parsed URL, never from a substring, so a look-alike such as
//! `https://hooks.slack.com.evil.example/services/x` stays a custom endpoint. Tenant text is escaped
//! for the target service, and every size limit of that service holds for any input: long text is
//! shortened with `…` rather than refused, because a refused message is a lost notification.

mod discord;
mod endpoint;
mod message;
mod slack;
mod text;

#[cfg(test)]
mod fixtures;

use crate::event::Event;
use crate::payload::custom_json_body;
use message::Message;

pub use endpoint::{delivery_url, detect, detect_text, takes_body_made_for};

/// The body shape an endpoint expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointFormat {
    /// The product page's JSON, byte for byte what is signed.
    Custom,
    /// Slack incoming webhook: Block Kit message.
    Slack,
    /// Discord webhook: one embed.
    Discord,
}

impl EndpointFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointFormat::Custom => "custom",
            EndpointFormat::Slack => "slack",
            EndpointFormat::Discord => "discord",
        }
    }
}

/// The request body for `event` in `format`.
pub fn render_body(event: &Event, format: EndpointFormat) -> Vec<u8> {
    let body = match (format, Message::new(event)) {
        (EndpointFormat::Custom, _) => return custom_json_body(event),
        (EndpointFormat::Slack, Some(message)) => slack::message(&message),
        (EndpointFormat::Discord, Some(message)) => discord::message(&message),
        // No submission: the event is a `webhook.test`.
        (EndpointFormat::Slack, None) => slack::test_message(event.occurred_at),
        (EndpointFormat::Discord, None) => discord::test_message(event.occurred_at),
    };
    // Serialising a `serde_json::Value` cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

/// A stored body of a submission event in `format`, rewritten with
/// [`crate::erasure::ERASED`] in place of the customer's name and words; `None` when it is not
/// laid out as this crate renders that format (the caller then clears it whole).
pub(crate) fn erased_body(body: &[u8], format: EndpointFormat) -> Option<Vec<u8>> {
    let mut body: serde_json::Value = serde_json::from_slice(body).ok()?;
    let erased = match format {
        EndpointFormat::Custom => crate::payload::erase_custom_body(&mut body),
        EndpointFormat::Slack => slack::erase(&mut body),
        EndpointFormat::Discord => discord::erase(&mut body),
    };
    erased.then(|| serde_json::to_vec(&body).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::fixtures::{adversarial_events, jane_approved, jane_created, webhook_test};

    #[test]
    fn custom_format_is_the_custom_json_body_byte_for_byte() {
        let mut events = vec![jane_created(), jane_approved(), webhook_test()];
        events.extend(adversarial_events().into_iter().take(8));
        for event in &events {
            assert_eq!(
                render_body(event, EndpointFormat::Custom),
                custom_json_body(event)
            );
        }
    }

    #[test]
    fn format_names() {
        assert_eq!(EndpointFormat::Custom.as_str(), "custom");
        assert_eq!(EndpointFormat::Slack.as_str(), "slack");
        assert_eq!(EndpointFormat::Discord.as_str(), "discord");
    }
}
