//! A request id on every answer (`X-Request-Id`) and on every log line written while handling it,
//! so a tenant quoting the id from a response leads straight to the server's log of that request.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing::Instrument;
use uuid::Uuid;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest caller-chosen id that is kept; longer or odd ones are replaced by ours.
const MAX_CALLER_ID_LEN: usize = 128;

/// Uses the caller's id when it is a plain token (a gateway may have set one), else a new UUIDv7.
fn request_id_for(req: &ServiceRequest) -> String {
    req.headers()
        .get(&HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            (1..=MAX_CALLER_ID_LEN).contains(&id.len())
                && id
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"-_.:".contains(&byte))
        })
        .map_or_else(|| Uuid::now_v7().to_string(), str::to_owned)
}

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = request_id_for(&req);
    // The request's OpenTelemetry server span (continuing the caller's `traceparent`): its
    // attributes are the method and the route template; the path is only logged.
    let span = fp_telemetry::http_server::server_span(&req);
    span.record("request_id", id.as_str());
    let method = req.method().clone();
    let path = req.path().to_owned();
    let started = Instant::now();
    // Handlers' and extractors' errors are already responses here (actix turns them into answers
    // at the route), so every answer passes this point.
    let mut response = next.call(req).instrument(span.clone()).await?;
    let status = response.status().as_u16();
    fp_telemetry::http_server::record_status(&span, status);
    span.in_scope(|| {
        tracing::info!(
            %method,
            %path,
            status,
            duration_ms = started.elapsed().as_millis() as u64,
            "handled"
        );
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    Ok(response)
}
