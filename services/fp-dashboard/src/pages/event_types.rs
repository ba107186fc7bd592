//! Einstellungen > Event types: the event catalogue, every type with the JSON Schema of its body
//! and an example body. Both come from fp-domain's payload code, as the api's
//! `GET /api/v2/event-types` does, so the page shows exactly what is delivered.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use fp_domain::EventType;
use fp_domain::{example, payload};
use serde::Serialize;

use super::{SignedInUser, html_response};
use crate::AppState;
use crate::error::PageError;
use crate::views::Layout;

pub const PAGE_PATH: &str = "/settings/event-types";

pub fn routes(config: &mut web::ServiceConfig) {
    config.route(PAGE_PATH, web::get().to(show));
}

#[derive(Serialize)]
struct EventTypeView {
    name: &'static str,
    /// The name with `-` for `.` and `_`, for element ids.
    anchor: String,
    description: String,
    subscribable: bool,
    /// Pretty-printed JSON.
    example: String,
    schema: String,
}

#[derive(Serialize)]
struct EventTypesPage<'a> {
    #[serde(flatten)]
    layout: Layout<'a>,
    event_types: Vec<EventTypeView>,
}

async fn show(
    state: web::Data<AppState>,
    request: HttpRequest,
    user: SignedInUser,
) -> Result<HttpResponse, PageError> {
    let event_types = EventType::ALL
        .into_iter()
        .map(|event_type| {
            let name = event_type.as_str();
            let key = name.replace('.', "_");
            EventTypeView {
                name,
                anchor: key.replace('_', "-"),
                description: state
                    .text(&request, &format!("event_types.description.{key}"))
                    .to_owned(),
                subscribable: event_type.subscribable().is_ok(),
                example: pretty(&example::body(event_type)),
                schema: pretty(&payload::custom_body_schema(event_type)),
            }
        })
        .collect();
    let page = EventTypesPage {
        layout: state.layout(&request, Some(&user), "event_types"),
        event_types,
    };
    let html = state.templates.render("event_types.html", &page)?;
    Ok(html_response(StatusCode::OK).body(html))
}

fn pretty(json: &serde_json::Value) -> String {
    // A `Value` always serializes.
    serde_json::to_string_pretty(json).unwrap_or_default()
}
