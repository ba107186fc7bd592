//! The server span of an actix-web request: continues the caller's `traceparent`, and carries the
//! OpenTelemetry HTTP semantic conventions' method, route template and status code. Never the
//! path or the query (ids and tokens live there), never a header value.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderMap;
use actix_web::middleware::Next;
use tracing::Instrument;
use tracing::field::Empty;

use crate::OTEL_TARGET;
use crate::propagation::{self, HeaderExtractor};

/// Reads trace headers from actix's (http 0.2) header map.
pub struct ActixHeaders<'a>(pub &'a HeaderMap);

impl HeaderExtractor for ActixHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

/// Opens the server span of `req`, a child of the caller's context when it sent one. Extra
/// fields are recorded by the caller (`request_id`); the status with [`record_status`].
pub fn server_span(req: &ServiceRequest) -> tracing::Span {
    let method = req.method().as_str().to_owned();
    // The route template (`/api/v2/submissions/{id}`), never the path itself.
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let span = tracing::info_span!(
        target: OTEL_TARGET,
        "http.server",
        "otel.name" = %format!("{method} {route}"),
        "otel.kind" = "server",
        "otel.status_code" = Empty,
        "http.request.method" = %method,
        "http.route" = %route,
        "http.response.status_code" = Empty,
        "error.type" = Empty,
        request_id = Empty,
        trace_id = Empty,
    );
    propagation::set_parent(&span, propagation::extract(&ActixHeaders(req.headers())));
    span.record("trace_id", propagation::trace_id(&span));
    span
}

/// Records the answer's status; a 5xx marks the span as an error (a 4xx is the caller's).
pub fn record_status(span: &tracing::Span, status: u16) {
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("error.type", status.to_string());
        span.record("otel.status_code", "ERROR");
    }
}

/// Middleware for services without a request span of their own (the dashboard).
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let span = server_span(&req);
    let response = next.call(req).instrument(span.clone()).await?;
    record_status(&span, response.status().as_u16());
    Ok(response)
}
