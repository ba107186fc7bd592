//! `GET /api/v2/event-types`: the event catalogue. Every type a webhook can receive, with the JSON
//! Schema of the body a custom endpoint gets and an example body, both made by fp-domain's payload
//! code (the schema from the types that serialize a body, the example by the function the
//! dispatcher sends with), so the catalogue cannot drift from what is delivered.

use std::sync::LazyLock;

use actix_web::HttpResponse;
use fp_domain::EventType;
use fp_domain::{example, payload};
use serde::Serialize;
use serde_json::Value;

#[derive(Serialize, utoipa::ToSchema)]
pub struct EventTypeCatalogue {
    data: Vec<EventTypeEntry>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EventTypeEntry {
    /// The type's name, as in `X-FeedbackPulse-Event` and the body's `event`.
    #[schema(value_type = String)]
    event_type: &'static str,
    #[schema(value_type = String)]
    description: &'static str,
    /// Whether a webhook config may list it in `events`; `webhook.test` is sent only on request.
    subscribable: bool,
    /// JSON Schema (draft 2020-12) of the body a custom endpoint receives; Slack and Discord
    /// endpoints get their own formats.
    #[schema(value_type = Object)]
    schema: Value,
    /// The body of the product page's example event: what `POST /api/v2/webhooks/test` sends with
    /// this `event_type`, but for its timestamp.
    #[schema(value_type = Object)]
    example: Value,
}

static CATALOGUE: LazyLock<EventTypeCatalogue> = LazyLock::new(|| EventTypeCatalogue {
    data: EventType::ALL
        .into_iter()
        .map(|event_type| EventTypeEntry {
            event_type: event_type.as_str(),
            description: event_type.description(),
            subscribable: event_type.subscribable().is_ok(),
            schema: payload::custom_body_schema(event_type),
            example: example::body(event_type),
        })
        .collect(),
});

#[utoipa::path(
    get,
    path = "/api/v2/event-types",
    tag = "webhooks",
    responses(
        (status = 200, description = "Every event type, with the schema of its body and an example", body = EventTypeCatalogue),
    ),
)]
pub async fn list() -> HttpResponse {
    HttpResponse::Ok().json(&*CATALOGUE)
}
