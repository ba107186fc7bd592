//! Webhook bodies. The custom format is exactly the product page's JSON; its bytes are what is signed.

use chrono::SecondsFormat;
use serde::Serialize;

use crate::event::{Change, Event};
use crate::submission::{Submission, SubmissionStatus};

/// What a `webhook.test` event says, in every format.
pub const TEST_EVENT_MESSAGE: &str = "This is a test event from FeedbackPulse, sent because it was \
     requested. If you can read it, your endpoint receives FeedbackPulse webhooks.";

#[derive(Serialize)]
struct CustomBody<'a> {
    event: &'static str,
    timestamp: String,
    data: Data<'a>,
}

/// The `data` object: the submission, or the test event's message.
#[derive(Serialize)]
#[serde(untagged)]
enum Data<'a> {
    Submission(SubmissionData<'a>),
    Test { message: &'static str },
}

/// Field order follows the product page, so receivers that log raw bodies see the documented shape.
#[derive(Serialize)]
struct SubmissionData<'a> {
    id: i64,
    campaign_id: i64,
    star_rating: i32,
    text_feedback: &'a str,
    customer_name: Option<&'a str>,
    status: SubmissionStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_status: Option<SubmissionStatus>,
}

impl<'a> SubmissionData<'a> {
    fn new(submission: &'a Submission, previous_status: Option<SubmissionStatus>) -> Self {
        SubmissionData {
            id: submission.id,
            campaign_id: submission.campaign_id,
            star_rating: submission.star_rating,
            text_feedback: &submission.text_feedback,
            customer_name: submission.customer_name.as_deref(),
            status: submission.status,
            previous_status,
        }
    }
}

/// The raw JSON body sent to a custom (non-Slack, non-Discord) endpoint.
pub fn custom_json_body(event: &Event) -> Vec<u8> {
    let data = match &event.change {
        Change::SubmissionCreated { submission } => {
            Data::Submission(SubmissionData::new(submission, None))
        }
        Change::SubmissionStatusChanged {
            submission,
            previous_status,
        } => Data::Submission(SubmissionData::new(submission, Some(*previous_status))),
        Change::WebhookTest => Data::Test {
            message: TEST_EVENT_MESSAGE,
        },
    };
    let body = CustomBody {
        event: event.event_type().as_str(),
        timestamp: event.occurred_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        data,
    };
    // Serialising plain structs of strings and integers cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use uuid::Uuid;

    use super::*;

    fn sample_submission() -> Submission {
        Submission {
            id: 42,
            campaign_id: 1,
            star_rating: 5,
            text_feedback: "Love this product!".into(),
            customer_name: Some("Jane Doe".into()),
            status: SubmissionStatus::Pending,
        }
    }

    fn at_product_page_time(change: Change) -> Event {
        Event {
            id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            occurred_at: Utc
                .with_ymd_and_hms(2024, 3, 15, 10, 30, 0)
                .single()
                .expect("valid time"),
            change,
        }
    }

    #[test]
    fn created_body_is_the_product_page_example() {
        let event = at_product_page_time(Change::SubmissionCreated {
            submission: sample_submission(),
        });
        let body = String::from_utf8(custom_json_body(&event)).expect("utf-8");
        assert_eq!(
            body,
            r#"{"event":"submission.created","timestamp":"2024-03-15T10:30:00Z","data":{"id":42,"campaign_id":1,"star_rating":5,"text_feedback":"Love this product!","customer_name":"Jane Doe","status":"pending"}}"#
        );
    }

    #[test]
    fn test_event_body_has_the_product_page_shape_and_a_message() {
        let event = at_product_page_time(Change::WebhookTest);
        let body = String::from_utf8(custom_json_body(&event)).expect("utf-8");
        assert_eq!(
            body,
            format!(
                r#"{{"event":"webhook.test","timestamp":"2024-03-15T10:30:00Z","data":{{"message":"{TEST_EVENT_MESSAGE}"}}}}"#
            )
        );
    }

    #[test]
    fn status_change_carries_new_and_previous_status() {
        let mut submission = sample_submission();
        submission.status = SubmissionStatus::Approved;
        submission.customer_name = None;
        let event = at_product_page_time(Change::SubmissionStatusChanged {
            submission,
            previous_status: SubmissionStatus::Pending,
        });
        let body: serde_json::Value =
            serde_json::from_slice(&custom_json_body(&event)).expect("valid json");
        assert_eq!(body["event"], "submission.status_changed");
        assert_eq!(body["data"]["status"], "approved");
        assert_eq!(body["data"]["previous_status"], "pending");
        assert!(body["data"]["customer_name"].is_null());
    }
}
