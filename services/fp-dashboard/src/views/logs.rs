//! What the Webhook Logs pages render: the list (tenant and admin), an attempt's detail page.

use std::collections::BTreeMap;

use fp_domain::explanation;
use fp_domain::time_zone::Tz;
use fp_store::attempts::{AttemptRow, StoredHeaders};
use serde::{Deserialize, Serialize};

use super::Layout;
use super::health::HealthView;
use crate::local_time::{LocalTime, Precision};
use crate::pages::logs::chart::Chart;
use crate::pages::logs::filter::FilterParams;

/// The list of attempts, with its filters, chart and paging links.
#[derive(Serialize)]
pub struct LogListPage<'a> {
    #[serde(flatten)]
    pub layout: Layout<'a>,
    /// The platform view: tenant column, tenant filter, summary.
    pub admin: bool,
    /// The list's own path (the form's action).
    pub list_path: &'static str,
    /// The filters as typed, for the form.
    pub params: &'a FilterParams,
    /// Field → message; with any, nothing is listed.
    pub errors: BTreeMap<&'static str, &'a str>,
    pub event_types: &'static [&'static str],
    pub range: Option<RangeView>,
    pub entries: Vec<AttemptView>,
    /// Set on later pages: back to the newest entries with the same filters.
    pub first_page_href: Option<String>,
    pub next_page_href: Option<String>,
    pub chart: Option<Chart>,
    pub summary: Option<SummaryView>,
    /// The tenant view's Health section.
    pub health: Option<HealthView>,
    /// The zone the page's times are in and its filter times are read in (`Europe/Berlin`).
    pub time_zone: &'static str,
    /// The tenant view's "Recover failed deliveries since…" form (`logs_recover.html`).
    pub recover: Option<super::recover::RecoverForm>,
    /// The tenant view's retention in force.
    pub retention: Option<RetentionView>,
}

/// The tenant's retention, as the api's `GET /api/v2/webhooks/retention` returns it.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
pub struct RetentionView {
    /// The tenant's own choice; `None`: payloads are kept as long as the records.
    pub payload_days: Option<u32>,
    pub payload_days_in_force: u32,
    pub record_days: u32,
}

/// An attempt whose payload the tenant's retention removed: when, and after how many days.
#[derive(Serialize)]
pub struct PayloadClearedView {
    pub at: LocalTime,
    pub days: i32,
}

/// The time range a list covers.
#[derive(Serialize)]
pub struct RangeView {
    pub from: LocalTime,
    pub to: LocalTime,
    /// No range was given: the default applies.
    pub default: bool,
}

/// The admin view's platform summary.
#[derive(Serialize)]
pub struct SummaryView {
    pub attempts: i64,
    /// `97.5`, one decimal; `None` without attempts.
    pub success_rate: Option<String>,
    /// Milliseconds, rounded; `None` without attempts.
    pub p95_ms: Option<i64>,
    pub most_failing: Vec<TenantLabel>,
}

/// A tenant on the admin view, linking to the list filtered by it.
#[derive(Debug, Serialize)]
pub struct TenantLabel {
    pub id: String,
    /// Absent if the tenant was deleted.
    pub name: Option<String>,
    pub filter_href: String,
    /// Failures, in the summary.
    pub count: i64,
}

/// One attempt, formatted for the table, the timeline and the detail page.
#[derive(Debug, Serialize)]
pub struct AttemptView {
    pub id: String,
    pub href: String,
    pub event_type: String,
    pub url: String,
    /// `None`: no HTTP answer (the template says so in the page's language).
    pub response_code: Option<i32>,
    /// `2xx` ... `5xx`, or `none`: the colour of the code.
    pub status_class: String,
    pub succeeded: bool,
    pub attempted_at: LocalTime,
    pub duration_ms: i64,
    pub attempt_number: i32,
    pub manual: bool,
    /// `kind: message`, when the attempt failed before or without a response.
    pub error: Option<String>,
    /// The id of why it failed and the fix; the template shows its text in the page's language
    /// (`logs.explanation.<id>`).
    pub explanation: Option<&'static str>,
    /// On the admin view.
    pub tenant: Option<TenantLabel>,
}

impl AttemptView {
    /// `detail_path` is the path of detail pages (`/webhooks/logs`); the attempt's id is appended.
    /// Its time is shown in `zone`.
    pub fn new(row: &AttemptRow, detail_path: &str, zone: Tz) -> Self {
        let error = match (&row.error_kind, &row.error_message) {
            (Some(kind), Some(message)) => Some(format!("{kind}: {message}")),
            (Some(only), None) | (None, Some(only)) => Some(only.clone()),
            (None, None) => None,
        };
        AttemptView {
            id: row.id.to_string(),
            href: format!("{detail_path}/{}", row.id),
            event_type: row.event_type.clone(),
            url: row.url.clone(),
            response_code: row.response_status,
            status_class: status_class(row.response_status),
            succeeded: row
                .response_status
                .is_some_and(|status| (200..300).contains(&status)),
            attempted_at: LocalTime::new(row.attempted_at, zone, Precision::Seconds),
            duration_ms: row.duration_ms,
            attempt_number: row.attempt_number,
            manual: row.manual,
            error,
            explanation: explanation_id(row),
            tenant: None,
        }
    }
}

/// The id of the explanation of an attempt's failure, if it has one.
pub fn explanation_id(row: &AttemptRow) -> Option<&'static str> {
    explanation::explain(
        row.error_kind.as_deref(),
        row.response_status
            .and_then(|status| u16::try_from(status).ok()),
    )
    .map(explanation::Explanation::id)
}

pub(crate) fn status_class(status: Option<i32>) -> String {
    match status {
        Some(code @ 100..=599) => format!("{}xx", code / 100),
        _ => "none".to_owned(),
    }
}

/// One attempt in full, with every attempt of its delivery.
#[derive(Serialize)]
pub struct LogDetailPage<'a> {
    #[serde(flatten)]
    pub layout: Layout<'a>,
    pub admin: bool,
    pub list_path: &'static str,
    pub attempt: AttemptView,
    pub delivery_id: String,
    pub event_id: String,
    pub is_final: bool,
    pub next_retry_at: Option<LocalTime>,
    pub request_headers: Vec<Header>,
    /// The body sent, pretty-printed if it is JSON.
    pub payload: String,
    pub response_headers: Vec<Header>,
    pub response_body: String,
    pub response_truncated: bool,
    /// Every attempt of the delivery, first to last.
    pub timeline: Vec<AttemptView>,
    /// Tenant users only: superadmins may look, not redeliver.
    pub redeliver: Option<RedeliverForm>,
    pub notice: Option<Notice<'a>>,
    /// Set when the payload retention removed the bodies and headers: they are not shown as
    /// empty, as if the receiver had sent nothing.
    pub payload_cleared: Option<PayloadClearedView>,
}

impl<'a> LogDetailPage<'a> {
    pub fn new(
        layout: Layout<'a>,
        admin: bool,
        list_path: &'static str,
        row: &AttemptRow,
        timeline: &[AttemptRow],
        zone: Tz,
    ) -> Self {
        LogDetailPage {
            layout,
            admin,
            list_path,
            attempt: AttemptView::new(row, list_path, zone),
            delivery_id: row.delivery_id.to_string(),
            event_id: row.event_id.to_string(),
            is_final: row.is_final,
            next_retry_at: row
                .next_retry_at
                .map(|at| LocalTime::new(at, zone, Precision::Seconds)),
            request_headers: header_pairs(&row.request_headers),
            payload: pretty_json(&row.request_body),
            response_headers: header_pairs(&row.response_headers),
            // Decoded leniently: a response body need not be UTF-8.
            response_body: String::from_utf8_lossy(&row.response_body).into_owned(),
            response_truncated: row.response_truncated,
            timeline: timeline
                .iter()
                .map(|attempt| AttemptView::new(attempt, list_path, zone))
                .collect(),
            redeliver: None,
            notice: None,
            payload_cleared: None,
        }
    }
}

#[derive(Serialize)]
pub struct RedeliverForm {
    pub action: String,
    pub csrf_token: String,
}

/// The outcome of a redelivery, shown above the attempt.
#[derive(Serialize)]
pub struct Notice<'a> {
    pub success: bool,
    pub text: &'a str,
    /// The api's own words, if it gave any.
    pub detail: Option<String>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

fn header_pairs(headers: &StoredHeaders) -> Vec<Header> {
    headers
        .pairs()
        .into_iter()
        .map(|(name, value)| Header { name, value })
        .collect()
}

/// A JSON body indented for reading, keys in the order they were sent (a `Value` would sort
/// them); any other body as text.
pub fn pretty_json(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    if serde_json::from_str::<serde::de::IgnoredAny>(&text).is_err() {
        return text.into_owned();
    }
    let mut out = String::with_capacity(text.len() * 2);
    let mut depth = 0_usize;
    let (mut in_string, mut escaped) = (false, false);
    let mut chars = text.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                // Empty containers stay `{}` / `[]`.
                while chars.peek().is_some_and(|next| next.is_ascii_whitespace()) {
                    chars.next();
                }
                if chars.peek().is_some_and(|next| matches!(next, '}' | ']')) {
                    continue;
                }
                depth += 1;
                newline(&mut out, depth);
            }
            '}' | ']' => {
                if !(out.ends_with('{') || out.ends_with('[')) {
                    depth = depth.saturating_sub(1);
                    newline(&mut out, depth);
                }
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_ascii_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::TimeZone;
    use uuid::Uuid;

    use super::*;
    use crate::i18n::Catalog;
    use crate::views::{SignedIn, Templates, tests::layout};

    pub fn attempt_row() -> AttemptRow {
        AttemptRow {
            id: Uuid::now_v7(),
            delivery_id: Uuid::now_v7(),
            event_id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            event_type: "submission.created".into(),
            url: "https://example.com/hook?a=1&b=2".into(),
            attempt_number: 2,
            attempted_at: chrono::Utc
                .with_ymd_and_hms(2026, 11, 27, 9, 30, 5)
                .single()
                .expect("valid time"),
            duration_ms: 123,
            request_headers: StoredHeaders::of([
                ("content-type", "application/json"),
                ("x-evil", "<i>"),
            ]),
            request_body: br#"{"data":{"text_feedback":"<script>alert(1)</script>"}}"#.to_vec(),
            response_status: None,
            response_headers: StoredHeaders::none(),
            response_body: b"<b>\"bad\" & 'worse'</b>".to_vec(),
            response_truncated: true,
            error_kind: Some("timeout".into()),
            error_message: Some("no response within 15000 ms".into()),
            is_final: false,
            next_retry_at: None,
            manual: false,
            traceparent: String::new(),
            tracestate: String::new(),
        }
    }

    #[test]
    fn an_attempt_is_formatted_for_the_table() {
        let row = attempt_row();
        let view = AttemptView::new(&row, "/webhooks/logs", Tz::Europe__Berlin);
        assert_eq!(view.attempted_at.local, "2026-11-27 10:30:05 CET");
        assert_eq!(view.attempted_at.utc, "2026-11-27 09:30:05 UTC");
        assert_eq!(view.href, format!("/webhooks/logs/{}", row.id));
        assert_eq!(
            (view.response_code, view.status_class.as_str()),
            (None, "none")
        );
        assert!(!view.succeeded);
        assert_eq!(
            view.error.as_deref(),
            Some("timeout: no response within 15000 ms")
        );
        assert_eq!(view.explanation, Some("timeout"));

        for (status, class, succeeded, explanation) in [
            (204, "2xx", true, None),
            (302, "3xx", false, Some("redirect")),
            (503, "5xx", false, Some("server_error")),
        ] {
            let answered = AttemptRow {
                response_status: Some(status),
                error_kind: None,
                error_message: None,
                ..attempt_row()
            };
            let view = AttemptView::new(&answered, "/x", Tz::UTC);
            assert_eq!(
                (view.status_class.as_str(), view.succeeded),
                (class, succeeded)
            );
            assert_eq!(view.error, None);
            assert_eq!(view.explanation, explanation);
        }
    }

    #[test]
    fn both_languages_explain_every_failure() {
        let catalog = Catalog::load().expect("texts load");
        for lang in crate::i18n::Lang::ALL {
            for explanation in explanation::Explanation::ALL {
                let path = format!("logs.explanation.{}", explanation.id());
                let text = catalog.text(lang, &path);
                assert_ne!(text, path, "{lang:?} has no text for {}", explanation.id());
            }
            // And no text for an explanation that does not exist.
            let texts = catalog.texts(lang)["logs"]["explanation"]
                .as_object()
                .expect("a table of explanations");
            assert_eq!(texts.len(), explanation::Explanation::ALL.len(), "{lang:?}");
        }
        // The English page says what the api says; the German texts are no copies of it.
        for explanation in explanation::Explanation::ALL {
            let path = format!("logs.explanation.{}", explanation.id());
            let english = catalog.text(crate::i18n::Lang::En, &path);
            assert_eq!(english, explanation.english(), "{path}");
            assert_ne!(
                english,
                catalog.text(crate::i18n::Lang::De, &path),
                "{path}"
            );
        }
    }

    #[test]
    fn the_list_and_the_detail_show_the_explanation_in_the_page_language() {
        let catalog = Catalog::load().expect("texts load");
        let row = attempt_row();
        let params = FilterParams::default();
        let layout_in = |lang: crate::i18n::Lang| Layout {
            lang: lang.code(),
            t: catalog.texts(lang),
            ..layout(&catalog, None)
        };
        for lang in crate::i18n::Lang::ALL {
            let expected = catalog.text(lang, "logs.explanation.timeout");
            let list = list_page(
                layout_in(lang),
                &params,
                vec![AttemptView::new(&row, "/webhooks/logs", Tz::UTC)],
            );
            let detail = LogDetailPage::new(
                layout_in(lang),
                false,
                "/webhooks/logs",
                &row,
                std::slice::from_ref(&row),
                Tz::UTC,
            );
            for html in [
                render("logs_list.html", &list),
                render("log_detail.html", &detail),
            ] {
                assert!(html.contains(&escaped(expected)), "{lang:?}: {html}");
            }
        }
    }

    /// `text` as tera's autoescape writes it.
    fn escaped(text: &str) -> String {
        tera::escape_html(text)
    }

    #[test]
    fn json_is_indented_in_its_own_key_order() {
        assert_eq!(
            pretty_json(br#"{"z":1,"a":[1, {"s":"a,b:{\"}"}],"e":{},"f":[ ]}"#),
            "{\n  \"z\": 1,\n  \"a\": [\n    1,\n    {\n      \"s\": \"a,b:{\\\"}\"\n    }\n  ],\n  \"e\": {},\n  \"f\": []\n}"
        );
        assert_eq!(pretty_json(b"not json {"), "not json {");
        assert_eq!(pretty_json(b"\"text\""), "\"text\"");
    }

    /// The tenant's list of `entries`, on its first and only page.
    fn list_page<'a>(
        layout: Layout<'a>,
        params: &'a FilterParams,
        entries: Vec<AttemptView>,
    ) -> LogListPage<'a> {
        LogListPage {
            layout,
            admin: false,
            list_path: "/webhooks/logs",
            params,
            errors: BTreeMap::new(),
            event_types: &[],
            range: None,
            entries,
            first_page_href: None,
            next_page_href: None,
            chart: None,
            summary: None,
            health: None,
            time_zone: "UTC",
            recover: None,
            retention: None,
        }
    }

    fn render(name: &str, page: &impl Serialize) -> String {
        Templates::load()
            .expect("templates parse")
            .render(name, page)
            .expect("page renders")
    }

    #[test]
    fn everything_from_the_database_is_escaped() {
        let catalog = Catalog::load().expect("texts load");
        let signed_in = || {
            Some(SignedIn {
                email: "<i>admin</i>@example.com".into(),
                logout_csrf_token: "token".into(),
            })
        };
        let row = attempt_row();
        let params = FilterParams {
            status: "\"><script>".into(),
            ..FilterParams::default()
        };
        let list = LogListPage {
            next_page_href: Some("/webhooks/logs?cursor=a&b".into()),
            ..list_page(
                layout(&catalog, signed_in()),
                &params,
                vec![AttemptView::new(&row, "/webhooks/logs", Tz::UTC)],
            )
        };
        let detail = LogDetailPage::new(
            layout(&catalog, signed_in()),
            false,
            "/webhooks/logs",
            &row,
            std::slice::from_ref(&row),
            Tz::UTC,
        );
        for html in [
            render("logs_list.html", &list),
            render("log_detail.html", &detail),
        ] {
            assert!(!html.contains("<script>"), "{html}");
            assert!(!html.contains("<i>"), "{html}");
            assert!(!html.contains("<b>"), "{html}");
            assert!(html.contains("&amp;b"), "{html}");
        }
        let detail = render("log_detail.html", &detail);
        // The payload is shown, pretty-printed and escaped.
        assert!(
            detail.contains(
                "&quot;text_feedback&quot;: &quot;&lt;script&gt;alert(1)&lt;&#x2F;script&gt;&quot;"
            ),
            "{detail}"
        );
        assert!(detail.contains("&lt;i&gt;"), "{detail}");
    }

    #[test]
    fn times_show_in_the_users_zone_with_utc_on_hover() {
        let catalog = Catalog::load().expect("texts load");
        let row = attempt_row();
        let params = FilterParams::default();
        let page = LogListPage {
            time_zone: "Europe/Berlin",
            ..list_page(
                layout(&catalog, None),
                &params,
                vec![AttemptView::new(&row, "/webhooks/logs", Tz::Europe__Berlin)],
            )
        };
        let html = render("logs_list.html", &page);
        assert!(
            html.contains(r#"<time datetime="2026-11-27T09:30:05Z" title="2026-11-27 09:30:05 UTC">2026-11-27 10:30:05 CET</time>"#),
            "{html}"
        );
        // The filter says which zone its times are read in.
        assert!(html.contains("From (Europe&#x2F;Berlin)"), "{html}");
        let detail = LogDetailPage::new(
            layout(&catalog, None),
            false,
            "/webhooks/logs",
            &row,
            std::slice::from_ref(&row),
            Tz::America__New_York,
        );
        let html = render("log_detail.html", &detail);
        assert_eq!(
            html.matches(r#"<time datetime="2026-11-27T09:30:05Z" title="2026-11-27 09:30:05 UTC">2026-11-27 04:30:05 EST</time>"#).count(),
            2,
            "the attempt and its timeline step: {html}"
        );
    }

    #[test]
    fn an_empty_list_says_so() {
        let catalog = Catalog::load().expect("texts load");
        let params = FilterParams::default();
        let page = list_page(layout(&catalog, None), &params, Vec::new());
        let html = render("logs_list.html", &page);
        assert!(
            html.contains(catalog.text(crate::i18n::Lang::En, "logs.empty")),
            "{html}"
        );
        assert!(!html.contains("<table"), "{html}");
    }
}
