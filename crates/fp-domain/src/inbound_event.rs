//! What the dispatcher accepts from a publisher on the events exchange, and why it refuses the rest.
//!
//! Any internal service may publish events (`docs/publishing-events.md`), so the dispatcher trusts
//! nothing in one: each is checked against these rules before anything is looked up or sent. A
//! refused event is dead-lettered with its [`RejectionReason`] code, never delivered and never
//! retried. The codes are part of the publishing contract: they never change meaning.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};

use crate::event::{Change, Event};
use crate::submission::{Submission, check_submission_fields};

/// The largest encoded envelope accepted. The largest valid event (a submission with the longest
/// text and name the api takes, 4 bytes a character at worst) is about 41 KiB.
pub const MAX_ENVELOPE_BYTES: usize = 64 * 1024;

/// How far ahead of the dispatcher's clock `occurred_at` may be: clock skew between hosts.
pub const MAX_CLOCK_SKEW: TimeDelta = TimeDelta::minutes(5);

/// How old an event may be when it reaches a dispatcher. Longer than any outage the queues are
/// meant to ride out (an event waits in the queue meanwhile), shorter than anything a tenant
/// would still want announced: an importer replaying last year's data must not notify anyone.
pub const MAX_EVENT_AGE: TimeDelta = TimeDelta::days(7);

/// How long a first delivery of an event to an endpoint is remembered across dispatchers: the same
/// event published again (a publisher's retry) within this window is not delivered again. Beyond
/// it a copy is delivered with the same delivery id, which receivers deduplicate on.
pub const DEDUP_WINDOW: TimeDelta = TimeDelta::hours(24);

/// How long an undeliverable event stays recorded for operators.
pub const UNDELIVERABLE_RETENTION: TimeDelta = TimeDelta::days(30);

/// Why an event was refused: the stable code in the dead letter's `x-fp-rejection` header and the
/// `reason` label of `fp_dispatcher_events_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectionReason {
    /// The body is not an `EventEnvelope` in protobuf.
    Undecodable,
    /// The AMQP `type` or `content_type` names another schema or encoding than v1 protobuf.
    UnsupportedSchema,
    /// The body is larger than [`MAX_ENVELOPE_BYTES`].
    TooLarge,
    /// `event_type` names no event FeedbackPulse knows.
    UnknownEventType,
    /// `event_type`, the payload and the routing key do not agree.
    EventTypeMismatch,
    /// `id` is not a UUIDv7.
    InvalidEventId,
    /// The AMQP `message_id` is set and is not the envelope's `id`.
    MessageIdMismatch,
    /// `tenant_id` is not a UUID.
    InvalidTenantId,
    /// The envelope carries no payload (or one this version does not know).
    MissingPayload,
    /// A field of the payload is out of its range (rating, ids, status).
    InvalidField,
    /// A text field is longer than the api allows for a submission.
    TextTooLong,
    /// A text field holds a NUL character, which the api never accepts.
    InvalidText,
    /// `occurred_at` is absent or not a time.
    InvalidTimestamp,
    /// `occurred_at` is more than [`MAX_CLOCK_SKEW`] ahead.
    OccurredInFuture,
    /// `occurred_at` is more than [`MAX_EVENT_AGE`] ago.
    TooOld,
}

impl RejectionReason {
    pub const ALL: [RejectionReason; 15] = [
        RejectionReason::Undecodable,
        RejectionReason::UnsupportedSchema,
        RejectionReason::TooLarge,
        RejectionReason::UnknownEventType,
        RejectionReason::EventTypeMismatch,
        RejectionReason::InvalidEventId,
        RejectionReason::MessageIdMismatch,
        RejectionReason::InvalidTenantId,
        RejectionReason::MissingPayload,
        RejectionReason::InvalidField,
        RejectionReason::TextTooLong,
        RejectionReason::InvalidText,
        RejectionReason::InvalidTimestamp,
        RejectionReason::OccurredInFuture,
        RejectionReason::TooOld,
    ];

    pub fn code(self) -> &'static str {
        match self {
            RejectionReason::Undecodable => "undecodable",
            RejectionReason::UnsupportedSchema => "unsupported_schema",
            RejectionReason::TooLarge => "too_large",
            RejectionReason::UnknownEventType => "unknown_event_type",
            RejectionReason::EventTypeMismatch => "event_type_mismatch",
            RejectionReason::InvalidEventId => "invalid_event_id",
            RejectionReason::MessageIdMismatch => "message_id_mismatch",
            RejectionReason::InvalidTenantId => "invalid_tenant_id",
            RejectionReason::MissingPayload => "missing_payload",
            RejectionReason::InvalidField => "invalid_field",
            RejectionReason::TextTooLong => "text_too_long",
            RejectionReason::InvalidText => "invalid_text",
            RejectionReason::InvalidTimestamp => "invalid_timestamp",
            RejectionReason::OccurredInFuture => "occurred_in_future",
            RejectionReason::TooOld => "too_old",
        }
    }
}

impl fmt::Display for RejectionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A refused event: the stable code, and a sentence for the operator reading the dead letter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Rejection {
    pub reason: RejectionReason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: RejectionReason, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

/// What the AMQP message around an envelope says of it, as far as the publisher set it.
#[derive(Debug, Clone, Copy, Default)]
pub struct MessageProperties<'a> {
    pub message_type: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub message_id: Option<&'a str>,
    /// The routing key it was published with to the events exchange; `None` when it came another
    /// way (a copy handed back to the queue is routed by the queue's name).
    pub routing_key: Option<&'a str>,
}

/// AMQP `type` of a v1 envelope.
pub const MESSAGE_TYPE: &str = "feedbackpulse.v1.EventEnvelope";
/// AMQP `content_type` of an envelope.
pub const CONTENT_TYPE: &str = "application/x-protobuf";

/// Checks what can be checked before decoding: the size and the declared schema. An absent `type`
/// or `content_type` is read as v1 protobuf (events published before the contract set them).
pub fn check_message(body_len: usize, properties: &MessageProperties<'_>) -> Result<(), Rejection> {
    if body_len > MAX_ENVELOPE_BYTES {
        return Err(Rejection::new(
            RejectionReason::TooLarge,
            format!("the envelope is {body_len} bytes; at most {MAX_ENVELOPE_BYTES} are accepted"),
        ));
    }
    if let Some(message_type) = properties.message_type.filter(|t| *t != MESSAGE_TYPE) {
        return Err(Rejection::new(
            RejectionReason::UnsupportedSchema,
            format!("AMQP type `{message_type}` is not `{MESSAGE_TYPE}`"),
        ));
    }
    if let Some(content_type) = properties.content_type.filter(|t| *t != CONTENT_TYPE) {
        return Err(Rejection::new(
            RejectionReason::UnsupportedSchema,
            format!("AMQP content_type `{content_type}` is not `{CONTENT_TYPE}`"),
        ));
    }
    Ok(())
}

/// Checks a decoded event against the contract's rules, at `now`.
pub fn check_event(
    event: &Event,
    properties: &MessageProperties<'_>,
    now: DateTime<Utc>,
) -> Result<(), Rejection> {
    if event.id.get_version_num() != 7 {
        return Err(Rejection::new(
            RejectionReason::InvalidEventId,
            format!("id `{}` is not a UUIDv7", event.id),
        ));
    }
    if let Some(message_id) = properties
        .message_id
        .filter(|id| *id != event.id.to_string())
    {
        return Err(Rejection::new(
            RejectionReason::MessageIdMismatch,
            format!(
                "message_id `{message_id}` is not the envelope's id `{}`",
                event.id
            ),
        ));
    }
    if event.tenant_id.is_nil() {
        return Err(Rejection::new(
            RejectionReason::InvalidTenantId,
            "tenant_id is the nil UUID",
        ));
    }
    if let Some(routing_key) = properties
        .routing_key
        .filter(|key| *key != event.event_type().as_str())
    {
        return Err(Rejection::new(
            RejectionReason::EventTypeMismatch,
            format!(
                "routing key `{routing_key}` is not the event type `{}`",
                event.event_type()
            ),
        ));
    }
    if event.occurred_at > now + MAX_CLOCK_SKEW {
        return Err(Rejection::new(
            RejectionReason::OccurredInFuture,
            format!(
                "occurred_at {} is more than {} minutes ahead",
                event.occurred_at.to_rfc3339(),
                MAX_CLOCK_SKEW.num_minutes()
            ),
        ));
    }
    if event.occurred_at < now - MAX_EVENT_AGE {
        return Err(Rejection::new(
            RejectionReason::TooOld,
            format!(
                "occurred_at {} is more than {} days ago",
                event.occurred_at.to_rfc3339(),
                MAX_EVENT_AGE.num_days()
            ),
        ));
    }
    match &event.change {
        Change::SubmissionCreated { submission }
        | Change::SubmissionStatusChanged { submission, .. } => check_submission(submission),
        Change::WebhookTest => Ok(()),
    }
}

fn check_submission(submission: &Submission) -> Result<(), Rejection> {
    if submission.id < 1 {
        return Err(Rejection::new(
            RejectionReason::InvalidField,
            "submission.id must be a positive integer",
        ));
    }
    check_submission_fields(
        submission.campaign_id,
        submission.star_rating,
        &submission.text_feedback,
        submission.customer_name.as_deref(),
    )
    .map_err(|invalid| {
        let reason = match invalid.kind {
            crate::submission::InvalidKind::OutOfRange => RejectionReason::InvalidField,
            crate::submission::InvalidKind::TooLong => RejectionReason::TextTooLong,
        };
        Rejection::new(reason, format!("submission.{invalid}"))
    })?;
    let texts = [
        Some(submission.text_feedback.as_str()),
        submission.customer_name.as_deref(),
    ];
    if texts.into_iter().flatten().any(|text| text.contains('\0')) {
        return Err(Rejection::new(
            RejectionReason::InvalidText,
            "submission text holds a NUL character",
        ));
    }
    Ok(())
}

/// Why a valid event or delivery goes to no endpoint: the `reason` label of
/// `fp_dispatcher_undeliverable_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undeliverable {
    /// An event whose tenant does not exist (never did, or was deleted while the event waited): a
    /// publisher's mistake, so it is also recorded (`undeliverable_events`) for an operator.
    UnknownTenant,
    /// An event of a tenant without a webhook config: common and expected, only counted.
    NoConfig,
    /// A retry or redelivery whose tenant's config (or the tenant) went since the delivery began:
    /// the tenant's own doing, counted and logged.
    ConfigRemoved,
}

impl Undeliverable {
    pub fn code(self) -> &'static str {
        match self {
            Undeliverable::UnknownTenant => "unknown_tenant",
            Undeliverable::NoConfig => "no_config",
            Undeliverable::ConfigRemoved => "config_removed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::example;
    use crate::submission::SubmissionStatus;
    use crate::test_clock::at;
    use uuid::Uuid;

    fn event(now: DateTime<Utc>) -> Event {
        Event {
            id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            occurred_at: now,
            change: Change::SubmissionCreated {
                submission: example::submission(),
            },
        }
    }

    fn reason_of(event: &Event, properties: &MessageProperties<'_>) -> Option<RejectionReason> {
        check_event(event, properties, at(0))
            .err()
            .map(|rejected| rejected.reason)
    }

    #[test]
    fn a_valid_event_passes() {
        let valid = event(at(0));
        let properties = MessageProperties {
            message_type: Some(MESSAGE_TYPE),
            content_type: Some(CONTENT_TYPE),
            message_id: Some(&valid.id.to_string()),
            routing_key: Some("submission.created"),
        };
        assert_eq!(check_message(100, &properties), Ok(()));
        assert_eq!(check_event(&valid, &properties, at(0)), Ok(()));
        assert_eq!(
            check_event(&valid, &MessageProperties::default(), at(0)),
            Ok(())
        );
    }

    #[test]
    fn size_and_schema_are_checked_before_decoding() {
        let none = MessageProperties::default();
        let rejected = check_message(MAX_ENVELOPE_BYTES + 1, &none).expect_err("too large");
        assert_eq!(rejected.reason, RejectionReason::TooLarge);
        assert_eq!(check_message(MAX_ENVELOPE_BYTES, &none), Ok(()));
        let v2 = MessageProperties {
            message_type: Some("feedbackpulse.v2.EventEnvelope"),
            ..none
        };
        assert_eq!(
            check_message(10, &v2).map_err(|r| r.reason),
            Err(RejectionReason::UnsupportedSchema)
        );
        let json = MessageProperties {
            content_type: Some("application/json"),
            ..none
        };
        assert_eq!(
            check_message(10, &json).map_err(|r| r.reason),
            Err(RejectionReason::UnsupportedSchema)
        );
    }

    #[test]
    fn ids_and_routing_must_agree_with_the_envelope() {
        let none = MessageProperties::default();
        let mut v4 = event(at(0));
        v4.id = Uuid::from_u128(0x1234_5678_9abc_4def_8123_4567_89ab_cdef);
        assert_eq!(reason_of(&v4, &none), Some(RejectionReason::InvalidEventId));
        let valid = event(at(0));
        let other_id = Uuid::now_v7().to_string();
        let mismatched = MessageProperties {
            message_id: Some(&other_id),
            ..none
        };
        assert_eq!(
            reason_of(&valid, &mismatched),
            Some(RejectionReason::MessageIdMismatch)
        );
        let misrouted = MessageProperties {
            routing_key: Some("webhook.test"),
            ..none
        };
        assert_eq!(
            reason_of(&valid, &misrouted),
            Some(RejectionReason::EventTypeMismatch)
        );
        let mut nil_tenant = event(at(0));
        nil_tenant.tenant_id = Uuid::nil();
        assert_eq!(
            reason_of(&nil_tenant, &none),
            Some(RejectionReason::InvalidTenantId)
        );
    }

    #[test]
    fn occurred_at_must_be_neither_ahead_nor_ancient() {
        let none = MessageProperties::default();
        let skew = MAX_CLOCK_SKEW.num_seconds();
        let age = MAX_EVENT_AGE.num_seconds();
        assert_eq!(reason_of(&event(at(skew)), &none), None);
        assert_eq!(
            reason_of(&event(at(skew + 1)), &none),
            Some(RejectionReason::OccurredInFuture)
        );
        assert_eq!(reason_of(&event(at(-age)), &none), None);
        assert_eq!(
            reason_of(&event(at(-age - 1)), &none),
            Some(RejectionReason::TooOld)
        );
    }

    #[test]
    fn submissions_obey_the_limits_the_api_enforces() {
        let none = MessageProperties::default();
        let with = |edit: &dyn Fn(&mut Submission)| {
            let mut submission = example::submission();
            edit(&mut submission);
            let event = Event {
                change: Change::SubmissionStatusChanged {
                    submission,
                    previous_status: SubmissionStatus::Pending,
                },
                ..event(at(0))
            };
            reason_of(&event, &none)
        };
        assert_eq!(with(&|_| {}), None);
        assert_eq!(
            with(&|s| s.star_rating = 6),
            Some(RejectionReason::InvalidField)
        );
        assert_eq!(with(&|s| s.id = 0), Some(RejectionReason::InvalidField));
        assert_eq!(
            with(&|s| s.campaign_id = -1),
            Some(RejectionReason::InvalidField)
        );
        let limit = crate::submission::MAX_TEXT_FEEDBACK_CHARS;
        assert_eq!(with(&|s| s.text_feedback = "é".repeat(limit)), None);
        assert_eq!(
            with(&|s| s.text_feedback = "é".repeat(limit + 1)),
            Some(RejectionReason::TextTooLong)
        );
        assert_eq!(
            with(&|s| {
                s.customer_name = Some("x".repeat(crate::submission::MAX_CUSTOMER_NAME_CHARS + 1))
            }),
            Some(RejectionReason::TextTooLong)
        );
        assert_eq!(
            with(&|s| s.text_feedback = "a\0b".into()),
            Some(RejectionReason::InvalidText)
        );
    }

    #[test]
    fn the_largest_valid_event_fits_the_size_limit() {
        // Text and name at their limits, 4 bytes a character, plus a generous allowance for ids.
        let largest = 4
            * (crate::submission::MAX_TEXT_FEEDBACK_CHARS
                + crate::submission::MAX_CUSTOMER_NAME_CHARS)
            + 1024;
        assert!(largest <= MAX_ENVELOPE_BYTES, "{largest}");
    }

    #[test]
    fn codes_are_distinct() {
        let codes: std::collections::HashSet<_> =
            RejectionReason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), RejectionReason::ALL.len());
    }
}
