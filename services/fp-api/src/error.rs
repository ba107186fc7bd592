//! One error shape for every answer: `{"error": {"code", "message", "field"}}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use fp_domain::address_policy::{AddressCategory, Blocked};

use crate::MAX_BODY_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    MalformedJson { message: String },
    #[error("{message}")]
    InvalidField { field: String, message: String },
    /// The webhook URL is refused by the SSRF policy: a 422 on `url` whose message names the kind
    /// of address, never the address (a tenant must not learn what internal names resolve to).
    #[error("{0}")]
    UrlNotAllowed(Blocked),
    #[error("the request body is larger than {} bytes", MAX_BODY_BYTES)]
    BodyTooLarge,
    #[error("missing or invalid API key: send `Authorization: Bearer <key>`")]
    Unauthorized,
    /// A log-in (or a password change) whose email or password is wrong; the same words for
    /// both, so the answer does not tell which emails have accounts.
    #[error("invalid email or password")]
    InvalidCredentials,
    /// Too many failed log-ins from this client (for this email); carries `Retry-After`.
    #[error("too many failed log-ins: try again after {retry_after_secs} seconds")]
    Throttled { retry_after_secs: i64 },
    /// The tenant has used up its rate limit of an action (`message` names it and the limit);
    /// carries `Retry-After`.
    #[error("{message}: try again after {retry_after_secs} seconds")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
    },
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The path exists, the method does not; carries the `Allow` header's value.
    #[error("method not allowed here; allowed: {0}")]
    MethodNotAllowed(&'static str),
    /// The request is valid but the current state does not allow it.
    #[error("{0}")]
    Conflict(String),
    /// A dependency (the broker) did not take the request; nothing was done, or the message says
    /// how much was.
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedJson { .. } => "malformed_json",
            ApiError::InvalidField { .. } | ApiError::UrlNotAllowed(_) => "invalid_field",
            ApiError::BodyTooLarge => "body_too_large",
            ApiError::Unauthorized => "unauthorized",
            ApiError::InvalidCredentials => "invalid_credentials",
            ApiError::Throttled { .. } => "throttled",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

/// What a client is told to wait before trying again after a 503.
pub const RETRY_AFTER_SECONDS: u32 = 5;

impl From<fp_store::StoreError> for ApiError {
    fn from(error: fp_store::StoreError) -> Self {
        Self::from(std::sync::Arc::new(error))
    }
}

/// A failure shared by several requests (a batch of submissions committed together).
impl From<std::sync::Arc<fp_store::StoreError>> for ApiError {
    fn from(error: std::sync::Arc<fp_store::StoreError>) -> Self {
        if error.is_unreachable() {
            tracing::warn!(%error, "database unreachable");
            return ApiError::Unavailable(
                "the database is unreachable right now; nothing was changed: try again after \
                 Retry-After seconds"
                    .to_owned(),
            );
        }
        if error.is_missing_tenant() {
            // The credentials were checked, then the tenant was deleted: they are void now.
            tracing::info!(%error, "a write for a tenant deleted after its credentials were checked");
            return ApiError::Unauthorized;
        }
        ApiError::Internal(error.into())
    }
}

/// Every error answer: what went wrong, and for a bad field, which one.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ErrorDetail {
    /// Stable, for programs: `malformed_json`, `invalid_field`, `body_too_large`, `unauthorized`,
    /// `invalid_credentials`, `throttled`, `rate_limited`, `forbidden`, `not_found`, `method_not_allowed`,
    /// `conflict`, `unavailable` or `internal`.
    code: String,
    /// For people: what to change.
    message: String,
    /// The offending field (a JSON path such as `events[1]`, or a query parameter); null otherwise.
    field: Option<String>,
    /// Only when the SSRF policy refused a webhook URL, and then only if it says what kind of
    /// address the host points to: `private`, `loopback`, `link_local`, `metadata`, `multicast`
    /// or `reserved` (for clients that word the reason themselves).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson { .. } => StatusCode::BAD_REQUEST,
            ApiError::InvalidField { .. } | ApiError::UrlNotAllowed(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized | ApiError::InvalidCredentials => StatusCode::UNAUTHORIZED,
            ApiError::Throttled { .. } | ApiError::RateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(cause) = self {
            // The cause goes to the log, never to the caller.
            tracing::error!(error = format!("{cause:#}"), "request failed");
        }
        let field = match self {
            ApiError::InvalidField { field, .. } => Some(field.as_str()),
            ApiError::UrlNotAllowed(_) => Some("url"),
            _ => None,
        };
        let reason = match self {
            ApiError::UrlNotAllowed(blocked) => blocked.category().map(AddressCategory::as_str),
            _ => None,
        };
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized => {
                response.insert_header(("WWW-Authenticate", "Bearer"));
            }
            ApiError::MethodNotAllowed(allow) => {
                response.insert_header(("Allow", *allow));
            }
            ApiError::Unavailable(_) => {
                response.insert_header(("Retry-After", RETRY_AFTER_SECONDS.to_string()));
            }
            ApiError::Throttled { retry_after_secs } => {
                response.insert_header(("Retry-After", retry_after_secs.to_string()));
            }
            ApiError::RateLimited {
                retry_after_secs, ..
            } => {
                response.insert_header(("Retry-After", retry_after_secs.to_string()));
            }
            _ => {}
        }
        response.json(ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message: self.to_string(),
                field: field.map(str::to_owned),
                reason,
            },
        })
    }
}
