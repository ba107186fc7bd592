//! The HTTP request a delivery sends: body and headers, signed when the tenant set a secret.

use crate::event::{DeliveryId, Event, EventType};
use crate::format::{EndpointFormat, render_body};
use crate::signing::{SigningSecrets, feedbackpulse_signature, standard_webhooks_signature_header};

pub const USER_AGENT: &str = concat!("FeedbackPulse-Webhooks/", env!("CARGO_PKG_VERSION"));

/// A request ready to send; `body` is exactly the signed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRequest {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Builds the request for `event` to an endpoint of `format`, at `unix_time` (the signing time, in
/// seconds), unsigned when `secrets` is `None`. During a rotation `webhook-signature` carries the
/// current and the previous secret's entries, while `X-FeedbackPulse-Signature` (one signature
/// only) is made with the current secret alone.
pub fn build_request(
    event: &Event,
    format: EndpointFormat,
    delivery_id: DeliveryId,
    secrets: Option<SigningSecrets<'_>>,
    unix_time: i64,
) -> WebhookRequest {
    let body = render_body(event, format);
    build_stored_request(event.event_type(), delivery_id, body, secrets, unix_time)
}

/// Builds the request that sends `body`, the exact bytes an earlier attempt of `delivery_id` sent,
/// again (a manual redelivery): same body and delivery id, signed anew at `unix_time` with the
/// endpoint's secrets of now. [`build_request`] signs through here too, so both sign alike.
pub fn build_stored_request(
    event_type: EventType,
    delivery_id: DeliveryId,
    body: Vec<u8>,
    secrets: Option<SigningSecrets<'_>>,
    unix_time: i64,
) -> WebhookRequest {
    let delivery = delivery_id.to_string();
    let mut headers = vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        ("User-Agent".to_owned(), USER_AGENT.to_owned()),
        (
            "X-FeedbackPulse-Event".to_owned(),
            event_type.as_str().to_owned(),
        ),
        ("X-FeedbackPulse-Delivery".to_owned(), delivery.clone()),
        ("webhook-id".to_owned(), delivery.clone()),
        ("webhook-timestamp".to_owned(), unix_time.to_string()),
    ];
    if let Some(secrets) = secrets {
        headers.push((
            "X-FeedbackPulse-Signature".to_owned(),
            feedbackpulse_signature(secrets.current, &body),
        ));
        headers.push((
            "webhook-signature".to_owned(),
            standard_webhooks_signature_header(secrets, &delivery, unix_time, &body),
        ));
    }
    WebhookRequest { headers, body }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use uuid::Uuid;

    use super::*;
    use crate::event::Change;
    use crate::signing::{
        WebhookSecret, standard_webhooks_signature, verify_feedbackpulse_signature,
        verify_standard_webhooks_signature,
    };
    use crate::submission::{Submission, SubmissionStatus};

    fn event() -> Event {
        Event {
            id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            occurred_at: Utc::now(),
            change: Change::SubmissionCreated {
                submission: Submission {
                    id: 1,
                    campaign_id: 2,
                    star_rating: 4,
                    text_feedback: "ok".into(),
                    customer_name: None,
                    status: SubmissionStatus::Pending,
                },
            },
        }
    }

    fn header<'a>(request: &'a WebhookRequest, name: &str) -> Option<&'a str> {
        request
            .headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    #[test]
    fn signed_request_carries_both_signatures_over_the_exact_body() {
        let event = event();
        let delivery = DeliveryId::for_event_and_endpoint(event.id, "https://x.example/");
        let secret = WebhookSecret::new("s3cret-value");
        let request = build_request(
            &event,
            EndpointFormat::Custom,
            delivery,
            Some(SigningSecrets {
                current: &secret,
                previous: None,
            }),
            1_700_000_000,
        );
        assert_eq!(request.body, crate::payload::custom_json_body(&event));
        let signature = header(&request, "X-FeedbackPulse-Signature").expect("signed");
        assert!(verify_feedbackpulse_signature(
            &secret,
            &request.body,
            signature
        ));
        assert_eq!(
            header(&request, "webhook-id"),
            Some(delivery.to_string().as_str())
        );
        assert_eq!(
            header(&request, "X-FeedbackPulse-Delivery"),
            Some(delivery.to_string().as_str())
        );
        assert_eq!(
            header(&request, "X-FeedbackPulse-Event"),
            Some("submission.created")
        );
        assert_eq!(
            header(&request, "webhook-signature"),
            Some(
                standard_webhooks_signature(
                    &secret,
                    &delivery.to_string(),
                    1_700_000_000,
                    &request.body
                )
                .as_str()
            )
        );
    }

    #[test]
    fn during_a_rotation_only_webhook_signature_carries_the_previous_secret() {
        let event = event();
        let delivery = DeliveryId::for_event_and_endpoint(event.id, "https://x.example/");
        let new = WebhookSecret::new("the-new-secret");
        let old = WebhookSecret::new("the-old-secret");
        let request = build_request(
            &event,
            EndpointFormat::Custom,
            delivery,
            Some(SigningSecrets {
                current: &new,
                previous: Some(&old),
            }),
            1_700_000_000,
        );
        let id = delivery.to_string();
        let entries = header(&request, "webhook-signature").expect("signed");
        assert_eq!(
            entries,
            format!(
                "{} {}",
                standard_webhooks_signature(&new, &id, 1_700_000_000, &request.body),
                standard_webhooks_signature(&old, &id, 1_700_000_000, &request.body)
            )
        );
        for secret in [&new, &old] {
            assert!(verify_standard_webhooks_signature(
                secret,
                &id,
                1_700_000_000,
                &request.body,
                entries
            ));
        }
        let legacy = header(&request, "X-FeedbackPulse-Signature").expect("signed");
        assert!(verify_feedbackpulse_signature(&new, &request.body, legacy));
        assert!(!verify_feedbackpulse_signature(&old, &request.body, legacy));
        assert_eq!(
            request
                .headers
                .iter()
                .filter(|(name, _)| name.eq_ignore_ascii_case("webhook-signature"))
                .count(),
            1,
            "one header with space-separated entries, not one header per secret"
        );
    }

    #[test]
    fn unsigned_request_has_no_signature_headers() {
        let event = event();
        let request = build_request(
            &event,
            EndpointFormat::Slack,
            DeliveryId::for_event_and_endpoint(event.id, "https://x.example/"),
            None,
            1,
        );
        assert_eq!(header(&request, "X-FeedbackPulse-Signature"), None);
        assert_eq!(header(&request, "webhook-signature"), None);
        assert_eq!(header(&request, "Content-Type"), Some("application/json"));
    }

    #[test]
    fn a_stored_request_is_the_same_body_and_ids_signed_anew() {
        let event = event();
        let delivery = DeliveryId::for_event_and_endpoint(event.id, "https://x.example/");
        let secret = WebhookSecret::new("s3cret-value");
        let secrets = || {
            Some(SigningSecrets {
                current: &secret,
                previous: None,
            })
        };
        let first = build_request(
            &event,
            EndpointFormat::Custom,
            delivery,
            secrets(),
            1_700_000_000,
        );
        let again = build_stored_request(
            EventType::SubmissionCreated,
            delivery,
            first.body.clone(),
            secrets(),
            1_700_000_600,
        );
        // What a fresh render at the new time would send, header for header.
        assert_eq!(
            again,
            build_request(
                &event,
                EndpointFormat::Custom,
                delivery,
                secrets(),
                1_700_000_600
            )
        );
        assert_eq!(header(&again, "webhook-timestamp"), Some("1700000600"));
        assert_ne!(
            header(&again, "webhook-signature"),
            header(&first, "webhook-signature")
        );
    }
}
