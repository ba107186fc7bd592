//! Event types, the events themselves, and the identity of one delivery.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::submission::{Submission, SubmissionStatus};

/// The kinds of event FeedbackPulse emits, by their public names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "submission.created")]
    SubmissionCreated,
    #[serde(rename = "submission.status_changed")]
    SubmissionStatusChanged,
    /// Sent only when a tenant asks for it (`POST /api/v2/webhooks/test`), never by subscription.
    #[serde(rename = "webhook.test")]
    WebhookTest,
}

impl EventType {
    pub const ALL: [EventType; 3] = [
        EventType::SubmissionCreated,
        EventType::SubmissionStatusChanged,
        EventType::WebhookTest,
    ];

    /// The types a webhook config can list in `events`.
    pub const SUBSCRIBABLE: [EventType; 2] = [
        EventType::SubmissionCreated,
        EventType::SubmissionStatusChanged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::SubmissionCreated => "submission.created",
            EventType::SubmissionStatusChanged => "submission.status_changed",
            EventType::WebhookTest => "webhook.test",
        }
    }

    /// What an event of this type announces, for the event catalogue.
    pub fn description(self) -> &'static str {
        match self {
            EventType::SubmissionCreated => "A customer submitted feedback.",
            EventType::SubmissionStatusChanged => {
                "A submission's status changed; `previous_status` is the status it had before."
            }
            EventType::WebhookTest => {
                "A test delivery: sent only when asked for (POST /api/v2/webhooks/test), whatever \
                 the endpoint subscribes to."
            }
        }
    }

    /// This type, if a webhook config may subscribe to it.
    pub fn subscribable(self) -> Result<Self, NotSubscribable> {
        if Self::SUBSCRIBABLE.contains(&self) {
            Ok(self)
        } else {
            Err(NotSubscribable(self))
        }
    }
}

/// The subscribable names, for error messages: "submission.created, submission.status_changed".
fn subscribable_names() -> String {
    EventType::SUBSCRIBABLE.map(EventType::as_str).join(", ")
}

/// Every name, for error messages, each type that cannot be subscribed to marked as such:
/// "submission.created, submission.status_changed, webhook.test (sent only on request)".
fn known_names() -> String {
    EventType::ALL
        .map(|event| match event.subscribable() {
            Ok(_) => event.as_str().to_owned(),
            Err(_) => format!("{event} (sent only on request)"),
        })
        .join(", ")
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type `{0}`; known: {known}", known = known_names())]
pub struct UnknownEventType(pub String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` cannot be subscribed to: it is sent only on request, through POST /api/v2/webhooks/test \
     (subscribable: {known})",
    known = subscribable_names()
)]
pub struct NotSubscribable(pub EventType);

impl FromStr for EventType {
    type Err = UnknownEventType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|event| event.as_str() == s)
            .ok_or_else(|| UnknownEventType(s.to_owned()))
    }
}

/// Something that happened in a tenant's account, as every service sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// UUIDv7, so ids sort by creation time.
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub change: Change,
}

/// What happened, with the data each kind of event carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    SubmissionCreated {
        submission: Submission,
    },
    SubmissionStatusChanged {
        submission: Submission,
        previous_status: SubmissionStatus,
    },
    /// A tenant asked for a test delivery; it carries no data of the account.
    WebhookTest,
}

impl Event {
    pub fn event_type(&self) -> EventType {
        match self.change {
            Change::SubmissionCreated { .. } => EventType::SubmissionCreated,
            Change::SubmissionStatusChanged { .. } => EventType::SubmissionStatusChanged,
            Change::WebhookTest => EventType::WebhookTest,
        }
    }

    /// The submission the event is about; `None` for a test event.
    pub fn submission_id(&self) -> Option<i64> {
        match &self.change {
            Change::SubmissionCreated { submission }
            | Change::SubmissionStatusChanged { submission, .. } => Some(submission.id),
            Change::WebhookTest => None,
        }
    }
}

/// The id a receiver deduplicates on: one per event and endpoint, the same on every retry.
///
/// It is derived rather than stored so that a dispatcher which crashes after sending but before
/// acknowledging sends the same id again when the event is redelivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeliveryId(pub Uuid);

impl DeliveryId {
    /// Namespace for the UUIDv5 derivation; fixed forever, or ids would change under receivers.
    const NAMESPACE: Uuid = Uuid::from_u128(0x6f1d_2c1e_9a4b_4c5d_8e7f_0a1b_2c3d_4e5f);

    pub fn for_event_and_endpoint(event_id: Uuid, endpoint_url: &str) -> Self {
        let mut name = Vec::with_capacity(16 + endpoint_url.len());
        name.extend_from_slice(event_id.as_bytes());
        name.extend_from_slice(endpoint_url.as_bytes());
        DeliveryId(Uuid::new_v5(&Self::NAMESPACE, &name))
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_round_trip() {
        for event in EventType::ALL {
            assert_eq!(event.as_str().parse::<EventType>(), Ok(event));
        }
        assert_eq!(
            "submission.deleted".parse::<EventType>(),
            Err(UnknownEventType("submission.deleted".into()))
        );
    }

    #[test]
    fn webhook_test_is_known_but_not_subscribable() {
        assert_eq!(
            "webhook.test".parse::<EventType>(),
            Ok(EventType::WebhookTest)
        );
        for event in EventType::SUBSCRIBABLE {
            assert_eq!(event.subscribable(), Ok(event));
        }
        let refused = EventType::WebhookTest
            .subscribable()
            .expect_err("not subscribable")
            .to_string();
        assert!(
            refused.contains("webhook.test") && refused.contains("POST /api/v2/webhooks/test"),
            "{refused}"
        );
        let unknown = UnknownEventType("x".into()).to_string();
        assert_eq!(
            unknown,
            "unknown event type `x`; known: submission.created, submission.status_changed, \
             webhook.test (sent only on request)"
        );
    }

    #[test]
    fn delivery_id_is_stable_per_event_and_endpoint() {
        let event = Uuid::now_v7();
        let a = DeliveryId::for_event_and_endpoint(event, "https://a.example/hook");
        assert_eq!(
            a,
            DeliveryId::for_event_and_endpoint(event, "https://a.example/hook")
        );
        assert_ne!(
            a,
            DeliveryId::for_event_and_endpoint(event, "https://b.example/hook")
        );
        assert_ne!(
            a,
            DeliveryId::for_event_and_endpoint(Uuid::now_v7(), "https://a.example/hook")
        );
    }
}
