//! Failures shown as pages of the site: a readable message for the user, the cause in the log.

use std::error::Error as _;

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::ContentType;
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpMessage, HttpResponse, ResponseError, web};
use fp_store::StoreError;

use crate::AppState;
use crate::session::{SESSION_COOKIE, removal_cookie};
use crate::views::ErrorPage;

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("database access failed")]
    Database(#[from] StoreError),
    #[error("template rendering failed")]
    Template(#[from] tera::Error),
    #[error("random bytes unavailable")]
    Random(#[from] crate::session::RandomFailed),
    #[error("the api call failed")]
    Api(#[from] crate::api_client::ApiClientError),
    /// The api answered in a way the page cannot handle (a 5xx, or a refusal of the session).
    #[error("the api answered {status}: {message}")]
    ApiRefused { status: u16, message: String },
    /// A form whose CSRF token does not match the browser's cookie: stale, or sent by another site.
    #[error("form token rejected")]
    StaleForm,
    /// No valid session: answered with a redirect to the log-in page.
    #[error("sign-in required")]
    SignInRequired,
    /// Signed in, but the role may not open the page.
    #[error("not allowed for this role")]
    Forbidden,
    #[error("no such page")]
    NotFound,
}

impl PageError {
    /// An api answer the page has no place for: a session the api no longer knows signs the user
    /// out, a refused role is a 403, anything else a failure.
    pub fn refused_by_api(answer: &crate::api_client::ApiAnswer) -> Self {
        match answer.status {
            401 => PageError::SignInRequired,
            403 => PageError::Forbidden,
            status => PageError::ApiRefused {
                status,
                message: answer.error().0.unwrap_or_default().to_owned(),
            },
        }
    }

    /// Catalog paths of the page's heading and message.
    fn texts(&self) -> (&'static str, &'static str) {
        match self {
            PageError::Database(_) => (
                "common.errors.generic_heading",
                "common.errors.database_message",
            ),
            PageError::Template(_) | PageError::Random(_) => (
                "common.errors.generic_heading",
                "common.errors.render_message",
            ),
            PageError::Api(_) | PageError::ApiRefused { .. } => {
                ("common.errors.generic_heading", "common.errors.api_message")
            }
            PageError::StaleForm => (
                "common.errors.stale_form_heading",
                "common.errors.retry_message",
            ),
            PageError::SignInRequired | PageError::Forbidden => (
                "common.errors.forbidden_heading",
                "common.errors.forbidden_message",
            ),
            PageError::NotFound => (
                "common.errors.not_found_heading",
                "common.errors.not_found_message",
            ),
        }
    }
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self {
            PageError::StaleForm | PageError::Forbidden => StatusCode::FORBIDDEN,
            PageError::SignInRequired => StatusCode::UNAUTHORIZED,
            PageError::NotFound => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A plain-text answer; [`render_error_page`] replaces it with the site's error page.
    fn error_response(&self) -> HttpResponse {
        if self.status_code().is_server_error() {
            tracing::error!(error = %cause_chain(self), "request failed");
        }
        HttpResponse::build(self.status_code())
            .content_type(ContentType::plaintext())
            .body(self.to_string())
    }
}

/// `outer: inner: innermost`, for the log.
fn cause_chain(error: &PageError) -> String {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Many errors already print their source (`query failed: {0}`); say it once.
        if !chain.ends_with(&cause_text) {
            chain.push_str(": ");
            chain.push_str(&cause_text);
        }
        source = cause.source();
    }
    chain
}

/// Middleware hook: turns every error a handler or extractor returned into an HTML page with the
/// site's layout. Responses a handler built itself (such as the log-in form answered with 401)
/// carry no error and pass through untouched.
pub fn render_error_page<B: MessageBody + 'static>(
    response: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let Some(error) = response.response().error() else {
        return Ok(ErrorHandlerResponse::Response(
            response.map_into_left_body(),
        ));
    };
    let status = response.status();
    let page_error = error.as_error::<PageError>();
    if matches!(page_error, Some(PageError::SignInRequired)) {
        let (request, _) = response.into_parts();
        let redirect = crate::pages::see_other(crate::pages::LOGIN_PATH)
            .cookie(removal_cookie(SESSION_COOKIE))
            .finish();
        return Ok(ErrorHandlerResponse::Response(
            ServiceResponse::new(request, redirect).map_into_right_body(),
        ));
    }
    let (heading, message) = match page_error {
        Some(page_error) => page_error.texts(),
        // Raised by actix itself, e.g. a form body that cannot be parsed.
        None if status.is_client_error() => (
            "common.errors.bad_request_heading",
            "common.errors.retry_message",
        ),
        None => (
            "common.errors.generic_heading",
            "common.errors.generic_message",
        ),
    };

    let (request, _) = response.into_parts();
    let rendered = request.app_data::<web::Data<AppState>>().map(|state| {
        let (heading, message) = (state.text(&request, heading), state.text(&request, message));
        let signed_in = request
            .extensions()
            .get::<crate::pages::SignedInUser>()
            .cloned();
        let page = ErrorPage {
            layout: state.layout(&request, signed_in.as_ref(), ""),
            heading,
            message,
        };
        state
            .templates
            .render("error.html", &page)
            .map_err(|error| (error, format!("{heading}. {message}")))
    });
    let new_response = match rendered {
        Some(Ok(html)) => HttpResponse::build(status)
            .content_type(ContentType::html())
            .body(html),
        Some(Err((error, plain))) => {
            tracing::error!(%error, "the error page could not be rendered");
            HttpResponse::build(status)
                .content_type(ContentType::plaintext())
                .body(plain)
        }
        None => HttpResponse::build(status)
            .content_type(ContentType::plaintext())
            .body(status.to_string()),
    };
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(request, new_response).map_into_right_body(),
    ))
}
