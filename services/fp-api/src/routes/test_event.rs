//! `POST /api/v2/webhooks/test`: a test event to the tenant's endpoint through the real pipeline
//! (outbox, relay, broker, dispatcher). By default a `webhook.test`, which goes out whatever the
//! endpoint subscribes to; with `event_type`, that type's example from the event catalogue (`GET
//! /api/v2/event-types`), to a type the endpoint subscribes to. Rate-limited per tenant
//! (`api.rate_limits.test_event`): over the limit, a 429.

use actix_web::{HttpResponse, web};
use chrono::Utc;
use fp_domain::rate_limit::LimitedAction;
use fp_domain::{DeliveryId, EventType, example};
use fp_store::webhook_config::{self, WebhookConfigRow};
use fp_store::{PgConnection, StoreError};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::submissions::outbox_event;
use crate::AppState;
use crate::auth::AuthenticatedTenant;
use crate::error::{ApiError, ErrorBody};
use crate::json_body::OptionalJsonBody;
use crate::rate_limit;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestEventRequest {
    /// The type whose example to send (see `GET /api/v2/event-types`); absent or null:
    /// `webhook.test`. Any other type must be one the config subscribes to.
    #[schema(schema_with = event_type_or_null)]
    event_type: Option<String>,
}

/// Any event type's name, or null.
fn event_type_or_null() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .enum_values(Some(
            super::event_type_names().chain([serde_json::Value::Null]),
        ))
        .build()
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TestEventSent {
    event_id: Uuid,
    /// `X-FeedbackPulse-Delivery` of the delivery; its attempts show in the logs under this id.
    delivery_id: Uuid,
}

#[utoipa::path(
    post,
    path = "/api/v2/webhooks/test",
    tag = "webhooks",
    request_body = Option<TestEventRequest>,
    responses(
        (status = 202, description = "A test event (`webhook.test` unless `event_type` names another type) is on its way to the configured URL", body = TestEventSent),
        (status = 409, description = "No webhook config, or it is disabled", body = ErrorBody),
        (status = 422, description = "`event_type` is unknown, or a type the config does not subscribe to", body = ErrorBody),
        (status = 429, description = "The tenant's test event limit (`api.rate_limits.test_event`) is used up; nothing was sent. `Retry-After` says when one is free again", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the action is allowed again"))),
    ),
)]
pub async fn send(
    state: web::Data<AppState>,
    AuthenticatedTenant(tenant_id): AuthenticatedTenant,
    OptionalJsonBody(request): OptionalJsonBody<TestEventRequest>,
) -> Result<HttpResponse, ApiError> {
    let event_type = match request.and_then(|request| request.event_type) {
        None => EventType::WebhookTest,
        Some(name) => name
            .parse::<EventType>()
            .map_err(|err| ApiError::invalid("event_type", err.to_string()))?,
    };
    let mut conn = state.pool.get().await.map_err(StoreError::from)?;
    let config = enabled_config(&mut conn, tenant_id).await?;
    // The dispatcher delivers a submission type only to an endpoint that subscribes to it.
    if event_type != EventType::WebhookTest
        && !config.events.iter().any(|name| name == event_type.as_str())
    {
        return Err(ApiError::invalid(
            "event_type",
            format!(
                "the webhook config does not subscribe to {event_type}, so it would not be \
                 delivered: add it to `events`, or send {}, which goes out whatever the config \
                 subscribes to",
                EventType::WebhookTest
            ),
        ));
    }
    rate_limit::take(
        &mut conn,
        tenant_id,
        LimitedAction::TestEvent,
        state.rate_limits.test_event,
        1,
    )
    .await?;
    let event = outbox_event(tenant_id, Utc::now(), example::change(event_type));
    // One row, so no transaction: the dispatcher checks the config again when it delivers.
    fp_store::outbox::insert(&mut conn, &event).await?;
    let sent = TestEventSent {
        event_id: event.event_id,
        // The dispatcher derives the same id from the same event and URL.
        delivery_id: DeliveryId::for_event_and_endpoint(event.event_id, &config.url).0,
    };
    state.outbox.committed(vec![event]);
    Ok(HttpResponse::Accepted().json(sent))
}

/// The tenant's config if deliveries can go to it now; otherwise a 409 that says how to fix it,
/// in the words of both kinds of caller: a dashboard user (the Integrations page) and an API
/// client (the route).
pub(super) async fn enabled_config(
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<WebhookConfigRow, ApiError> {
    let config = webhook_config::find(conn, tenant_id)
        .await?
        .ok_or_else(|| {
            ApiError::Conflict(
                "no webhook config: set one up on the dashboard's Integrations page (or with \
                 PUT /api/v2/webhooks/config) first"
                    .to_owned(),
            )
        })?;
    if !config.enabled {
        return Err(ApiError::Conflict(
            "the webhook config is disabled, so nothing is delivered: saving it again with \
             “Enabled” ticked on the dashboard's Integrations page (or with \
             PUT /api/v2/webhooks/config) re-enables it"
                .to_owned(),
        ));
    }
    Ok(config)
}
