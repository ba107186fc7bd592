//! Deliveries: the tenant's deliveries, one row each (state, attempts, latest answer), filtered by
//! state and searched by an id, keyset-paged; a delivery's page with its attempts. Read-only: a
//! delivery is redelivered from its attempts' pages (Webhook Logs).

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use fp_domain::delivery_state::DeliveryState;
use fp_store::attempts::{self, decode_cursor};
use fp_store::deliveries::{self, DeliveryQuery, DeliverySearch};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{SignedInUser, html_response};
use crate::AppState;
use crate::error::PageError;
use crate::views::deliveries::{DeliveryDetailPage, DeliveryListPage, DeliveryView};

pub const DETAIL_PATH: &str = "/webhooks/deliveries";
const LIST_PATH: &str = DETAIL_PATH;
/// The navigation entry of these pages.
const NAV: &str = "deliveries";
/// Deliveries per page.
const PAGE_SIZE: i64 = 50;

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route(LIST_PATH, web::get().to(list))
        .route("/webhooks/deliveries/{delivery_id}", web::get().to(detail));
}

/// The query string as typed: echoed back into the form, and the source of the paging links.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct DeliveryFilterParams {
    /// A state's name, or empty for all.
    #[serde(default)]
    pub state: String,
    /// A delivery id, an event id or a submission id.
    #[serde(default)]
    pub q: String,
    /// Where the page starts (a delivery's `cursor`); not part of the form.
    #[serde(default)]
    pub cursor: String,
}

/// Parsed, valid filters.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Filters {
    state: Option<DeliveryState>,
    search: Option<DeliverySearch>,
    cursor: Option<(DateTime<Utc>, Uuid)>,
}

impl DeliveryFilterParams {
    /// Valid filters, or the catalog path of a message for every bad field.
    fn parse(&self) -> Result<Filters, BTreeMap<&'static str, &'static str>> {
        let mut errors = BTreeMap::new();
        let state = match self.state.trim() {
            "" => None,
            text => text
                .parse()
                .map_err(|_| errors.insert("state", "deliveries.errors.state"))
                .ok(),
        };
        // What a user pastes may come with blanks around it.
        let search = match self.q.trim() {
            "" => None,
            text => text
                .parse()
                .map_err(|_| errors.insert("q", "deliveries.errors.q"))
                .ok(),
        };
        let cursor = match self.cursor.trim() {
            "" => None,
            text => decode_cursor(text)
                .ok_or(())
                .map_err(|()| errors.insert("cursor", "deliveries.errors.cursor"))
                .ok(),
        };
        if errors.is_empty() {
            Ok(Filters {
                state,
                search,
                cursor,
            })
        } else {
            Err(errors)
        }
    }

    /// The query string (with `?`, or empty) of these filters starting at `cursor`.
    fn query_string(&self, cursor: Option<&str>) -> String {
        let pairs = [
            ("state", self.state.trim()),
            ("q", self.q.trim()),
            ("cursor", cursor.unwrap_or_default()),
        ];
        super::logs::filter::query_string(&pairs)
    }
}

/// The signed-in tenant's deliveries matching the query; bad filters are answered with the form
/// and a message next to each bad field (400).
async fn list(
    state: web::Data<AppState>,
    request: HttpRequest,
    user: SignedInUser,
    params: web::Query<DeliveryFilterParams>,
) -> Result<HttpResponse, PageError> {
    let tenant_id = user.tenant_id()?;
    let zone = user.time_zone(&request);
    let mut page = DeliveryListPage {
        layout: state.layout(&request, Some(&user), NAV),
        params: &params,
        errors: BTreeMap::new(),
        states: DeliveryState::ALL.map(DeliveryState::as_str).to_vec(),
        deliveries: Vec::new(),
        first_page_href: None,
        next_page_href: None,
        time_zone: zone.name(),
    };
    let filters = match params.parse() {
        Ok(filters) => filters,
        Err(errors) => {
            page.errors = errors
                .into_iter()
                .map(|(field, text)| (field, state.text(&request, text)))
                .collect();
            let html = state.templates.render("deliveries_list.html", &page)?;
            return Ok(html_response(StatusCode::BAD_REQUEST).body(html));
        }
    };
    let query = DeliveryQuery {
        state: filters.state,
        search: filters.search,
        after: filters.cursor,
        ..DeliveryQuery::of_tenant(tenant_id, PAGE_SIZE)
    };
    let mut conn = state.connection().await?;
    let (rows, more) =
        deliveries::page(&mut conn, &query, fp_contracts::INTERRUPTED_ERROR_KIND).await?;
    drop(conn);

    page.deliveries = rows
        .iter()
        .map(|row| DeliveryView::new(row, zone))
        .collect();
    page.next_page_href = rows
        .last()
        .filter(|_| more)
        .map(|last| format!("{LIST_PATH}{}", params.query_string(Some(&last.cursor()))));
    page.first_page_href = filters
        .cursor
        .map(|_| format!("{LIST_PATH}{}", params.query_string(None)));
    let html = state.templates.render("deliveries_list.html", &page)?;
    Ok(html_response(StatusCode::OK).body(html))
}

/// One of the tenant's deliveries with its attempts; another tenant's is not found, like one
/// that does not exist.
async fn detail(
    state: web::Data<AppState>,
    request: HttpRequest,
    user: SignedInUser,
    path: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let tenant_id = user.tenant_id()?;
    let delivery_id = Uuid::parse_str(&path).map_err(|_| PageError::NotFound)?;
    let mut conn = state.connection().await?;
    let row = deliveries::find(
        &mut conn,
        tenant_id,
        delivery_id,
        fp_contracts::INTERRUPTED_ERROR_KIND,
    )
    .await?
    .ok_or(PageError::NotFound)?;
    let attempts = attempts::of_delivery(&mut conn, tenant_id, delivery_id).await?;
    drop(conn);

    let page = DeliveryDetailPage::new(
        state.layout(&request, Some(&user), NAV),
        &row,
        &attempts,
        user.time_zone(&request),
    );
    let html = state.templates.render("delivery_detail.html", &page)?;
    Ok(html_response(StatusCode::OK).body(html))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(state: &str, q: &str, cursor: &str) -> DeliveryFilterParams {
        DeliveryFilterParams {
            state: state.into(),
            q: q.into(),
            cursor: cursor.into(),
        }
    }

    #[test]
    fn filters_parse_and_bad_ones_are_named() {
        let id = Uuid::now_v7();
        let filters = params("failed", &format!("  {id} "), "")
            .parse()
            .expect("valid");
        assert_eq!(filters.state, Some(DeliveryState::Failed));
        assert_eq!(filters.search, Some(DeliverySearch::Id(id)));
        assert_eq!(
            params("", "17", "").parse().expect("valid").search,
            Some(DeliverySearch::Submission(17))
        );
        let errors = params("lost", "acme", "zz").parse().expect_err("invalid");
        assert_eq!(
            errors.keys().copied().collect::<Vec<_>>(),
            ["cursor", "q", "state"]
        );
    }

    #[test]
    fn links_keep_the_filters() {
        let typed = params("retrying", " 42 ", "old");
        assert_eq!(
            typed.query_string(Some("a+b")),
            "?state=retrying&q=42&cursor=a%2Bb"
        );
        assert_eq!(typed.query_string(None), "?state=retrying&q=42");
        assert_eq!(DeliveryFilterParams::default().query_string(None), "");
    }
}
