//! Broker message contracts, generated from `proto/` at build time, and their mapping to the domain.

use chrono::{DateTime, Utc};
use fp_domain::{Change, DeliveryId, Event, Submission, SubmissionStatus};
use prost::Message;
use uuid::Uuid;

/// Generated protobuf types of package `feedbackpulse.v1`.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/feedbackpulse.v1.rs"));
}

pub use prost::Message as ProtoMessage;

/// Why bytes from the broker are not a usable message; the text goes to the dead-letter queue.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a valid protobuf message: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("field `{field}` is missing or invalid: {reason}")]
    Field { field: &'static str, reason: String },
}

fn field_error(field: &'static str, reason: impl ToString) -> DecodeError {
    DecodeError::Field {
        field,
        reason: reason.to_string(),
    }
}

pub fn timestamp_from(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

pub fn time_from(
    field: &'static str,
    timestamp: Option<&prost_types::Timestamp>,
) -> Result<DateTime<Utc>, DecodeError> {
    let timestamp = timestamp.ok_or_else(|| field_error(field, "absent"))?;
    let nanos = u32::try_from(timestamp.nanos).map_err(|err| field_error(field, err))?;
    DateTime::from_timestamp(timestamp.seconds, nanos)
        .ok_or_else(|| field_error(field, "out of range"))
}

pub fn uuid_from(field: &'static str, text: &str) -> Result<Uuid, DecodeError> {
    Uuid::parse_str(text).map_err(|err| field_error(field, err))
}

fn submission_to_proto(submission: &Submission) -> v1::Submission {
    v1::Submission {
        id: submission.id,
        campaign_id: submission.campaign_id,
        star_rating: submission.star_rating,
        text_feedback: submission.text_feedback.clone(),
        customer_name: submission.customer_name.clone(),
        status: submission.status.as_str().to_owned(),
    }
}

fn status_from(field: &'static str, text: &str) -> Result<SubmissionStatus, DecodeError> {
    text.parse().map_err(|err| field_error(field, err))
}

fn submission_from_proto(submission: Option<v1::Submission>) -> Result<Submission, DecodeError> {
    let submission = submission.ok_or_else(|| field_error("submission", "absent"))?;
    Ok(Submission {
        id: submission.id,
        campaign_id: submission.campaign_id,
        star_rating: submission.star_rating,
        status: status_from("submission.status", &submission.status)?,
        text_feedback: submission.text_feedback,
        customer_name: submission.customer_name,
    })
}

/// The wire form of a domain event.
pub fn envelope_from_event(event: &Event) -> v1::EventEnvelope {
    let payload = match &event.change {
        Change::SubmissionCreated { submission } => {
            v1::event_envelope::Payload::SubmissionCreated(v1::SubmissionCreated {
                submission: Some(submission_to_proto(submission)),
            })
        }
        Change::SubmissionStatusChanged {
            submission,
            previous_status,
        } => v1::event_envelope::Payload::SubmissionStatusChanged(v1::SubmissionStatusChanged {
            submission: Some(submission_to_proto(submission)),
            previous_status: previous_status.as_str().to_owned(),
        }),
    };
    v1::EventEnvelope {
        id: event.id.to_string(),
        tenant_id: event.tenant_id.to_string(),
        event_type: event.event_type().as_str().to_owned(),
        occurred_at: Some(timestamp_from(event.occurred_at)),
        payload: Some(payload),
    }
}

/// Encoded bytes of a domain event, as published to `fp.events`.
pub fn encode_event(event: &Event) -> Vec<u8> {
    envelope_from_event(event).encode_to_vec()
}

/// Decodes and validates an event from the broker.
pub fn decode_event(bytes: &[u8]) -> Result<Event, DecodeError> {
    event_from_envelope(v1::EventEnvelope::decode(bytes)?)
}

/// One event for one endpoint, continuing a delivery (a retry or a deferred attempt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryJob {
    pub event: Event,
    pub delivery_id: DeliveryId,
    pub attempt_number: u32,
}

pub fn encode_job(job: &DeliveryJob) -> Vec<u8> {
    v1::DeliveryJob {
        event: Some(envelope_from_event(&job.event)),
        delivery_id: job.delivery_id.to_string(),
        attempt_number: job.attempt_number,
    }
    .encode_to_vec()
}

pub fn decode_job(bytes: &[u8]) -> Result<DeliveryJob, DecodeError> {
    let job = v1::DeliveryJob::decode(bytes)?;
    let envelope = job.event.ok_or_else(|| field_error("event", "absent"))?;
    if job.attempt_number < 1 {
        return Err(field_error("attempt_number", "must be at least 1"));
    }
    Ok(DeliveryJob {
        event: event_from_envelope(envelope)?,
        delivery_id: DeliveryId(uuid_from("delivery_id", &job.delivery_id)?),
        attempt_number: job.attempt_number,
    })
}

fn event_from_envelope(envelope: v1::EventEnvelope) -> Result<Event, DecodeError> {
    let change = match envelope.payload {
        Some(v1::event_envelope::Payload::SubmissionCreated(created)) => {
            Change::SubmissionCreated {
                submission: submission_from_proto(created.submission)?,
            }
        }
        Some(v1::event_envelope::Payload::SubmissionStatusChanged(changed)) => {
            Change::SubmissionStatusChanged {
                submission: submission_from_proto(changed.submission)?,
                previous_status: status_from("previous_status", &changed.previous_status)?,
            }
        }
        None => return Err(field_error("payload", "absent")),
    };
    let event = Event {
        id: uuid_from("id", &envelope.id)?,
        tenant_id: uuid_from("tenant_id", &envelope.tenant_id)?,
        occurred_at: time_from("occurred_at", envelope.occurred_at.as_ref())?,
        change,
    };
    if event.event_type().as_str() != envelope.event_type {
        return Err(field_error(
            "event_type",
            format!(
                "`{}` does not match the payload ({})",
                envelope.event_type,
                event.event_type()
            ),
        ));
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_the_wire_form() {
        let event = Event {
            id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            occurred_at: DateTime::from_timestamp(1_710_498_600, 123_000_000).expect("time"),
            change: Change::SubmissionStatusChanged {
                submission: Submission {
                    id: 7,
                    campaign_id: 3,
                    star_rating: 2,
                    text_feedback: "Zu langsam 🐢".into(),
                    customer_name: None,
                    status: SubmissionStatus::Rejected,
                },
                previous_status: SubmissionStatus::Pending,
            },
        };
        let decoded = decode_event(&encode_event(&event)).expect("decodes");
        assert_eq!(decoded, event);
    }

    #[test]
    fn jobs_round_trip_and_need_an_attempt_number() {
        let event = Event {
            id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            occurred_at: DateTime::from_timestamp(1_710_498_600, 0).expect("time"),
            change: Change::SubmissionCreated {
                submission: Submission {
                    id: 1,
                    campaign_id: 1,
                    star_rating: 5,
                    text_feedback: "ok".into(),
                    customer_name: None,
                    status: SubmissionStatus::Pending,
                },
            },
        };
        let job = DeliveryJob {
            delivery_id: DeliveryId::for_event_and_endpoint(event.id, "https://a.example/"),
            event,
            attempt_number: 3,
        };
        assert_eq!(decode_job(&encode_job(&job)).expect("decodes"), job);
        let zeroth = DeliveryJob {
            attempt_number: 0,
            ..job
        };
        assert!(decode_job(&encode_job(&zeroth)).is_err());
    }

    #[test]
    fn garbage_and_inconsistent_envelopes_are_refused_with_a_reason() {
        assert!(matches!(
            decode_event(b"\xff\xff\xff"),
            Err(DecodeError::Protobuf(_))
        ));
        let mut envelope = envelope_from_event(&Event {
            id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            occurred_at: Utc::now(),
            change: Change::SubmissionCreated {
                submission: Submission {
                    id: 1,
                    campaign_id: 1,
                    star_rating: 5,
                    text_feedback: String::new(),
                    customer_name: None,
                    status: SubmissionStatus::Pending,
                },
            },
        });
        envelope.event_type = "submission.status_changed".into();
        let error = decode_event(&envelope.encode_to_vec()).expect_err("mismatch");
        assert!(error.to_string().contains("event_type"), "{error}");
        envelope.tenant_id = "nope".into();
        assert!(decode_event(&envelope.encode_to_vec()).is_err());
    }
}
