//! Events and JSON helpers shared by the format tests.

use serde_json::Value;
use uuid::Uuid;

use super::message::Message;
use super::{EndpointFormat, render_body};
use crate::event::{Change, Event, EventType};
use crate::example;
use crate::submission::{Submission, SubmissionStatus};

pub(super) use crate::example::submission as sample_submission;

fn at_product_page_time(change: Change) -> Event {
    Event {
        id: Uuid::now_v7(),
        tenant_id: Uuid::now_v7(),
        occurred_at: example::occurred_at(),
        change,
    }
}

pub(super) fn created(submission: Submission) -> Event {
    at_product_page_time(Change::SubmissionCreated { submission })
}

pub(super) fn status_changed(submission: Submission, previous_status: SubmissionStatus) -> Event {
    at_product_page_time(Change::SubmissionStatusChanged {
        submission,
        previous_status,
    })
}

pub(super) fn jane_created() -> Event {
    example::event(EventType::SubmissionCreated)
}

/// Jane's submission moved from pending to approved.
pub(super) fn jane_approved() -> Event {
    example::event(EventType::SubmissionStatusChanged)
}

/// A `webhook.test` event at the product page's time.
pub(super) fn webhook_test() -> Event {
    example::event(EventType::WebhookTest)
}

/// The chat facts of a submission event.
pub(super) fn submission_message(event: &Event) -> Message<'_> {
    Message::new(event).expect("a submission event")
}

/// Feedback texts built to break limits, escaping and mention handling.
fn hostile_texts() -> Vec<String> {
    vec![
        "x".repeat(100_000),
        // Two scalar values per emoji: thumbs up plus skin tone.
        "👍🏽".repeat(10_000),
        // A base letter followed by stacked combining marks.
        "e\u{301}\u{302}\u{303}".repeat(5_000),
        // Every `&` grows to `&amp;` in Slack, so cuts land inside entities unless guarded.
        "&".repeat(5_000),
        "<".repeat(5_000),
        "<!channel> <@U123> &amp; <script>alert(1)</script> <https://evil.example|click>".into(),
        "@everyone @here @EVERYONE [click](https://evil.example) **bold** `code`".into(),
        "@everyone ".repeat(2_000),
        String::new(),
        " \n\t ".into(),
    ]
}

fn hostile_names() -> Vec<Option<String>> {
    vec![
        None,
        Some(String::new()),
        Some("n".repeat(5_000)),
        Some("<!channel> @everyone & <@U123>".into()),
        Some("👍🏽".repeat(3_000)),
        Some("&".repeat(3_000)),
        Some("Jane\nDoe\r\n\t".into()),
    ]
}

/// Every hostile text with every hostile name, as both event types, with extreme ids and ratings.
pub(super) fn adversarial_events() -> Vec<Event> {
    let mut events = Vec::new();
    for text_feedback in hostile_texts() {
        for customer_name in hostile_names() {
            let submission = Submission {
                id: i64::MAX,
                campaign_id: i64::MIN,
                star_rating: i32::MIN,
                text_feedback: text_feedback.clone(),
                customer_name,
                status: SubmissionStatus::Rejected,
            };
            events.push(created(submission.clone()));
            events.push(status_changed(submission, SubmissionStatus::Archived));
        }
    }
    events
}

/// The rendered body, parsed back.
pub(super) fn render_json(event: &Event, format: EndpointFormat) -> Value {
    serde_json::from_slice(&render_body(event, format)).expect("rendered body is JSON")
}

/// Every string anywhere in `value`, object keys excluded.
pub(super) fn strings(value: &Value) -> Vec<&str> {
    match value {
        Value::String(text) => vec![text.as_str()],
        Value::Array(items) => items.iter().flat_map(strings).collect(),
        Value::Object(members) => members.values().flat_map(strings).collect(),
        Value::Null | Value::Bool(_) | Value::Number(_) => Vec::new(),
    }
}

/// Length in characters of a JSON string, 0 when absent.
pub(super) fn char_len(value: &Value) -> usize {
    value.as_str().map_or(0, |text| text.chars().count())
}
