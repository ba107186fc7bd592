//! Erasure of a submission's personal data (GDPR Art. 17): which data is personal, what replaces
//! it, how every stored form of it (the submission, its events, the bodies sent for them) is
//! rewritten, and when a delivery must be checked for having been erased before it is sent.
//!
//! Personal are the customer's words (`text_feedback`) and name (`customer_name`). They become
//! [`ERASED`]; ids, rating, status, campaign and times stay, so logs stay readable. Every rewrite
//! is idempotent: erasing erased data changes nothing, which is why a second erasure reports only
//! what was stored since the first.

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::event::{Change, Event};
use crate::format::{self, EndpointFormat};
use crate::submission::Submission;

/// What stands where personal data was. A name that was never given stays absent.
pub const ERASED: &str = "[erased]";

/// `error_kind` of the attempt record of a delivery cancelled because its event was erased: no
/// request was sent and none will be.
pub const CANCELLED_ERROR_KIND: &str = "cancelled";
/// What the tenant reads beside it.
pub const CANCELLED_ERROR_MESSAGE: &str = "not sent: the personal data of this event's \
     submission was erased on your request, so this delivery was cancelled and is not attempted \
     again";

/// How far the clock of the api replica that stamped an event id may be ahead of the one that
/// stamped an erasure: events up to this much younger than an erasure are still checked.
const CLOCK_SKEW: TimeDelta = TimeDelta::minutes(1);

/// A field of a submission that holds personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PersonalField {
    TextFeedback,
    CustomerName,
}

impl PersonalField {
    pub const ALL: [PersonalField; 2] = [PersonalField::TextFeedback, PersonalField::CustomerName];

    /// The field's name, as in the submission's JSON and the `submissions` table.
    pub fn as_str(self) -> &'static str {
        match self {
            PersonalField::TextFeedback => "text_feedback",
            PersonalField::CustomerName => "customer_name",
        }
    }
}

/// Replaces the personal data of `submission` with [`ERASED`]; returns the fields that changed.
pub fn erase_submission(submission: &mut Submission) -> Vec<PersonalField> {
    let mut erased = Vec::new();
    if submission.text_feedback != ERASED {
        submission.text_feedback = ERASED.to_owned();
        erased.push(PersonalField::TextFeedback);
    }
    if let Some(name) = &mut submission.customer_name
        && name != ERASED
    {
        *name = ERASED.to_owned();
        erased.push(PersonalField::CustomerName);
    }
    erased
}

/// Replaces the personal data of the submission `event` carries; whether anything changed.
pub fn erase_event(event: &mut Event) -> bool {
    match &mut event.change {
        Change::SubmissionCreated { submission }
        | Change::SubmissionStatusChanged { submission, .. } => {
            !erase_submission(submission).is_empty()
        }
        Change::WebhookTest => false,
    }
}

/// A stored request body of a submission event, sent to an endpoint of `format` (`None`: a URL
/// that is not one, which no body was made for), with [`ERASED`] in place of the personal data.
/// A body not laid out as this crate renders that format (from an older release, say) is cleared
/// whole: nothing that may hold the data is kept.
pub fn erase_request_body(body: &[u8], format: Option<EndpointFormat>) -> Vec<u8> {
    if body.is_empty() {
        return Vec::new();
    }
    format
        .and_then(|format| format::erased_body(body, format))
        .unwrap_or_default()
}

/// A stored response body of an erased event's attempt: cleared, since a receiver may echo what
/// it was sent, in any shape.
pub fn erase_response_body(_body: &[u8]) -> Vec<u8> {
    Vec::new()
}

/// Whether a delivery of event `event_id` must be checked against the erased events before it is
/// sent, given the tenant's latest erasure: only an event created before that erasure can have
/// been erased (one created later was made from the erased submission), so a tenant that never
/// erased, and every fresh event, costs no lookup. An id that is not a UUIDv7 has no creation
/// time and is always checked once the tenant has erased anything.
pub fn may_have_been_erased(event_id: Uuid, latest_erasure: Option<DateTime<Utc>>) -> bool {
    let Some(latest_erasure) = latest_erasure else {
        return false;
    };
    match created_at(event_id) {
        Some(created_at) => created_at <= latest_erasure + CLOCK_SKEW,
        None => true,
    }
}

/// The creation time a UUIDv7 carries.
fn created_at(id: Uuid) -> Option<DateTime<Utc>> {
    if id.get_version_num() != 7 {
        return None;
    }
    let (seconds, nanos) = id.get_timestamp()?.to_unix();
    DateTime::from_timestamp(i64::try_from(seconds).ok()?, nanos)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::event::EventType;
    use crate::example;
    use crate::format::render_body;
    use crate::submission::SubmissionStatus;

    const TEXT: &str = "The <b>soup</b> & the **service** were @everyone's nightmare";
    const NAME: &str = "Zoë <@U123> Müller-Lüdenscheidt";

    fn submission(customer_name: Option<&str>) -> Submission {
        Submission {
            text_feedback: TEXT.to_owned(),
            customer_name: customer_name.map(str::to_owned),
            ..example::submission()
        }
    }

    fn events() -> Vec<Event> {
        let created = Event {
            change: Change::SubmissionCreated {
                submission: submission(Some(NAME)),
            },
            ..example::event(EventType::SubmissionCreated)
        };
        let changed = Event {
            change: Change::SubmissionStatusChanged {
                submission: Submission {
                    status: SubmissionStatus::Approved,
                    ..submission(Some(NAME))
                },
                previous_status: SubmissionStatus::Pending,
            },
            ..example::event(EventType::SubmissionStatusChanged)
        };
        vec![created, changed]
    }

    const FORMATS: [EndpointFormat; 3] = [
        EndpointFormat::Custom,
        EndpointFormat::Slack,
        EndpointFormat::Discord,
    ];

    /// Every piece of the text or the name long enough to identify it, in any escaping.
    fn assert_no_trace(body: &[u8]) {
        let body = String::from_utf8_lossy(body);
        for needle in [
            "soup",
            "service",
            "nightmare",
            "Zoë",
            "U123",
            "Lüdenscheidt",
        ] {
            assert!(!body.contains(needle), "{needle} left in {body}");
        }
    }

    #[test]
    fn submission_fields_become_the_marker_once() {
        let mut named = submission(Some(NAME));
        assert_eq!(
            erase_submission(&mut named),
            vec![PersonalField::TextFeedback, PersonalField::CustomerName]
        );
        assert_eq!(named.text_feedback, ERASED);
        assert_eq!(named.customer_name.as_deref(), Some(ERASED));
        assert_eq!(named.star_rating, example::submission().star_rating);
        assert_eq!(erase_submission(&mut named), vec![]);

        let mut anonymous = submission(None);
        assert_eq!(
            erase_submission(&mut anonymous),
            vec![PersonalField::TextFeedback]
        );
        assert_eq!(anonymous.customer_name, None);
    }

    #[test]
    fn events_lose_the_data_and_keep_the_rest() {
        for mut event in events() {
            let original = event.clone();
            assert!(erase_event(&mut event));
            assert_eq!(
                (event.id, event.occurred_at),
                (original.id, original.occurred_at)
            );
            assert_eq!(event.submission_id(), original.submission_id());
            assert!(!erase_event(&mut event));
        }
        let mut test = example::event(EventType::WebhookTest);
        assert!(!erase_event(&mut test));
    }

    #[test]
    fn every_format_is_rewritten_in_place_and_idempotently() {
        for event in events() {
            for format in FORMATS {
                let sent = render_body(&event, format);
                let erased = erase_request_body(&sent, Some(format));
                assert!(
                    !erased.is_empty(),
                    "{format:?} body cleared instead of rewritten"
                );
                assert_no_trace(&erased);
                assert!(String::from_utf8_lossy(&erased).contains("erased"));
                assert_eq!(erase_request_body(&erased, Some(format)), erased);
            }
        }
    }

    #[test]
    fn erased_bodies_keep_what_is_not_personal() {
        let [created, _] = <[Event; 2]>::try_from(events()).expect("two events");
        let custom: Value = serde_json::from_slice(&erase_request_body(
            &render_body(&created, EndpointFormat::Custom),
            Some(EndpointFormat::Custom),
        ))
        .expect("json");
        assert_eq!(custom["event"], "submission.created");
        assert_eq!(custom["data"]["id"], example::submission().id);
        assert_eq!(
            custom["data"]["star_rating"],
            example::submission().star_rating
        );
        assert_eq!(custom["data"]["text_feedback"], ERASED);
        assert_eq!(custom["data"]["customer_name"], ERASED);

        let mut erased_event = created.clone();
        erase_event(&mut erased_event);
        for format in [EndpointFormat::Slack, EndpointFormat::Discord] {
            // Rewriting what was sent gives what the erased event renders to.
            let rewritten: Value = serde_json::from_slice(&erase_request_body(
                &render_body(&created, format),
                Some(format),
            ))
            .expect("json");
            let rendered: Value =
                serde_json::from_slice(&render_body(&erased_event, format)).expect("json");
            assert_eq!(rewritten, rendered, "{format:?}");
        }
    }

    #[test]
    fn a_name_never_given_stays_null_in_the_custom_body() {
        let event = Event {
            change: Change::SubmissionCreated {
                submission: submission(None),
            },
            ..example::event(EventType::SubmissionCreated)
        };
        let erased: Value = serde_json::from_slice(&erase_request_body(
            &render_body(&event, EndpointFormat::Custom),
            Some(EndpointFormat::Custom),
        ))
        .expect("json");
        assert_eq!(erased["data"]["customer_name"], Value::Null);
    }

    #[test]
    fn bodies_of_an_unknown_shape_are_cleared_whole() {
        let slack_body = render_body(&events()[0], EndpointFormat::Slack);
        for (body, format) in [
            (b"not json".to_vec(), Some(EndpointFormat::Custom)),
            (
                br#"{"anything":"Zoe"}"#.to_vec(),
                Some(EndpointFormat::Custom),
            ),
            (slack_body.clone(), Some(EndpointFormat::Discord)),
            (slack_body, None),
        ] {
            assert_eq!(erase_request_body(&body, format), Vec::<u8>::new());
        }
        assert_eq!(erase_response_body(TEXT.as_bytes()), Vec::<u8>::new());
    }

    #[test]
    fn only_events_older_than_the_latest_erasure_are_looked_up() {
        let event_id = Uuid::now_v7();
        let created = created_at(event_id).expect("a v7 id has a time");
        assert!(!may_have_been_erased(event_id, None));
        assert!(may_have_been_erased(event_id, Some(created)));
        assert!(may_have_been_erased(
            event_id,
            Some(created + TimeDelta::days(3))
        ));
        // Within the clock allowance: still looked up.
        assert!(may_have_been_erased(
            event_id,
            Some(created - TimeDelta::seconds(30))
        ));
        assert!(!may_have_been_erased(
            event_id,
            Some(created - TimeDelta::minutes(5))
        ));
        // No time in the id: looked up once the tenant erased anything.
        assert!(may_have_been_erased(
            Uuid::new_v4(),
            Some(created - TimeDelta::days(1))
        ));
    }
}
