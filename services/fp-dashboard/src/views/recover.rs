//! What the recovery pages render: the "Recover failed deliveries since…" form of the tenant's log
//! list (`templates/logs_recover.html`), its preview (`logs_recover_preview.html`) and a
//! recovery's progress (`logs_recovery.html`).

use serde::Serialize;

use super::Layout;
use crate::local_time::LocalTime;

/// The form on the log list: a GET, so the preview it leads to changes nothing.
#[derive(Debug, Clone, Serialize)]
pub struct RecoverForm {
    pub action: &'static str,
    /// As typed, or the default (24 hours ago): `YYYY-MM-DDTHH:MM` in `zone`, what a
    /// `datetime-local` input holds.
    pub since: String,
    /// The zone the time is read in (`Europe/Berlin`).
    pub zone: &'static str,
    /// Catalog path of what is wrong with `since`.
    pub error: Option<&'static str>,
}

/// What a recovery since the time asked would do, before it is confirmed.
#[derive(Serialize)]
pub struct RecoverPreviewPage<'a> {
    #[serde(flatten)]
    pub layout: Layout<'a>,
    pub list_path: &'static str,
    /// The form again, to pick another time (with its error, if the time was refused); named as
    /// on the list page, which includes the same template.
    pub recover: RecoverForm,
    pub from: Option<LocalTime>,
    pub to: Option<LocalTime>,
    /// The api's count; absent when the preview was refused.
    pub preview: Option<PreviewView>,
    /// Confirm: posts the exact range previewed.
    pub confirm: Option<ConfirmForm>,
    /// Why nothing can be recovered now (no endpoint, switched off, over the limit, ...).
    pub problem: Option<Problem<'a>>,
}

#[derive(Debug, Serialize)]
pub struct PreviewView {
    pub failed: i64,
    pub would_redeliver: i64,
    pub skipped_format_changed: i64,
    pub more: bool,
    /// The endpoint's current URL: where they go.
    pub url: String,
}

/// The confirm button's form: the range as RFC 3339, signed for this session.
#[derive(Debug, Serialize)]
pub struct ConfirmForm {
    pub action: &'static str,
    pub csrf_token: String,
    pub from: String,
    pub to: String,
}

/// A refusal, in the page's language, with the reason when there is one.
#[derive(Debug, Serialize)]
pub struct Problem<'a> {
    pub text: &'a str,
    pub detail: Option<&'a str>,
}

/// A recovery's progress.
#[derive(Serialize)]
pub struct RecoveryPage<'a> {
    #[serde(flatten)]
    pub layout: Layout<'a>,
    pub list_path: &'static str,
    /// This page's own path: the refresh link.
    pub href: String,
    pub from: LocalTime,
    pub to: LocalTime,
    pub requested_at: LocalTime,
    pub redelivered: i64,
    pub delivered: i64,
    pub failed: i64,
    pub pending: i64,
    pub skipped_format_changed: i64,
    pub more: bool,
    /// Seconds until the page reloads itself; only while deliveries are pending.
    pub refresh_seconds: Option<u32>,
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use fp_domain::time_zone::Tz;

    use super::*;
    use crate::i18n::{Catalog, Lang};
    use crate::local_time::Precision;
    use crate::views::Templates;
    use crate::views::tests::layout;

    const HOSTILE_URL: &str = "https://example.com/hook?a=<script>alert(1)</script>&b=\"x\"";

    fn at(hour: u32) -> LocalTime {
        let time = Utc
            .with_ymd_and_hms(2026, 12, 4, hour, 0, 0)
            .single()
            .expect("valid time");
        LocalTime::new(time, Tz::UTC, Precision::Minutes)
    }

    fn form() -> RecoverForm {
        RecoverForm {
            action: "/webhooks/logs/recover",
            since: "2026-12-03T09:00".into(),
            zone: "UTC",
            error: None,
        }
    }

    fn render(name: &str, page: &impl Serialize) -> String {
        Templates::load()
            .expect("templates parse")
            .render(name, page)
            .expect("page renders")
    }

    fn in_language<'a>(catalog: &'a Catalog, lang: Lang) -> Layout<'a> {
        Layout {
            lang: lang.code(),
            t: catalog.texts(lang),
            ..layout(catalog, None)
        }
    }

    #[test]
    fn the_preview_says_how_many_go_where_in_both_languages_and_escapes_the_url() {
        let catalog = Catalog::load().expect("texts load");
        for lang in Lang::ALL {
            let page = RecoverPreviewPage {
                layout: in_language(&catalog, lang),
                list_path: "/webhooks/logs",
                recover: form(),
                from: Some(at(9)),
                to: Some(at(10)),
                preview: Some(PreviewView {
                    failed: 4,
                    would_redeliver: 3,
                    skipped_format_changed: 1,
                    more: true,
                    url: HOSTILE_URL.into(),
                }),
                confirm: Some(ConfirmForm {
                    action: "/webhooks/logs/recover",
                    csrf_token: "token".into(),
                    from: "2026-12-04T09:00:00Z".into(),
                    to: "2026-12-04T10:00:00Z".into(),
                }),
                problem: None,
            };
            let html = render("logs_recover_preview.html", &page);
            let text = |path: &str| tera::escape_html(catalog.text(lang, path));
            for expected in [
                text("recover.will_send"),
                text("recover.skipped_one"),
                text("recover.more"),
                text("recover.confirm"),
                text("recover.cancel"),
                "<strong id=\"recover-count\">3</strong>".to_owned(),
                "name=\"csrf_token\" value=\"token\"".to_owned(),
                "name=\"from\" value=\"2026-12-04T09:00:00Z\"".to_owned(),
                "type=\"datetime-local\"".to_owned(),
            ] {
                assert!(html.contains(&expected), "{lang:?}: {expected:?} in {html}");
            }
            assert!(!html.contains("<script>"), "{html}");
            assert!(html.contains("&lt;script&gt;"), "{html}");
            // Nothing can be sent: no Confirm.
            let nothing = RecoverPreviewPage {
                preview: Some(PreviewView {
                    failed: 0,
                    would_redeliver: 0,
                    skipped_format_changed: 0,
                    more: false,
                    url: "https://example.com/hook".into(),
                }),
                confirm: None,
                ..page
            };
            let html = render("logs_recover_preview.html", &nothing);
            assert!(html.contains(&text("recover.nothing_failed")), "{html}");
            assert!(!html.contains("recover-confirm\""), "{html}");
        }
    }

    #[test]
    fn the_progress_page_reloads_itself_only_while_deliveries_are_pending() {
        let catalog = Catalog::load().expect("texts load");
        for lang in Lang::ALL {
            let page = |pending: i64| RecoveryPage {
                layout: in_language(&catalog, lang),
                list_path: "/webhooks/logs",
                href: "/webhooks/logs/recoveries/x".into(),
                from: at(9),
                to: at(10),
                requested_at: at(11),
                redelivered: 5,
                delivered: 3,
                failed: 2 - pending,
                pending,
                skipped_format_changed: 0,
                more: false,
                refresh_seconds: (pending > 0).then_some(5),
            };
            let running = render("logs_recovery.html", &page(2));
            assert!(
                running.contains("<meta http-equiv=\"refresh\" content=\"5\">"),
                "{running}"
            );
            assert!(
                running.contains(&tera::escape_html(
                    catalog.text(lang, "recover.status_pending")
                )),
                "{running}"
            );
            let done = render("logs_recovery.html", &page(0));
            assert!(!done.contains("http-equiv"), "{done}");
            assert!(
                done.contains(&tera::escape_html(
                    catalog.text(lang, "recover.status_failed")
                )),
                "{done}"
            );
            assert!(done.contains("id=\"recovery-delivered\">3<"), "{done}");
        }
        // The German page is no copy of the English one.
        assert_ne!(
            catalog.text(Lang::En, "recover.heading"),
            catalog.text(Lang::De, "recover.heading")
        );
    }
}
