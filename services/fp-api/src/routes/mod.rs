//! HTTP routes of `/api/v2`.

pub(crate) mod api_keys;
pub(crate) mod deliveries;
pub(crate) mod erasure;
pub(crate) mod event_types;
pub(crate) mod logs;
pub(crate) mod redelivery;
pub(crate) mod retention;
pub(crate) mod sessions;
pub(crate) mod submissions;
pub(crate) mod test_event;
pub(crate) mod webhook_config;

use std::collections::BTreeSet;

use actix_web::{HttpRequest, web};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::error::ApiError;

pub fn configure(config: &mut web::ServiceConfig) {
    // Before the scope, which would otherwise claim the path and ask for a key.
    config.service(
        resource("/api/v2/openapi.json", "GET").route(web::get().to(crate::openapi::document)),
    );
    // Logging in needs no credential, listing sessions does: the path's own resource, before the
    // scope, with the authentication on the listing route only.
    config.service(
        resource("/api/v2/sessions", "GET, POST")
            .route(web::post().to(sessions::log_in))
            .route(
                web::get()
                    .to(sessions::list)
                    .wrap(actix_web::middleware::from_fn(crate::auth::authenticate)),
            ),
    );
    config.service(
        web::scope("/api/v2")
            .wrap(actix_web::middleware::from_fn(crate::auth::authenticate))
            .service(
                resource("/sessions/current", "GET, DELETE")
                    .route(web::get().to(sessions::current))
                    .route(web::delete().to(sessions::log_out)),
            )
            .service(resource("/sessions/{id}", "DELETE").route(web::delete().to(sessions::end)))
            .service(
                resource("/account/password", "POST")
                    .route(web::post().to(sessions::change_password)),
            )
            .service(
                resource("/account/time-zone", "PUT").route(web::put().to(sessions::set_time_zone)),
            )
            .service(
                resource("/admin/users/{id}/sessions", "DELETE")
                    .route(web::delete().to(sessions::admin_end_all)),
            )
            .service(
                resource("/webhooks/config", "GET, PUT, DELETE")
                    .route(web::get().to(webhook_config::get))
                    .route(web::put().to(webhook_config::put))
                    .route(web::delete().to(webhook_config::delete)),
            )
            .service(
                resource("/webhooks/retention", "GET, PUT")
                    .route(web::get().to(retention::get))
                    .route(web::put().to(retention::put)),
            )
            .service(resource("/webhooks/test", "POST").route(web::post().to(test_event::send)))
            .service(resource("/event-types", "GET").route(web::get().to(event_types::list)))
            .service(resource("/webhooks/logs", "GET").route(web::get().to(logs::list)))
            .service(resource("/webhooks/deliveries", "GET").route(web::get().to(deliveries::list)))
            .service(
                resource("/webhooks/deliveries/{delivery_id}", "GET")
                    .route(web::get().to(deliveries::detail)),
            )
            .service(
                resource("/webhooks/logs/redeliver", "POST")
                    .route(web::post().to(redelivery::redeliver_failed)),
            )
            .service(
                resource("/webhooks/logs/redeliver/preview", "GET")
                    .route(web::get().to(redelivery::preview)),
            )
            .service(
                resource("/webhooks/recoveries/{id}", "GET")
                    .route(web::get().to(redelivery::recovery)),
            )
            .service(resource("/webhooks/logs/{id}", "GET").route(web::get().to(logs::detail)))
            .service(
                resource("/webhooks/logs/{id}/redeliver", "POST")
                    .route(web::post().to(redelivery::redeliver_one)),
            )
            .service(resource("/admin/webhooks/logs", "GET").route(web::get().to(logs::admin_list)))
            .service(
                resource("/admin/webhooks/logs/{id}", "GET")
                    .route(web::get().to(logs::admin_detail)),
            )
            .service(
                resource("/api-keys", "GET, POST")
                    .route(web::get().to(api_keys::list))
                    .route(web::post().to(api_keys::create)),
            )
            .service(resource("/api-keys/{id}", "DELETE").route(web::delete().to(api_keys::revoke)))
            .service(
                resource("/submissions", "GET, POST")
                    .route(web::get().to(submissions::list))
                    .route(web::post().to(submissions::create)),
            )
            .service(
                resource("/submissions/{id}", "GET, PATCH")
                    .route(web::get().to(submissions::get))
                    .route(web::patch().to(submissions::change_status)),
            )
            .service(
                resource("/submissions/{id}/erase", "POST").route(web::post().to(erasure::erase)),
            ),
    );
}

/// A path whose other methods answer 405 with `Allow: allow`, in the one error shape.
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        Err::<actix_web::HttpResponse, _>(ApiError::MethodNotAllowed(allow))
    }))
}

/// An id in the path. One that is not even a UUID names nothing, so it is a 404 like any other
/// unknown id.
fn uuid_in_path(text: &str, what: &'static str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::NotFound(what))
}

/// Every path outside the routes answers in the one error shape too.
pub async fn unknown_route() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound("route"))
}

/// Refuses a query parameter the route does not take, naming it: serde would skip it, and a
/// misspelt filter would quietly widen the answer. The route's parameters are those `P` documents
/// (its `IntoParams`, also in the OpenAPI document) and `also`.
fn refuse_unknown_parameters<P: IntoParams>(
    request: &HttpRequest,
    also: &[&str],
) -> Result<(), ApiError> {
    let known: Vec<String> = P::into_params(|| None)
        .into_iter()
        .map(|parameter| parameter.name)
        .chain(also.iter().map(|&name| name.to_owned()))
        .collect();
    let unknown: BTreeSet<String> = url::form_urlencoded::parse(request.query_string().as_bytes())
        .map(|(name, _)| name.into_owned())
        .filter(|name| !known.contains(name))
        .collect();
    let Some(first) = unknown.first() else {
        return Ok(());
    };
    Err(ApiError::invalid(
        first.clone(),
        format!(
            "unknown query parameter {}; this route takes {}",
            quoted_list(&unknown),
            quoted_list(&known)
        ),
    ))
}

/// "`a`, `b`".
fn quoted_list<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    names
        .into_iter()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every event type's name, `webhook.test` included, for the document's schemas.
fn event_type_names() -> impl Iterator<Item = serde_json::Value> {
    fp_domain::EventType::ALL
        .into_iter()
        .map(|event| event.as_str().into())
}

/// A list's `limit` parameter: `default` when absent, otherwise an integer from 1 to `max`.
fn page_limit(text: Option<&str>, default: i64, max: i64) -> Result<i64, ApiError> {
    match text {
        None => Ok(default),
        Some(text) => text
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|limit| (1..=max).contains(limit))
            .ok_or_else(|| {
                ApiError::invalid("limit", format!("must be an integer from 1 to {max}"))
            }),
    }
}
