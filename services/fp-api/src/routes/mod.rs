//! HTTP routes of `/api/v2`.

pub(crate) mod api_keys;
pub(crate) mod logs;
pub(crate) mod redelivery;
pub(crate) mod submissions;
pub(crate) mod test_event;
pub(crate) mod webhook_config;

use actix_web::web;
use uuid::Uuid;

use crate::error::ApiError;

pub fn configure(config: &mut web::ServiceConfig) {
    // Before the scope, which would otherwise claim the path and ask for a key.
    config.route(
        "/api/v2/openapi.json",
        web::get().to(crate::openapi::document),
    );
    config.service(
        web::scope("/api/v2")
            .wrap(actix_web::middleware::from_fn(crate::auth::authenticate))
            .route("/webhooks/config", web::get().to(webhook_config::get))
            .route("/webhooks/config", web::put().to(webhook_config::put))
            .route("/webhooks/config", web::delete().to(webhook_config::delete))
            .route("/webhooks/logs", web::get().to(logs::list))
            .route("/webhooks/test", web::post().to(test_event::send))
            .route(
                "/webhooks/logs/redeliver",
                web::post().to(redelivery::redeliver_failed),
            )
            .route(
                "/webhooks/logs/{id}/redeliver",
                web::post().to(redelivery::redeliver_one),
            )
            .route("/webhooks/logs/{id}", web::get().to(logs::detail))
            .route("/admin/webhooks/logs", web::get().to(logs::admin_list))
            .route(
                "/admin/webhooks/logs/{id}",
                web::get().to(logs::admin_detail),
            )
            .route("/api-keys", web::post().to(api_keys::create))
            .route("/api-keys", web::get().to(api_keys::list))
            .route("/api-keys/{id}", web::delete().to(api_keys::revoke))
            .route("/submissions", web::post().to(submissions::create))
            .route("/submissions", web::get().to(submissions::list))
            .route("/submissions/{id}", web::get().to(submissions::get))
            .route(
                "/submissions/{id}",
                web::patch().to(submissions::change_status),
            ),
    );
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
