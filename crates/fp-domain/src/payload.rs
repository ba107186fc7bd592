//! Webhook bodies. The custom format is exactly the product page's JSON; its bytes are what is signed.
//!
//! The types that serialize a body also generate its JSON Schema ([`custom_body_schema`]), so the
//! event catalogue describes exactly what is sent.

use chrono::SecondsFormat;
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde::Serialize;

use crate::erasure::ERASED;
use crate::event::{Change, Event, EventType};
use crate::submission::{Submission, SubmissionStatus};

/// What a `webhook.test` event says, in every format.
pub const TEST_EVENT_MESSAGE: &str = "This is a test event from FeedbackPulse, sent because it was \
     requested. If you can read it, your endpoint receives FeedbackPulse webhooks.";

// The doc comments of the body's types become its schema's descriptions, which tenants read. Field
// order follows the product page, so receivers that log raw bodies see the documented shape.
#[derive(Serialize, JsonSchema)]
struct CustomBody<D> {
    /// The event type, as in the `X-FeedbackPulse-Event` header.
    event: &'static str,
    /// When the event happened: RFC 3339, UTC, whole seconds.
    #[schemars(extend("format" = "date-time"))]
    timestamp: String,
    data: D,
}

/// `data` of `submission.created`: the submission.
#[derive(Serialize, JsonSchema)]
struct SubmissionData<'a> {
    id: i64,
    campaign_id: i64,
    #[schemars(range(min = 1, max = 5))]
    star_rating: i32,
    text_feedback: &'a str,
    customer_name: Option<&'a str>,
    status: SubmissionStatus,
}

impl<'a> SubmissionData<'a> {
    fn new(submission: &'a Submission) -> Self {
        SubmissionData {
            id: submission.id,
            campaign_id: submission.campaign_id,
            star_rating: submission.star_rating,
            text_feedback: &submission.text_feedback,
            customer_name: submission.customer_name.as_deref(),
            status: submission.status,
        }
    }
}

/// `data` of `submission.status_changed`: the submission as it is now, and its status before.
#[derive(Serialize, JsonSchema)]
struct StatusChangedData<'a> {
    #[serde(flatten)]
    submission: SubmissionData<'a>,
    previous_status: SubmissionStatus,
}

/// `data` of `webhook.test`: a fixed message, no account data.
#[derive(Serialize, JsonSchema)]
struct TestData {
    message: &'static str,
}

/// The raw JSON body sent to a custom (non-Slack, non-Discord) endpoint.
pub fn custom_json_body(event: &Event) -> Vec<u8> {
    match &event.change {
        Change::SubmissionCreated { submission } => {
            serialize_body(event, SubmissionData::new(submission))
        }
        Change::SubmissionStatusChanged {
            submission,
            previous_status,
        } => serialize_body(
            event,
            StatusChangedData {
                submission: SubmissionData::new(submission),
                previous_status: *previous_status,
            },
        ),
        Change::WebhookTest => serialize_body(
            event,
            TestData {
                message: TEST_EVENT_MESSAGE,
            },
        ),
    }
}

/// Rewrites a stored custom body of a submission event with [`ERASED`] in place of `text_feedback`
/// and of a `customer_name` that was given (`null` stays `null`); ids, rating, status and times
/// stay. `false` when the body has no submission in its `data` (the caller then clears it whole).
pub(crate) fn erase_custom_body(body: &mut serde_json::Value) -> bool {
    let Some(data) = body
        .get_mut("data")
        .and_then(serde_json::Value::as_object_mut)
    else {
        return false;
    };
    if !data.contains_key("text_feedback") {
        return false;
    }
    data.insert("text_feedback".to_owned(), ERASED.into());
    if data
        .get("customer_name")
        .is_some_and(|name| !name.is_null())
    {
        data.insert("customer_name".to_owned(), ERASED.into());
    }
    true
}

fn serialize_body<D: Serialize>(event: &Event, data: D) -> Vec<u8> {
    let body = CustomBody {
        event: event.event_type().as_str(),
        timestamp: event.occurred_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        data,
    };
    // Serialising plain structs of strings and integers cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The JSON Schema (draft 2020-12) of the body [`custom_json_body`] makes for an event of
/// `event_type`, generated from the types that serialize it.
pub fn custom_body_schema(event_type: EventType) -> serde_json::Value {
    let mut schema = match event_type {
        EventType::SubmissionCreated => schema_of::<CustomBody<SubmissionData<'static>>>(),
        EventType::SubmissionStatusChanged => schema_of::<CustomBody<StatusChangedData<'static>>>(),
        EventType::WebhookTest => schema_of::<CustomBody<TestData>>(),
    };
    // `event` is any type's name in the shared struct; in one type's body it is that name.
    schema["title"] = format!("{event_type} body").into();
    schema["properties"]["event"]["const"] = event_type.as_str().into();
    schema
}

fn schema_of<T: JsonSchema>() -> serde_json::Value {
    SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator()
        .into_root_schema_for::<T>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::example;

    fn body_of(event_type: EventType) -> String {
        String::from_utf8(custom_json_body(&example::event(event_type))).expect("utf-8")
    }

    #[test]
    fn created_body_is_the_product_page_example() {
        assert_eq!(
            body_of(EventType::SubmissionCreated),
            r#"{"event":"submission.created","timestamp":"2024-03-15T10:30:00Z","data":{"id":42,"campaign_id":1,"star_rating":5,"text_feedback":"Love this product!","customer_name":"Jane Doe","status":"pending"}}"#
        );
    }

    #[test]
    fn test_event_body_has_the_product_page_shape_and_a_message() {
        assert_eq!(
            body_of(EventType::WebhookTest),
            format!(
                r#"{{"event":"webhook.test","timestamp":"2024-03-15T10:30:00Z","data":{{"message":"{TEST_EVENT_MESSAGE}"}}}}"#
            )
        );
    }

    #[test]
    fn status_change_carries_new_and_previous_status_after_the_submission() {
        assert_eq!(
            body_of(EventType::SubmissionStatusChanged),
            r#"{"event":"submission.status_changed","timestamp":"2024-03-15T10:30:00Z","data":{"id":42,"campaign_id":1,"star_rating":5,"text_feedback":"Love this product!","customer_name":"Jane Doe","status":"approved","previous_status":"pending"}}"#
        );
        let mut event = example::event(EventType::SubmissionStatusChanged);
        if let Change::SubmissionStatusChanged { submission, .. } = &mut event.change {
            submission.customer_name = None;
        }
        let body: serde_json::Value =
            serde_json::from_slice(&custom_json_body(&event)).expect("valid json");
        assert!(body["data"]["customer_name"].is_null(), "{body}");
    }

    #[test]
    fn every_example_validates_against_its_types_schema_and_no_other() {
        for event_type in EventType::ALL {
            let validator = jsonschema::validator_for(&custom_body_schema(event_type))
                .expect("the schema compiles");
            for example_type in EventType::ALL {
                let example: serde_json::Value =
                    serde_json::from_str(&body_of(example_type)).expect("valid json");
                assert_eq!(
                    validator.is_valid(&example),
                    example_type == event_type,
                    "the {example_type} example against the {event_type} schema"
                );
            }
        }
        // Every field of the data is required, even when null.
        let mut example: serde_json::Value =
            serde_json::from_str(&body_of(EventType::SubmissionStatusChanged)).expect("json");
        let validator =
            jsonschema::validator_for(&custom_body_schema(EventType::SubmissionStatusChanged))
                .expect("the schema compiles");
        example["data"]["customer_name"] = serde_json::Value::Null;
        assert!(validator.is_valid(&example), "{example}");
        for field in ["customer_name", "previous_status", "status", "id"] {
            let mut incomplete = example.clone();
            incomplete["data"]
                .as_object_mut()
                .expect("data is an object")
                .remove(field);
            assert!(!validator.is_valid(&incomplete), "without {field}");
        }
    }
}
