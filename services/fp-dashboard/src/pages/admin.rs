//! The superadmin's platform view of Webhook Logs: every tenant's attempts, a tenant filter and
//! summary, and read-only detail pages. The handlers are the tenant view's, with
//! [`Scope::Platform`]; tenant users get the 403 page.

use actix_web::{HttpRequest, HttpResponse, web};

use super::SignedInUser;
use super::logs::{self, ADMIN_LIST_PATH, Scope, filter::FilterParams};
use crate::AppState;
use crate::error::PageError;

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route(ADMIN_LIST_PATH, web::get().to(list))
        .route(&format!("{ADMIN_LIST_PATH}/{{id}}"), web::get().to(detail));
}

async fn list(
    state: web::Data<AppState>,
    request: HttpRequest,
    user: SignedInUser,
    params: web::Query<FilterParams>,
) -> Result<HttpResponse, PageError> {
    user.require_superadmin()?;
    logs::list_page(&state, &request, &user, Scope::Platform, &params).await
}

async fn detail(
    state: web::Data<AppState>,
    request: HttpRequest,
    user: SignedInUser,
    path: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    user.require_superadmin()?;
    logs::detail_page(&state, &request, &user, Scope::Platform, &path, None).await
}
