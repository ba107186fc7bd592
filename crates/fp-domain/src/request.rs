//! The HTTP request a delivery sends: body and headers, signed when the tenant set a secret.

use crate::event::{DeliveryId, Event};
use crate::format::{EndpointFormat, render_body};
use crate::signing::{WebhookSecret, feedbackpulse_signature, standard_webhooks_signature};

pub const USER_AGENT: &str = concat!("FeedbackPulse-Webhooks/", env!("CARGO_PKG_VERSION"));

/// A request ready to send; `body` is exactly the signed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRequest {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Builds the request for `event` to an endpoint of `format`, at `unix_time` (the signing time, in
/// seconds).
pub fn build_request(
    event: &Event,
    format: EndpointFormat,
    delivery_id: DeliveryId,
    secret: Option<&WebhookSecret>,
    unix_time: i64,
) -> WebhookRequest {
    let body = render_body(event, format);
    let delivery = delivery_id.to_string();
    let mut headers = vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        ("User-Agent".to_owned(), USER_AGENT.to_owned()),
        (
            "X-FeedbackPulse-Event".to_owned(),
            event.event_type().as_str().to_owned(),
        ),
        ("X-FeedbackPulse-Delivery".to_owned(), delivery.clone()),
        ("webhook-id".to_owned(), delivery.clone()),
        ("webhook-timestamp".to_owned(), unix_time.to_string()),
    ];
    if let Some(secret) = secret {
        headers.push((
            "X-FeedbackPulse-Signature".to_owned(),
            feedbackpulse_signature(secret, &body),
        ));
        headers.push((
            "webhook-signature".to_owned(),
            standard_webhooks_signature(secret, &delivery, unix_time, &body),
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
    use crate::signing::verify_feedbackpulse_signature;
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
            Some(&secret),
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
}
