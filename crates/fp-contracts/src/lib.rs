//! Broker message contracts, generated from `proto/` at build time, and their mapping to the domain.

use chrono::{DateTime, Utc};
use fp_domain::DeliveryId;
use fp_domain::inbound_event::RejectionReason;
/// The domain types an event is made of, for publishers that depend on the contracts alone.
pub use fp_domain::{Change, Event, EventType, Submission, SubmissionStatus};
use prost::Message;
use uuid::Uuid;

/// Generated protobuf types of package `feedbackpulse.v1`.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/feedbackpulse.v1.rs"));
}

pub use prost::Message as ProtoMessage;

/// `error_kind` of an attempt whose outcome was never recorded: its pending record
/// (`DeliveryAttempt.outcome_pending`) was stored, the record with the outcome never came.
pub const INTERRUPTED_ERROR_KIND: &str = "interrupted";
/// What the tenant reads beside it.
pub const INTERRUPTED_ERROR_MESSAGE: &str = "no outcome was recorded for this attempt: it is \
     still in flight, or it was interrupted (a dispatcher stopped or lost the broker) after the \
     request was sent, so your endpoint may have received it. The delivery continues with \
     another attempt.";

/// AMQP `type` of a message holding several attempt records (`v1::DeliveryAttemptBatch`). A message
/// without it holds one record (`v1::DeliveryAttempt`), as dispatchers before batching sent them.
pub const ATTEMPT_BATCH_TYPE: &str = "feedbackpulse.v1.DeliveryAttemptBatch";

/// The bytes of a `v1::DeliveryAttemptBatch` of records encoded already. A repeated message field
/// is each element length-delimited under its tag, so the records are framed as they are, never
/// decoded and encoded again.
pub fn encode_attempt_batch(records: &[Vec<u8>]) -> Vec<u8> {
    let mut batch = Vec::with_capacity(records.iter().map(|record| record.len() + 6).sum());
    for record in records {
        prost::encoding::bytes::encode(1, record, &mut batch);
    }
    batch
}

/// Why bytes from the broker are not a usable message; the text goes to the dead-letter queue.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a valid protobuf message: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("field `{field}` is missing or invalid: {reason}")]
    Field { field: &'static str, reason: String },
    #[error("field `event_type` is invalid: {0}")]
    UnknownEventType(#[from] fp_domain::UnknownEventType),
}

impl DecodeError {
    /// The contract's rejection code for an event that does not decode.
    pub fn rejection_reason(&self) -> RejectionReason {
        match self {
            DecodeError::Protobuf(_) => RejectionReason::Undecodable,
            DecodeError::UnknownEventType(_) => RejectionReason::UnknownEventType,
            DecodeError::Field { field, .. } => match *field {
                "id" => RejectionReason::InvalidEventId,
                "tenant_id" => RejectionReason::InvalidTenantId,
                "event_type" => RejectionReason::EventTypeMismatch,
                "occurred_at" => RejectionReason::InvalidTimestamp,
                "payload" => RejectionReason::MissingPayload,
                _ => RejectionReason::InvalidField,
            },
        }
    }
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
        Change::WebhookTest => v1::event_envelope::Payload::WebhookTest(v1::WebhookTest {}),
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

/// One event as it goes to the events exchange (`fp.events`): its body and the AMQP properties the
/// contract (`docs/publishing-events.md`) fixes. Every publisher builds it here, the api's outbox
/// relay and `fp-publisher` alike, so what they send cannot drift apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMessage {
    /// The event type, e.g. `submission.created`.
    pub routing_key: String,
    /// The event id: receivers and the dispatcher deduplicate by it.
    pub message_id: String,
    /// The encoded `EventEnvelope`.
    pub body: Vec<u8>,
}

impl EventMessage {
    /// The events exchange of the default namespace (`fp`).
    pub const EXCHANGE: &'static str = "fp.events";
    /// AMQP `content_type` of every event: the one the dispatcher checks for.
    pub const CONTENT_TYPE: &'static str = fp_domain::inbound_event::CONTENT_TYPE;
    /// AMQP `type` of every event: the protobuf message its body is, which names the schema
    /// version (`v1`). The dispatcher refuses another (`unsupported_schema`).
    pub const MESSAGE_TYPE: &'static str = fp_domain::inbound_event::MESSAGE_TYPE;
    /// AMQP `delivery_mode`: persistent.
    pub const DELIVERY_MODE: u8 = 2;

    pub fn of_event(event: &Event) -> Self {
        Self::encoded(event.id, event.event_type().as_str(), encode_event(event))
    }

    /// An event encoded earlier: the api's outbox keeps the bytes made when the change was
    /// committed.
    pub fn encoded(event_id: Uuid, event_type: &str, body: Vec<u8>) -> Self {
        EventMessage {
            routing_key: event_type.to_owned(),
            message_id: event_id.to_string(),
            body,
        }
    }
}

/// Decodes and validates an event from the broker.
pub fn decode_event(bytes: &[u8]) -> Result<Event, DecodeError> {
    event_from_envelope(v1::EventEnvelope::decode(bytes)?)
}

/// One attempt of one delivery to one endpoint: a retry, a deferred attempt or a redelivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryJob {
    pub content: JobContent,
    pub delivery_id: DeliveryId,
    pub attempt_number: u32,
    /// Asked for by the tenant: one attempt, final whatever its outcome.
    pub manual: bool,
}

/// What a job sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobContent {
    /// The event, rendered and signed anew.
    Event(Event),
    /// The exact body of an earlier attempt, signed anew.
    Stored(StoredRequest),
}

/// The request of an earlier attempt, as its attempt record stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRequest {
    pub tenant_id: Uuid,
    pub event_id: Uuid,
    pub event_type: EventType,
    /// The endpoint it went to. It is sent again to the endpoint's current URL, while that one
    /// takes the format the body was made for (`fp_domain::format::takes_body_made_for`).
    pub url: String,
    pub body: Vec<u8>,
}

impl DeliveryJob {
    pub fn tenant_id(&self) -> Uuid {
        match &self.content {
            JobContent::Event(event) => event.tenant_id,
            JobContent::Stored(stored) => stored.tenant_id,
        }
    }

    pub fn event_id(&self) -> Uuid {
        match &self.content {
            JobContent::Event(event) => event.id,
            JobContent::Stored(stored) => stored.event_id,
        }
    }

    pub fn event_type(&self) -> EventType {
        match &self.content {
            JobContent::Event(event) => event.event_type(),
            JobContent::Stored(stored) => stored.event_type,
        }
    }
}

pub fn encode_job(job: &DeliveryJob) -> Vec<u8> {
    let content = match &job.content {
        JobContent::Event(event) => v1::delivery_job::Content::Event(envelope_from_event(event)),
        JobContent::Stored(stored) => v1::delivery_job::Content::StoredRequest(v1::StoredRequest {
            tenant_id: stored.tenant_id.to_string(),
            event_id: stored.event_id.to_string(),
            event_type: stored.event_type.as_str().to_owned(),
            url: stored.url.clone(),
            body: stored.body.clone(),
        }),
    };
    v1::DeliveryJob {
        content: Some(content),
        delivery_id: job.delivery_id.to_string(),
        attempt_number: job.attempt_number,
        manual: job.manual,
    }
    .encode_to_vec()
}

pub fn decode_job(bytes: &[u8]) -> Result<DeliveryJob, DecodeError> {
    let job = v1::DeliveryJob::decode(bytes)?;
    if job.attempt_number < 1 {
        return Err(field_error("attempt_number", "must be at least 1"));
    }
    let content = match job.content {
        Some(v1::delivery_job::Content::Event(envelope)) => {
            JobContent::Event(event_from_envelope(envelope)?)
        }
        Some(v1::delivery_job::Content::StoredRequest(stored)) => {
            JobContent::Stored(StoredRequest {
                tenant_id: uuid_from("stored_request.tenant_id", &stored.tenant_id)?,
                event_id: uuid_from("stored_request.event_id", &stored.event_id)?,
                event_type: stored
                    .event_type
                    .parse()
                    .map_err(|err| field_error("stored_request.event_type", err))?,
                url: stored.url,
                body: stored.body,
            })
        }
        None => return Err(field_error("content", "absent")),
    };
    Ok(DeliveryJob {
        content,
        delivery_id: DeliveryId(uuid_from("delivery_id", &job.delivery_id)?),
        attempt_number: job.attempt_number,
        manual: job.manual,
    })
}

fn event_from_envelope(envelope: v1::EventEnvelope) -> Result<Event, DecodeError> {
    // Named first: a payload this version does not know comes with a type it does not know.
    envelope.event_type.parse::<EventType>()?;
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
        Some(v1::event_envelope::Payload::WebhookTest(v1::WebhookTest {})) => Change::WebhookTest,
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
    fn a_batch_of_encoded_records_is_the_batch_message() {
        let records: Vec<v1::DeliveryAttempt> = (1..=3)
            .map(|number| v1::DeliveryAttempt {
                attempt_id: format!("attempt {number}"),
                attempt_number: number,
                request_body: vec![7; 200 * number as usize],
                traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
                ..v1::DeliveryAttempt::default()
            })
            .collect();
        let encoded: Vec<Vec<u8>> = records
            .iter()
            .map(|record| record.encode_to_vec())
            .collect();
        let batch = encode_attempt_batch(&encoded);
        assert_eq!(
            batch,
            v1::DeliveryAttemptBatch {
                attempts: records.clone()
            }
            .encode_to_vec()
        );
        assert_eq!(
            v1::DeliveryAttemptBatch::decode(batch.as_slice())
                .expect("a batch")
                .attempts,
            records
        );
        assert!(encode_attempt_batch(&[]).is_empty());
    }

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
            content: JobContent::Event(event),
            attempt_number: 3,
            manual: false,
        };
        assert_eq!(decode_job(&encode_job(&job)).expect("decodes"), job);
        let zeroth = DeliveryJob {
            attempt_number: 0,
            ..job
        };
        assert!(decode_job(&encode_job(&zeroth)).is_err());
    }

    #[test]
    fn test_events_round_trip() {
        let event = Event {
            id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            occurred_at: DateTime::from_timestamp(1_710_498_600, 0).expect("time"),
            change: Change::WebhookTest,
        };
        let envelope = envelope_from_event(&event);
        assert_eq!(envelope.event_type, "webhook.test");
        assert_eq!(
            decode_event(&envelope.encode_to_vec()).expect("decodes"),
            event
        );
    }

    #[test]
    fn manual_redelivery_jobs_carry_the_stored_request_byte_for_byte() {
        let stored = StoredRequest {
            tenant_id: Uuid::now_v7(),
            event_id: Uuid::now_v7(),
            event_type: EventType::SubmissionStatusChanged,
            url: "https://a.example/hook".into(),
            body: br#"{"event":"submission.status_changed","data":{"text":"\u00e9 \xff"}}"#
                .to_vec(),
        };
        let job = DeliveryJob {
            delivery_id: DeliveryId::for_event_and_endpoint(stored.event_id, &stored.url),
            content: JobContent::Stored(stored),
            attempt_number: 4,
            manual: true,
        };
        let decoded = decode_job(&encode_job(&job)).expect("decodes");
        assert_eq!(decoded, job);
        assert_eq!(decoded.event_type(), EventType::SubmissionStatusChanged);

        // Fields a dispatcher relies on are checked, naming the field.
        let mut wire = v1::DeliveryJob::decode(encode_job(&job).as_slice()).expect("wire form");
        if let Some(v1::delivery_job::Content::StoredRequest(stored)) = &mut wire.content {
            stored.event_type = "submission.deleted".into();
        }
        let error = decode_job(&wire.encode_to_vec()).expect_err("unknown type");
        assert!(
            error.to_string().contains("stored_request.event_type"),
            "{error}"
        );
        wire.content = None;
        let error = decode_job(&wire.encode_to_vec()).expect_err("no content");
        assert!(error.to_string().contains("content"), "{error}");
    }

    #[test]
    fn a_job_from_before_the_oneof_still_decodes() {
        // Field 1 kept its number when it moved into `content`, so jobs already parked in delay
        // queues by the previous version decode as event jobs.
        #[derive(Clone, PartialEq, prost::Message)]
        struct OldJob {
            #[prost(message, optional, tag = "1")]
            event: Option<v1::EventEnvelope>,
            #[prost(string, tag = "2")]
            delivery_id: String,
            #[prost(uint32, tag = "3")]
            attempt_number: u32,
        }
        let event = Event {
            id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            occurred_at: DateTime::from_timestamp(1_710_498_600, 0).expect("time"),
            change: Change::WebhookTest,
        };
        let delivery_id = DeliveryId::for_event_and_endpoint(event.id, "https://a.example/");
        let old = OldJob {
            event: Some(envelope_from_event(&event)),
            delivery_id: delivery_id.to_string(),
            attempt_number: 2,
        };
        let decoded = decode_job(&old.encode_to_vec()).expect("decodes");
        assert_eq!(
            decoded,
            DeliveryJob {
                content: JobContent::Event(event),
                delivery_id,
                attempt_number: 2,
                manual: false,
            }
        );
    }

    #[test]
    fn attempt_records_carry_the_manual_mark() {
        let record = v1::DeliveryAttempt {
            attempt_id: Uuid::now_v7().to_string(),
            manual: true,
            r#final: true,
            ..v1::DeliveryAttempt::default()
        };
        let decoded =
            v1::DeliveryAttempt::decode(record.encode_to_vec().as_slice()).expect("decodes");
        assert!(decoded.manual && decoded.r#final);
        assert!(!v1::DeliveryAttempt::default().manual);
    }

    #[test]
    fn an_event_message_carries_the_event_id_and_type_beside_its_envelope() {
        let event = Event {
            id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            occurred_at: DateTime::from_timestamp(1_710_498_600, 0).expect("time"),
            change: Change::WebhookTest,
        };
        let message = EventMessage::of_event(&event);
        assert_eq!(message.routing_key, "webhook.test");
        assert_eq!(message.message_id, event.id.to_string());
        assert_eq!(decode_event(&message.body).expect("decodes"), event);
        assert_eq!(
            EventMessage::encoded(event.id, "webhook.test", encode_event(&event)),
            message
        );
    }

    #[test]
    fn fields_of_a_newer_schema_are_skipped() {
        let event = Event {
            id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            occurred_at: DateTime::from_timestamp(1_710_498_600, 0).expect("time"),
            change: Change::WebhookTest,
        };
        let mut bytes = encode_event(&event);
        // Field 99, wire type 2 (length-delimited), 3 bytes: what a newer publisher may add.
        bytes.extend_from_slice(&[0x9a, 0x06, 3, b'n', b'e', b'w']);
        assert_eq!(decode_event(&bytes).expect("decodes"), event);
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
        assert_eq!(error.rejection_reason(), RejectionReason::EventTypeMismatch);
        envelope.event_type = "submission.deleted".into();
        let error = decode_event(&envelope.encode_to_vec()).expect_err("unknown type");
        assert_eq!(error.rejection_reason(), RejectionReason::UnknownEventType);
        envelope.event_type = "submission.created".into();
        envelope.tenant_id = "nope".into();
        let error = decode_event(&envelope.encode_to_vec()).expect_err("tenant id");
        assert_eq!(error.rejection_reason(), RejectionReason::InvalidTenantId);
        envelope.payload = None;
        let error = decode_event(&envelope.encode_to_vec()).expect_err("no payload");
        assert_eq!(error.rejection_reason(), RejectionReason::MissingPayload);
        assert_eq!(
            decode_event(b"\xff\xff\xff")
                .expect_err("garbage")
                .rejection_reason(),
            RejectionReason::Undecodable
        );
    }
}
