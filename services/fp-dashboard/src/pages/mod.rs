//! Request handlers, one module per area, and what they share: the signed-in user, the layout,
//! responses.

mod account;
mod admin;
pub mod deliveries;
mod event_types;
mod integrations;
pub mod logs;
mod retention;
mod sessions;

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, CacheControl, CacheDirective};
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, HttpResponseBuilder, web};
use fp_domain::time_zone::Tz;
use reqwest::Method;
use serde::Deserialize;
use uuid::Uuid;

use crate::AppState;
use crate::error::PageError;
use crate::i18n::Lang;
use crate::local_time;
use crate::session::{CsrfPurpose, SESSION_COOKIE};
use crate::views::{LanguageLink, Layout, SignedIn};

pub use account::not_found;

pub const LOGIN_PATH: &str = "/login";

pub fn routes(config: &mut web::ServiceConfig) {
    account::routes(config);
    sessions::routes(config);
    integrations::routes(config);
    event_types::routes(config);
    retention::routes(config);
    logs::routes(config);
    deliveries::routes(config);
    admin::routes(config);
}

/// Who a session belongs to, as the api tells it.
#[derive(Clone, Deserialize)]
pub struct DashboardUser {
    pub id: Uuid,
    pub email: String,
    /// `None` for a superadmin.
    pub tenant_id: Option<Uuid>,
    /// The zone the user chose to read times in; `None`: the browser's (see `local_time`).
    #[serde(default)]
    pub time_zone: Option<String>,
}

/// The user of a live session; a handler that takes one only runs for a signed-in user, and
/// anyone else is sent to the log-in page.
#[derive(Clone)]
pub struct SignedInUser {
    /// The session cookie's value: what CSRF tokens bind to, and what the api is called with.
    pub session: String,
    pub user: DashboardUser,
}

impl SignedInUser {
    /// Superadmins belong to no tenant; tenant pages are not theirs.
    pub fn tenant_id(&self) -> Result<Uuid, PageError> {
        self.user.tenant_id.ok_or(PageError::Forbidden)
    }

    pub fn require_superadmin(&self) -> Result<(), PageError> {
        match self.user.tenant_id {
            None => Ok(()),
            Some(_) => Err(PageError::Forbidden),
        }
    }

    /// The zone this user's pages show times in: their choice, else their browser's.
    pub fn time_zone(&self, request: &HttpRequest) -> Tz {
        local_time::user_zone(
            self.user.time_zone.as_deref(),
            local_time::browser_zone(request),
        )
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

/// `GET /api/v2/sessions/current`, as far as the dashboard reads it.
#[derive(Deserialize)]
struct CurrentSession {
    user: DashboardUser,
}

impl FromRequest for SignedInUser {
    type Error = PageError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, PageError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = request.app_data::<web::Data<AppState>>().cloned();
        let session = session_cookie_of(request);
        let request = request.clone();
        Box::pin(async move {
            let (Some(state), Some(session)) = (state, session) else {
                return Err(PageError::SignInRequired);
            };
            // Asked on every page (which also keeps the session from its idle timeout), so a
            // session ended anywhere (log-out, password change, an admin) is signed out at once.
            let answer = state
                .api
                .call(&session, Method::GET, "/api/v2/sessions/current", None)
                .await?;
            if answer.status == 401 {
                return Err(PageError::SignInRequired);
            }
            if !answer.is_success() {
                return Err(PageError::refused_by_api(&answer));
            }
            let current: CurrentSession =
                serde_json::from_value(answer.body).map_err(|error| PageError::ApiRefused {
                    status: answer.status,
                    message: format!("unexpected session answer: {error}"),
                })?;
            let signed_in = SignedInUser {
                session,
                user: current.user,
            };
            // For the error pages, so a 403 keeps the user's header (navigation, log-out).
            request.extensions_mut().insert(signed_in.clone());
            Ok(signed_in)
        })
    }
}

/// The session cookie's value, if the browser sent one (whether it is live is the api's to say).
pub fn session_cookie_of(request: &HttpRequest) -> Option<String> {
    request
        .cookie(SESSION_COOKIE)
        .map(|cookie| cookie.value().to_owned())
        .filter(|value| !value.is_empty())
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
