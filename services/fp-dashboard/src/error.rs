//! Failures shown as pages of the site: a readable message for the user, the cause in the log.

use std::error::Error as _;

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::ContentType;
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpResponse, ResponseError, web};
use fp_store::StoreError;

use crate::AppState;
use crate::views::ErrorPage;

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("database access failed")]
    Database(#[from] StoreError),
    #[error("template rendering failed")]
    Template(#[from] tera::Error),
    #[error("the password check did not complete")]
    PasswordCheck(#[from] actix_web::error::BlockingError),
    #[error("random bytes unavailable")]
    Random(#[from] crate::session::RandomFailed),
    /// A form whose CSRF token does not match the browser's cookie: stale, or sent by another site.
    #[error("form token rejected")]
    StaleForm,
    #[error("no such page")]
    NotFound,
}

impl PageError {
    fn heading(&self) -> &'static str {
        match self {
            PageError::StaleForm => "This form has expired",
            PageError::NotFound => "Page not found",
            _ => "Something went wrong",
        }
    }

    fn user_message(&self) -> &'static str {
        match self {
            PageError::Database(_) => {
                "The dashboard could not read from its database. The problem has been logged; please try again in a moment."
            }
            PageError::PasswordCheck(_) => {
                "Your log-in could not be checked. Please try again in a moment."
            }
            PageError::Template(_) | PageError::Random(_) => {
                "This page could not be displayed. The problem has been logged; please try again in a moment."
            }
            PageError::StaleForm => "Go back, reload the page and try again.",
            PageError::NotFound => "There is no page at this address.",
        }
    }
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self {
            PageError::StaleForm => StatusCode::FORBIDDEN,
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
            .body(self.user_message())
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
    let (heading, message) = match error.as_error::<PageError>() {
        Some(page_error) => (page_error.heading(), page_error.user_message()),
        // Raised by actix itself, e.g. a form body that cannot be parsed.
        None if status.is_client_error() => (
            "That request could not be handled",
            "Go back, reload the page and try again.",
        ),
        None => (
            "Something went wrong",
            "The problem has been logged; please try again in a moment.",
        ),
    };

    let (request, _) = response.into_parts();
    let page = ErrorPage {
        signed_in: None,
        heading,
        message,
    };
    let rendered = request
        .app_data::<web::Data<AppState>>()
        .map(|state| state.templates.render("error.html", &page));
    let new_response = match rendered {
        Some(Ok(html)) => HttpResponse::build(status)
            .content_type(ContentType::html())
            .body(html),
        failed => {
            if let Some(Err(error)) = failed {
                tracing::error!(%error, "the error page could not be rendered");
            }
            HttpResponse::build(status)
                .content_type(ContentType::plaintext())
                .body(format!("{heading}. {message}"))
        }
    };
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(request, new_response).map_into_right_body(),
    ))
}
