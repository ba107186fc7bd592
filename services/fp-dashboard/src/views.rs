//! Templates (embedded in the binary) and the data each page renders.
//!
//! Every template name ends in `.html`, so tera escapes every value it prints: delivery payloads
//! carry feedback text that anyone can submit. No template uses `| safe`.

use fp_store::attempts::AttemptRow;
use serde::Serialize;
use tera::{Context, Tera};

const TEMPLATES: [(&str, &str); 4] = [
    ("base.html", include_str!("../templates/base.html")),
    ("login.html", include_str!("../templates/login.html")),
    (
        "webhook_logs.html",
        include_str!("../templates/webhook_logs.html"),
    ),
    ("error.html", include_str!("../templates/error.html")),
];

pub const STYLESHEET: &str = include_str!("../static/app.css");

pub struct Templates {
    tera: Tera,
}

impl Templates {
    pub fn load() -> Result<Self, tera::Error> {
        let mut tera = Tera::default();
        // `Tera::default()` already escapes `.html`; say so here so it never silently changes.
        tera.autoescape_on(vec![".html"]);
        tera.add_raw_templates(TEMPLATES)?;
        Ok(Templates { tera })
    }

    pub fn render(&self, name: &str, page: &impl Serialize) -> Result<String, tera::Error> {
        self.tera.render(name, &Context::from_serialize(page)?)
    }
}

/// What the header shows to a signed-in user.
#[derive(Serialize)]
pub struct SignedIn {
    pub email: String,
    /// For the log-out form.
    pub logout_csrf_token: String,
}

#[derive(Serialize)]
pub struct LoginPage<'a> {
    pub signed_in: Option<SignedIn>,
    pub csrf_token: &'a str,
    /// Echoed back after a failed attempt so the user only retypes the password.
    pub email: &'a str,
    pub error: Option<&'a str>,
}

#[derive(Serialize)]
pub struct WebhookLogsPage {
    pub signed_in: Option<SignedIn>,
    pub active_nav: &'static str,
    /// Superadmins belong to no tenant; their platform-wide viewer is not built yet.
    pub is_superadmin: bool,
    pub limit: i64,
    pub attempts: Vec<AttemptView>,
}

#[derive(Serialize)]
pub struct ErrorPage<'a> {
    pub signed_in: Option<SignedIn>,
    pub heading: &'a str,
    pub message: &'a str,
}

/// One delivery attempt, formatted for the table.
#[derive(Debug, Serialize)]
pub struct AttemptView {
    pub event_type: String,
    pub url: String,
    pub response_code: String,
    pub succeeded: bool,
    pub attempted_at: String,
    pub duration_ms: i64,
    pub attempt_number: i32,
    /// `kind: message`, when the attempt failed before or without a response.
    pub error: Option<String>,
    pub payload: String,
    pub response_body: String,
    pub response_truncated: bool,
}

impl From<&AttemptRow> for AttemptView {
    fn from(row: &AttemptRow) -> Self {
        let error = match (&row.error_kind, &row.error_message) {
            (Some(kind), Some(message)) => Some(format!("{kind}: {message}")),
            (Some(only), None) | (None, Some(only)) => Some(only.clone()),
            (None, None) => None,
        };
        AttemptView {
            event_type: row.event_type.clone(),
            url: row.url.clone(),
            response_code: row
                .response_status
                .map_or_else(|| "No response".to_owned(), |status| status.to_string()),
            succeeded: row
                .response_status
                .is_some_and(|status| (200..300).contains(&status)),
            attempted_at: row.attempted_at.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
            duration_ms: row.duration_ms,
            attempt_number: row.attempt_number,
            error,
            // Shown as the bytes that were sent (not re-formatted), decoded leniently because a
            // response body need not be UTF-8.
            payload: String::from_utf8_lossy(&row.request_body).into_owned(),
            response_body: String::from_utf8_lossy(&row.response_body).into_owned(),
            response_truncated: row.response_truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use uuid::Uuid;

    use super::*;

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
            request_headers: serde_json::json!([]),
            request_body: br#"{"data":{"text_feedback":"<script>alert(1)</script>"}}"#.to_vec(),
            response_status: None,
            response_headers: serde_json::json!([]),
            response_body: b"<b>\"bad\" & 'worse'</b>".to_vec(),
            response_truncated: true,
            error_kind: Some("timeout".into()),
            error_message: Some("no response within 15000 ms".into()),
            is_final: false,
            next_retry_at: None,
            manual: false,
        }
    }

    #[test]
    fn an_attempt_is_formatted_for_the_table() {
        let view = AttemptView::from(&attempt_row());
        assert_eq!(view.attempted_at, "2026-11-27 09:30:05.000");
        assert_eq!(view.response_code, "No response");
        assert!(!view.succeeded);
        assert_eq!(
            view.error.as_deref(),
            Some("timeout: no response within 15000 ms")
        );

        let mut delivered = attempt_row();
        delivered.response_status = Some(204);
        delivered.error_kind = None;
        delivered.error_message = None;
        let view = AttemptView::from(&delivered);
        assert_eq!(view.response_code, "204");
        assert!(view.succeeded);
        assert_eq!(view.error, None);
    }

    #[test]
    fn everything_from_the_database_is_escaped() {
        let page = WebhookLogsPage {
            signed_in: Some(SignedIn {
                email: "<i>admin</i>@example.com".into(),
                logout_csrf_token: "token".into(),
            }),
            active_nav: "webhook_logs",
            is_superadmin: false,
            limit: 100,
            attempts: vec![AttemptView::from(&attempt_row())],
        };
        let html = Templates::load()
            .expect("templates parse")
            .render("webhook_logs.html", &page)
            .expect("page renders");
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;&#x2F;script&gt;"),
            "{html}"
        );
        assert!(!html.contains("<b>"), "{html}");
        assert!(!html.contains("<i>admin"), "{html}");
        assert!(html.contains("&amp;b=2"), "{html}");
        assert!(html.contains("<details>"), "{html}");
        assert!(!html.contains("No deliveries yet"), "{html}");
    }

    #[test]
    fn an_empty_log_says_so() {
        let page = WebhookLogsPage {
            signed_in: None,
            active_nav: "webhook_logs",
            is_superadmin: false,
            limit: 100,
            attempts: Vec::new(),
        };
        let html = Templates::load()
            .expect("templates parse")
            .render("webhook_logs.html", &page)
            .expect("page renders");
        assert!(html.contains("No deliveries yet"), "{html}");
        assert!(!html.contains("<table"), "{html}");
    }
}
