//! Request handlers, one module per area, and what they share: the signed-in user, the layout,
//! responses.

mod account;
mod admin;
mod integrations;
pub mod logs;

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, CacheControl, CacheDirective};
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, HttpResponseBuilder, web};
use fp_store::identity::{self, UserRow};

use crate::AppState;
use crate::error::PageError;
use crate::i18n::Lang;
use crate::session::{CsrfPurpose, SESSION_COOKIE};
use crate::views::{LanguageLink, Layout, SignedIn};

pub use account::not_found;

pub const LOGIN_PATH: &str = "/login";

pub fn routes(config: &mut web::ServiceConfig) {
    account::routes(config);
    integrations::routes(config);
    logs::routes(config);
    admin::routes(config);
}

/// The user of a valid session; a handler that takes one only runs for a signed-in user, and
/// anyone else is sent to the log-in page.
#[derive(Clone)]
pub struct SignedInUser {
    /// The session cookie's value: what CSRF tokens bind to, and what the api is called with.
    pub session: String,
    pub user: UserRow,
}

impl SignedInUser {
    /// Superadmins belong to no tenant; tenant pages are not theirs.
    pub fn tenant_id(&self) -> Result<uuid::Uuid, PageError> {
        self.user.tenant_id.ok_or(PageError::Forbidden)
    }

    pub fn require_superadmin(&self) -> Result<(), PageError> {
        match self.user.tenant_id {
            None => Ok(()),
            Some(_) => Err(PageError::Forbidden),
        }
    }

    pub fn csrf_token(&self, state: &AppState, purpose: CsrfPurpose) -> String {
        state.signer.csrf_token(purpose, &self.session)
    }

    /// Whether `token` is this session's token for `purpose`; a form without it is refused.
    pub fn check_csrf(
        &self,
        state: &AppState,
        purpose: CsrfPurpose,
        token: &str,
    ) -> Result<(), PageError> {
        if state.signer.verify_csrf(purpose, &self.session, token) {
            Ok(())
        } else {
            Err(PageError::StaleForm)
        }
    }
}

impl FromRequest for SignedInUser {
    type Error = PageError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, PageError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = request.app_data::<web::Data<AppState>>().cloned();
        let session = session_of(request);
        let request = request.clone();
        Box::pin(async move {
            let (Some(state), Some((session, user_id))) = (state, session) else {
                return Err(PageError::SignInRequired);
            };
            let mut conn = state.connection().await?;
            // Looked up on every page, so a deleted user is signed out at once.
            let user = identity::user_by_id(&mut conn, user_id)
                .await?
                .ok_or(PageError::SignInRequired)?;
            let signed_in = SignedInUser { session, user };
            // For the error pages, so a 403 keeps the user's header (navigation, log-out).
            request.extensions_mut().insert(signed_in.clone());
            Ok(signed_in)
        })
    }
}

/// The session cookie's value and the user it names, if it is ours and still valid.
pub fn session_of(request: &HttpRequest) -> Option<(String, uuid::Uuid)> {
    let state = request.app_data::<web::Data<AppState>>()?;
    let cookie = request.cookie(SESSION_COOKIE)?;
    let now = chrono::Utc::now().timestamp();
    match state.signer.verify_session(cookie.value(), now) {
        Ok(user_id) => Some((cookie.value().to_owned(), user_id)),
        Err(reason) => {
            tracing::debug!(%reason, "session cookie refused");
            None
        }
    }
}

impl AppState {
    /// The layout of a page in the request's language, for `user` if signed in.
    pub fn layout<'a>(
        &'a self,
        request: &HttpRequest,
        user: Option<&SignedInUser>,
        active_nav: &'static str,
    ) -> Layout<'a> {
        let lang = Lang::of(request);
        let here = request
            .uri()
            .path_and_query()
            .map_or("/", |path| path.as_str());
        Layout {
            t: self.catalog.texts(lang),
            lang: lang.code(),
            signed_in: user.map(|user| SignedIn {
                email: user.user.email.clone(),
                logout_csrf_token: user.csrf_token(self, CsrfPurpose::LogOut),
            }),
            is_superadmin: user.is_some_and(|user| user.user.tenant_id.is_none()),
            active_nav,
            languages: Lang::ALL
                .into_iter()
                .map(|option| LanguageLink {
                    code: option.code(),
                    href: format!(
                        "/lang/{}?back={}",
                        option.code(),
                        percent_encode_query_value(here)
                    ),
                    current: option == lang,
                })
                .collect(),
        }
    }

    /// One text in the request's language (see `Catalog::text`).
    pub fn text<'a>(&'a self, request: &HttpRequest, path: &'a str) -> &'a str {
        self.catalog.text(Lang::of(request), path)
    }
}

/// One query-string value, encoded so a path with a query of its own survives as one value.
pub fn percent_encode_query_value(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Pages show tenant data, so no cache (browser or proxy) keeps a copy.
pub fn html_response(status: StatusCode) -> HttpResponseBuilder {
    let mut response = HttpResponse::build(status);
    response
        .content_type(actix_web::http::header::ContentType::html())
        .insert_header(CacheControl(vec![CacheDirective::NoStore]));
    response
}

/// 303, so the browser follows with a GET even after a POST.
pub fn see_other(location: &str) -> HttpResponseBuilder {
    let mut response = HttpResponse::SeeOther();
    response.insert_header((header::LOCATION, location.to_owned()));
    response
}
