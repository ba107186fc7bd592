//! What the Deliveries pages render: the list (one row per delivery) and a delivery's page with
//! its attempts.

use std::collections::BTreeMap;

use fp_domain::delivery_state::DeliveryState;
use fp_domain::explanation::{self, Explanation};
use fp_domain::time_zone::Tz;
use fp_store::attempts::AttemptRow;
use fp_store::deliveries::DeliveryRow;
use serde::Serialize;

use super::Layout;
use super::logs::{AttemptView, status_class};
use crate::local_time::{LocalTime, Precision};
use crate::pages::deliveries::{DETAIL_PATH, DeliveryFilterParams};
use crate::pages::logs::TENANT_LIST_PATH as ATTEMPT_PATH;

/// The list of deliveries, with its filters and paging links.
#[derive(Serialize)]
pub struct DeliveryListPage<'a> {
    #[serde(flatten)]
    pub layout: Layout<'a>,
    /// The filters as typed, for the form.
    pub params: &'a DeliveryFilterParams,
    /// Field → message; with any, nothing is listed.
    pub errors: BTreeMap<&'static str, &'a str>,
    /// The state filter's choices, in the order of `DeliveryState::ALL`.
    pub states: Vec<&'static str>,
    pub deliveries: Vec<DeliveryView>,
    /// Set on later pages: back to the newest deliveries with the same filters.
    pub first_page_href: Option<String>,
    pub next_page_href: Option<String>,
    /// The zone the page's times are in (`Europe/Berlin`).
    pub time_zone: &'static str,
}

/// One delivery, formatted for the list and the top of its page.
#[derive(Debug, Serialize)]
pub struct DeliveryView {
    pub delivery_id: String,
    /// Its page.
    pub href: String,
    pub event_id: String,
    pub event_type: String,
    pub url: String,
    /// `delivered`, `retrying`, ...: the badge, its colour and its text
    /// (`deliveries.state.<state>`).
    pub state: &'static str,
    pub attempts: i64,
    pub first_attempted_at: LocalTime,
    pub last_attempted_at: LocalTime,
    /// Only while retrying.
    pub next_retry_at: Option<LocalTime>,
    /// The latest attempt's page.
    pub last_attempt_href: String,
    /// `None`: no HTTP answer.
    pub last_response_code: Option<i32>,
    pub status_class: String,
    /// No outcome yet (pending, or a redelivery in flight): there is no answer to show.
    pub awaiting_answer: bool,
    /// Why the latest attempt failed (`logs.explanation.<id>`).
    pub explanation: Option<&'static str>,
}

impl DeliveryView {
    pub fn new(row: &DeliveryRow, zone: Tz) -> Self {
        let state = row.state(fp_contracts::INTERRUPTED_ERROR_KIND);
        DeliveryView {
            delivery_id: row.delivery_id.to_string(),
            href: format!("{DETAIL_PATH}/{}", row.delivery_id),
            event_id: row.event_id.to_string(),
            event_type: row.event_type.clone(),
            url: row.url.clone(),
            state: state.as_str(),
            attempts: row.attempts,
            first_attempted_at: LocalTime::new(row.first_attempted_at, zone, Precision::Minutes),
            last_attempted_at: LocalTime::new(row.last_attempted_at, zone, Precision::Minutes),
            next_retry_at: row
                .next_retry_at
                .filter(|_| state == DeliveryState::Retrying)
                .map(|at| LocalTime::new(at, zone, Precision::Minutes)),
            last_attempt_href: format!("{ATTEMPT_PATH}/{}", row.last_attempt_id),
            last_response_code: row.last_response_status,
            status_class: status_class(row.last_response_status),
            awaiting_answer: matches!(state, DeliveryState::Pending | DeliveryState::Manual),
            explanation: explanation::explain(
                row.last_error_kind.as_deref(),
                row.last_response_status
                    .and_then(|status| u16::try_from(status).ok()),
            )
            .map(Explanation::id),
        }
    }
}

/// One delivery with every attempt, each linking to its own page.
#[derive(Serialize)]
pub struct DeliveryDetailPage<'a> {
    #[serde(flatten)]
    pub layout: Layout<'a>,
    pub delivery: DeliveryView,
    /// First to last.
    pub attempts: Vec<AttemptView>,
    pub time_zone: &'static str,
}

impl<'a> DeliveryDetailPage<'a> {
    pub fn new(layout: Layout<'a>, row: &DeliveryRow, attempts: &[AttemptRow], zone: Tz) -> Self {
        DeliveryDetailPage {
            layout,
            delivery: DeliveryView::new(row, zone),
            attempts: attempts
                .iter()
                .map(|attempt| AttemptView::new(attempt, ATTEMPT_PATH, zone))
                .collect(),
            time_zone: zone.name(),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use uuid::Uuid;

    use super::*;
    use crate::i18n::{Catalog, Lang};
    use crate::views::{Templates, tests::layout};

    fn delivery_row() -> DeliveryRow {
        let at = Utc
            .with_ymd_and_hms(2026, 11, 27, 9, 30, 5)
            .single()
            .expect("valid time");
        DeliveryRow {
            delivery_id: Uuid::now_v7(),
            event_id: Uuid::now_v7(),
            event_type: "submission.created".into(),
            url: "https://example.com/<hook>".into(),
            attempts: 3,
            first_attempted_at: at,
            delivered: false,
            last_attempt_id: Uuid::now_v7(),
            last_attempted_at: at,
            last_response_status: Some(500),
            last_error_kind: Some("http_status".into()),
            last_error_message: Some("<b>bad</b>".into()),
            last_final: false,
            last_manual: false,
            next_retry_at: Some(at + chrono::TimeDelta::minutes(30)),
        }
    }

    fn render(name: &str, page: &impl Serialize) -> String {
        Templates::load()
            .expect("templates parse")
            .render(name, page)
            .expect("page renders")
    }

    #[test]
    fn a_retrying_delivery_says_when_it_goes_again() {
        let view = DeliveryView::new(&delivery_row(), Tz::UTC);
        assert_eq!(view.state, "retrying");
        assert_eq!(
            view.next_retry_at.map(|at| at.local).as_deref(),
            Some("2026-11-27 10:00 UTC")
        );
        assert_eq!(view.explanation, Some("server_error"));
        assert!(!view.awaiting_answer);
        // Once final, no retry time is shown even if the record kept one.
        let failed = DeliveryRow {
            last_final: true,
            ..delivery_row()
        };
        let view = DeliveryView::new(&failed, Tz::UTC);
        assert_eq!((view.state, view.next_retry_at), ("failed", None));
    }

    #[test]
    fn both_languages_name_every_state_and_the_pages_render_escaped() {
        let catalog = Catalog::load().expect("texts load");
        for lang in Lang::ALL {
            for state in DeliveryState::ALL {
                let path = format!("deliveries.state.{state}");
                assert_ne!(catalog.text(lang, &path), path, "{lang:?}: {state}");
            }
        }
        let row = delivery_row();
        let params = DeliveryFilterParams {
            q: "\"><script>".into(),
            ..DeliveryFilterParams::default()
        };
        let list = DeliveryListPage {
            layout: layout(&catalog, None),
            params: &params,
            errors: BTreeMap::new(),
            states: DeliveryState::ALL.map(DeliveryState::as_str).to_vec(),
            deliveries: vec![DeliveryView::new(&row, Tz::UTC)],
            first_page_href: None,
            next_page_href: Some("/webhooks/deliveries?cursor=a&b".into()),
            time_zone: "UTC",
        };
        let html = render("deliveries_list.html", &list);
        assert!(
            !html.contains("<script>") && !html.contains("<hook>"),
            "{html}"
        );
        assert!(html.contains("&amp;b"), "{html}");
        let retrying = catalog.text(Lang::En, "deliveries.state.retrying");
        assert!(html.contains(retrying), "{html}");
        assert!(html.contains("2026-11-27 10:00 UTC"), "{html}");
        let explained = catalog.text(Lang::En, "logs.explanation.server_error");
        assert!(html.contains(&tera::escape_html(explained)), "{html}");

        let attempt = AttemptRow {
            id: row.last_attempt_id,
            ..crate::views::logs::tests::attempt_row()
        };
        let detail = DeliveryDetailPage::new(
            layout(&catalog, None),
            &row,
            std::slice::from_ref(&attempt),
            Tz::UTC,
        );
        let html = render("delivery_detail.html", &detail);
        assert!(!html.contains("<b>") && !html.contains("<hook>"), "{html}");
        assert!(
            html.contains(&tera::escape_html(&format!(
                "/webhooks/logs/{}",
                attempt.id
            ))),
            "{html}"
        );
    }

    #[test]
    fn an_empty_list_says_so() {
        let catalog = Catalog::load().expect("texts load");
        let params = DeliveryFilterParams::default();
        let list = DeliveryListPage {
            layout: layout(&catalog, None),
            params: &params,
            errors: BTreeMap::new(),
            states: Vec::new(),
            deliveries: Vec::new(),
            first_page_href: None,
            next_page_href: None,
            time_zone: "UTC",
        };
        let html = render("deliveries_list.html", &list);
        assert!(
            html.contains(catalog.text(Lang::En, "deliveries.empty")),
            "{html}"
        );
        assert!(!html.contains("<table"), "{html}");
    }
}
