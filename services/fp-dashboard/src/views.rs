//! Templates (embedded in the binary) and the data each page renders.
//!
//! Every template name ends in `.html`, so tera escapes every value it prints: delivery payloads
//! carry feedback text that anyone can submit. No template uses `| safe`.

pub mod deliveries;
pub mod health;
pub mod logs;
pub mod recover;

use serde::Serialize;
use serde_json::Value;
use tera::{Context, Tera};

use crate::local_time::LocalTime;

const TEMPLATES: [(&str, &str); 20] = [
    ("time.html", include_str!("../templates/time.html")),
    ("base.html", include_str!("../templates/base.html")),
    ("login.html", include_str!("../templates/login.html")),
    ("account.html", include_str!("../templates/account.html")),
    (
        "logs_macros.html",
        include_str!("../templates/logs_macros.html"),
    ),
    (
        "logs_filters.html",
        include_str!("../templates/logs_filters.html"),
    ),
    (
        "logs_chart.html",
        include_str!("../templates/logs_chart.html"),
    ),
    (
        "logs_summary.html",
        include_str!("../templates/logs_summary.html"),
    ),
    (
        "logs_health.html",
        include_str!("../templates/logs_health.html"),
    ),
    (
        "logs_list.html",
        include_str!("../templates/logs_list.html"),
    ),
    (
        "log_detail.html",
        include_str!("../templates/log_detail.html"),
    ),
    (
        "logs_recover.html",
        include_str!("../templates/logs_recover.html"),
    ),
    (
        "logs_recover_preview.html",
        include_str!("../templates/logs_recover_preview.html"),
    ),
    (
        "logs_recovery.html",
        include_str!("../templates/logs_recovery.html"),
    ),
    (
        "deliveries_list.html",
        include_str!("../templates/deliveries_list.html"),
    ),
    (
        "delivery_detail.html",
        include_str!("../templates/delivery_detail.html"),
    ),
    ("error.html", include_str!("../templates/error.html")),
    (
        "event_types.html",
        include_str!("../templates/event_types.html"),
    ),
    (
        "integrations.html",
        include_str!("../templates/integrations.html"),
    ),
    (
        "retention.html",
        include_str!("../templates/retention.html"),
    ),
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

/// A link of the language switch.
#[derive(Serialize)]
pub struct LanguageLink {
    pub code: &'static str,
    pub href: String,
    pub current: bool,
}

/// What `base.html` needs on every page; page structs flatten it in.
#[derive(Serialize)]
pub struct Layout<'a> {
    /// The texts of the page's language (`t.common.log_out`, ...).
    pub t: &'a Value,
    pub lang: &'static str,
    pub signed_in: Option<SignedIn>,
    pub is_superadmin: bool,
    /// Which navigation entry is this page's (`integrations`, `webhook_logs`, `deliveries`,
    /// `admin`, `account`), or "".
    pub active_nav: &'static str,
    pub languages: Vec<LanguageLink>,
}

#[derive(Serialize)]
pub struct LoginPage<'a> {
    #[serde(flatten)]
    pub layout: Layout<'a>,
    pub csrf_token: &'a str,
    /// Echoed back after a failed attempt so the user only retypes the password.
    pub email: &'a str,
    pub error: Option<&'a str>,
}

/// One of the user's sessions on the account page.
#[derive(Serialize)]
pub struct SessionView {
    pub id: String,
    pub created_at: LocalTime,
    pub last_used_at: LocalTime,
    pub client_address: String,
    pub user_agent: String,
    /// The session of this page's request (ended with the log-out button, not from the list).
    pub current: bool,
}

#[derive(Serialize)]
pub struct AccountPage<'a> {
    #[serde(flatten)]
    pub layout: Layout<'a>,
    pub sessions: Vec<SessionView>,
    pub end_session_csrf_token: String,
    pub password_csrf_token: String,
    /// Why the password was not changed.
    pub error: Option<&'a str>,
    pub time_zone: TimeZoneForm<'a>,
}

/// The Account page's time zone choice.
#[derive(Serialize)]
pub struct TimeZoneForm<'a> {
    pub csrf_token: String,
    /// The zone the page's times are in (the chosen one, or the automatic one).
    pub current: &'static str,
    /// The zone chosen; `None`: automatic.
    pub chosen: Option<&'a str>,
    /// What "automatic" means for this browser (`Europe/Berlin`).
    pub automatic: &'static str,
    /// Every zone name, sorted.
    pub zones: &'static [&'static str],
    /// Why the choice was not saved.
    pub error: Option<&'a str>,
}

#[derive(Serialize)]
pub struct ErrorPage<'a> {
    #[serde(flatten)]
    pub layout: Layout<'a>,
    pub heading: &'a str,
    pub message: &'a str,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::i18n::{Catalog, Lang};

    pub fn layout(catalog: &Catalog, signed_in: Option<SignedIn>) -> Layout<'_> {
        Layout {
            t: catalog.texts(Lang::En),
            lang: "en",
            signed_in,
            is_superadmin: false,
            active_nav: "webhook_logs",
            languages: Vec::new(),
        }
    }

    #[test]
    fn the_account_page_offers_every_zone_with_the_choice_selected() {
        use crate::local_time::Precision;
        use fp_domain::time_zone::{self, Tz};

        let catalog = Catalog::load().expect("texts load");
        let signed_in = chrono::DateTime::parse_from_rfc3339("2026-12-03T18:12:00Z")
            .expect("valid")
            .to_utc();
        let shown = LocalTime::new(signed_in, Tz::America__New_York, Precision::Minutes);
        let page = AccountPage {
            layout: layout(&catalog, None),
            sessions: vec![SessionView {
                id: "s".into(),
                created_at: shown.clone(),
                last_used_at: shown,
                client_address: "127.0.0.1".into(),
                user_agent: "test".into(),
                current: true,
            }],
            end_session_csrf_token: "end".into(),
            password_csrf_token: "password".into(),
            error: None,
            time_zone: TimeZoneForm {
                csrf_token: "zone".into(),
                current: "America/New_York",
                chosen: Some("America/New_York"),
                automatic: "Europe/Berlin",
                zones: time_zone::names(),
                error: None,
            },
        };
        let html = Templates::load()
            .expect("templates parse")
            .render("account.html", &page)
            .expect("page renders");
        assert!(
            html.contains(r#"<time datetime="2026-12-03T18:12:00Z" title="2026-12-03 18:12 UTC">2026-12-03 13:12 EST</time>"#),
            "{html}"
        );
        assert_eq!(
            html.matches("<option").count(),
            time_zone::names().len() + 1
        );
        assert_eq!(html.matches(" selected>").count(), 1, "{html}");
        assert!(
            html.contains(r#"<option value="America&#x2F;New_York" selected>"#),
            "{html}"
        );
        assert!(
            html.contains(
                r#"<option value="">Automatic (from your browser&#x27;s language: Europe&#x2F;Berlin)</option>"#
            ),
            "{html}"
        );
        assert!(html.contains(r#"name="csrf_token" value="zone""#), "{html}");

        // Not chosen: automatic is the selected option.
        let automatic = AccountPage {
            time_zone: TimeZoneForm {
                chosen: None,
                ..page.time_zone
            },
            ..page
        };
        let html = Templates::load()
            .expect("templates parse")
            .render("account.html", &automatic)
            .expect("page renders");
        assert!(html.contains(r#"<option value="" selected>"#), "{html}");
        assert_eq!(html.matches(" selected>").count(), 1);
    }
}
