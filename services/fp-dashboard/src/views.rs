//! Templates (embedded in the binary) and the data each page renders.
//!
//! Every template name ends in `.html`, so tera escapes every value it prints: delivery payloads
//! carry feedback text that anyone can submit. No template uses `| safe`.

pub mod logs;

use serde::Serialize;
use serde_json::Value;
use tera::{Context, Tera};

const TEMPLATES: [(&str, &str); 12] = [
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
        "logs_list.html",
        include_str!("../templates/logs_list.html"),
    ),
    (
        "log_detail.html",
        include_str!("../templates/log_detail.html"),
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
    /// Which navigation entry is this page's (`integrations`, `webhook_logs`, `admin`,
    /// `account`), or "".
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
    pub created_at: String,
    pub last_used_at: String,
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
}
