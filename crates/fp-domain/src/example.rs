//! The product page's example events: what the event catalogue shows for each type, and what a
//! test event of a chosen type carries.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::event::{Change, Event, EventType};
use crate::payload::custom_json_body;
use crate::submission::{Submission, SubmissionStatus};

/// 2024-03-15T10:30:00Z, the product page's example time.
pub fn occurred_at() -> DateTime<Utc> {
    DateTime::from_timestamp(1_710_498_600, 0).unwrap_or_default()
}

/// The product page's example submission, still pending.
pub fn submission() -> Submission {
    Submission {
        id: 42,
        campaign_id: 1,
        star_rating: 5,
        text_feedback: "Love this product!".into(),
        customer_name: Some("Jane Doe".into()),
        status: SubmissionStatus::Pending,
    }
}

/// The example change of `event_type`: the submission created, or approved after pending.
pub fn change(event_type: EventType) -> Change {
    match event_type {
        EventType::SubmissionCreated => Change::SubmissionCreated {
            submission: submission(),
        },
        EventType::SubmissionStatusChanged => Change::SubmissionStatusChanged {
            submission: Submission {
                status: SubmissionStatus::Approved,
                ..submission()
            },
            previous_status: SubmissionStatus::Pending,
        },
        EventType::WebhookTest => Change::WebhookTest,
    }
}

/// The example event of `event_type` at the example time; its ids are nil, as it belongs to no one.
pub fn event(event_type: EventType) -> Event {
    Event {
        id: Uuid::nil(),
        tenant_id: Uuid::nil(),
        occurred_at: occurred_at(),
        change: change(event_type),
    }
}

/// The body a custom endpoint gets for the example event of `event_type`, as JSON.
pub fn body(event_type: EventType) -> serde_json::Value {
    // The body is JSON the domain wrote itself.
    serde_json::from_slice(&custom_json_body(&event(event_type))).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_an_example_of_that_type() {
        for event_type in EventType::ALL {
            assert_eq!(event(event_type).event_type(), event_type);
            assert_eq!(body(event_type)["event"], event_type.as_str());
        }
        assert_eq!(
            occurred_at().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "2024-03-15T10:30:00Z"
        );
    }
}
