//! The OpenAPI document at `/api/v2/openapi.json`, generated from the handlers' own annotations
//! and types, so it cannot drift from what the api does.

use std::sync::LazyLock;

use actix_web::HttpResponse;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{RefOr, Response, ResponseBuilder, content::ContentBuilder};
use utoipa::{Modify, OpenApi, PartialSchema};

use crate::error::ErrorBody;
use crate::routes::{
    api_keys, deliveries, erasure, event_types, logs, redelivery, retention, sessions, submissions,
    test_event, webhook_config,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "FeedbackPulse Webhooks API",
        description = "Webhook configuration, submissions and delivery logs. Authenticate with \
                       `Authorization: Bearer <API key>` (the dashboard uses \
                       `Authorization: Session <token>` from `POST /api/v2/sessions` for its \
                       signed-in user; API keys are managed with API keys only); errors share one shape, \
                       `{\"error\": {\"code\", \"message\", \"field\"}}`, and every answer carries \
                       an `X-Request-Id`."
    ),
    paths(
        webhook_config::get,
        webhook_config::put,
        webhook_config::delete,
        retention::get,
        retention::put,
        submissions::create,
        submissions::list,
        submissions::get,
        submissions::change_status,
        erasure::erase,
        test_event::send,
        event_types::list,
        logs::list,
        logs::detail,
        deliveries::list,
        deliveries::detail,
        redelivery::redeliver_one,
        redelivery::redeliver_failed,
        redelivery::preview,
        redelivery::recovery,
        logs::admin_list,
        logs::admin_detail,
        api_keys::create,
        api_keys::list,
        api_keys::revoke,
        sessions::log_in,
        sessions::list,
        sessions::current,
        sessions::log_out,
        sessions::end,
        sessions::change_password,
        sessions::set_time_zone,
        sessions::admin_end_all,
    ),
    modifiers(&Authentication)
)]
struct ApiDoc;

/// Bearer keys on every operation, and the answers any authenticated route can give.
struct Authentication;

const SECURITY_SCHEME: &str = "api_key";

impl Modify for Authentication {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                SECURITY_SCHEME,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some("An API key: a tenant's, or a superadmin's for /admin"))
                        .build(),
                ),
            );
        openapi.security = Some(vec![SecurityRequirement::new(
            SECURITY_SCHEME,
            Vec::<String>::new(),
        )]);
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                add_common_errors(operation);
                add_request_id_header(operation);
            }
        }
    }
}

/// Every answer carries `X-Request-Id` (see `request_id`).
fn add_request_id_header(operation: &mut Operation) {
    for response in operation.responses.responses.values_mut() {
        if let RefOr::T(response) = response {
            response.headers.insert(
                crate::request_id::HEADER.as_str().to_owned(),
                RefOr::T(
                HeaderBuilder::new()
                    .schema(Some(String::schema()))
                    .description(Some(
                        "Names this request in the server's logs; the caller's own if it sent a \
                         plain one",
                    ))
                    .build()),
            );
        }
    }
}

fn add_common_errors(operation: &mut Operation) {
    let any_route = [
        ("401", "No API key, or one that is unknown or revoked"),
        ("403", "The key's role may not use this route"),
        (
            "500",
            "An internal error; the request id leads to the server's log",
        ),
        (
            "503",
            "A dependency (the database, or the broker where the route publishes) is unreachable; \
             nothing was changed: try again after `Retry-After` seconds",
        ),
    ];
    let with_body = [
        ("400", "The body is not JSON"),
        ("413", "The body is larger than 64 KiB"),
    ];
    let takes_body = operation.request_body.is_some();
    for (status, description) in any_route
        .into_iter()
        .chain(with_body.into_iter().filter(|_| takes_body))
    {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| error_response(description));
    }
    if let Some(RefOr::T(unavailable)) = operation.responses.responses.get_mut("503") {
        unavailable.headers.insert(
            "Retry-After".to_owned(),
            RefOr::T(
                HeaderBuilder::new()
                    .schema(Some(u32::schema()))
                    .description(Some("Seconds to wait before trying again"))
                    .build(),
            ),
        );
    }
}

fn error_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(ErrorBody::schema()))
                    .build(),
            )
            .build(),
    )
}

static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi().to_pretty_json().unwrap_or_else(|error| {
        format!("{{\"error\": \"could not render the document: {error}\"}}")
    })
});

/// `GET /api/v2/openapi.json`, open to all: it describes the api, it holds no data.
pub async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_with_bearer_auth_and_error_answers() {
        let document: serde_json::Value =
            serde_json::from_str(&DOCUMENT).expect("the document is JSON");
        assert!(
            document["openapi"]
                .as_str()
                .is_some_and(|version| version.starts_with("3.")),
            "{}",
            document["openapi"]
        );
        assert_eq!(
            document["components"]["securitySchemes"][SECURITY_SCHEME]["scheme"],
            "bearer"
        );
        let paths = document["paths"].as_object().expect("paths");
        for (path, item) in paths {
            for (method, operation) in item.as_object().expect("path item") {
                for status in ["401", "403", "500"] {
                    assert!(
                        operation["responses"][status].is_object(),
                        "{method} {path} lacks {status}"
                    );
                }
            }
        }
    }
}
