//! What the Health section of the tenant's Webhook Logs page renders (`templates/logs_health.html`):
//! how the endpoint's attempts went over the last 24 hours and 7 days, and the endpoint's state.

use fp_domain::endpoint_health::EndpointState;
use fp_domain::time_zone::Tz;
use serde::Serialize;

use crate::local_time::{LocalTime, Precision};

#[derive(Debug, Serialize)]
pub struct HealthView {
    /// The last 24 hours, then the last 7 days.
    pub periods: Vec<PeriodView>,
    pub state: StateView,
}

/// How the attempts of one period went.
#[derive(Debug, Serialize)]
pub struct PeriodView {
    /// `day` or `week`: the catalog key of its heading (`logs.health.<id>`) and its element ids.
    pub id: &'static str,
    pub attempts: i64,
    /// `97.5`, one decimal, in the page's language; `None` without attempts.
    pub success_rate: Option<String>,
    /// Milliseconds, rounded; `None` without attempts.
    pub p50_ms: Option<i64>,
    pub p95_ms: Option<i64>,
}

/// [`EndpointState`] with its times in the user's zone; `kind` picks the template's words.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StateView {
    NotConfigured,
    Healthy {
        last_success_at: Option<LocalTime>,
    },
    Failing {
        since: LocalTime,
        disable_at: LocalTime,
        due: bool,
    },
    Disabled {
        at: LocalTime,
        /// The api's reason, in English (as the Integrations page shows it).
        reason: Option<String>,
    },
    SwitchedOff,
}

impl StateView {
    pub fn new(state: EndpointState, zone: Tz) -> Self {
        let time = |at| LocalTime::new(at, zone, Precision::Minutes);
        match state {
            EndpointState::NotConfigured => StateView::NotConfigured,
            EndpointState::Healthy { last_success_at } => StateView::Healthy {
                last_success_at: last_success_at.map(time),
            },
            EndpointState::Failing {
                since,
                disable_at,
                due,
            } => StateView::Failing {
                since: time(since),
                disable_at: time(disable_at),
                due,
            },
            EndpointState::Disabled { at, reason } => StateView::Disabled {
                at: time(at),
                reason,
            },
            EndpointState::SwitchedOff => StateView::SwitchedOff,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use serde_json::Value;

    use super::*;
    use crate::i18n::{Catalog, Lang};
    use crate::pages::logs::chart;
    use crate::views::Templates;

    /// What `logs_health.html` and `logs_chart.html` see of their page.
    #[derive(Serialize)]
    struct Include<'a> {
        t: &'a Value,
        health: &'a HealthView,
        chart: &'a chart::Chart,
    }

    fn render(name: &str, lang: Lang, health: &HealthView, chart: &chart::Chart) -> String {
        let catalog = Catalog::load().expect("texts load");
        let page = Include {
            t: catalog.texts(lang),
            health,
            chart,
        };
        Templates::load()
            .expect("templates parse")
            .render(name, &page)
            .expect("renders")
    }

    fn failing(due: bool) -> HealthView {
        let at = |day| {
            Utc.with_ymd_and_hms(2026, 12, day, 9, 30, 0)
                .single()
                .expect("valid")
        };
        HealthView {
            periods: vec![PeriodView {
                id: "day",
                attempts: 40,
                success_rate: Some("97,5".to_owned()),
                p50_ms: Some(12),
                p95_ms: Some(480),
            }],
            state: StateView::new(
                EndpointState::Failing {
                    since: at(1),
                    disable_at: at(6),
                    due,
                },
                Tz::UTC,
            ),
        }
    }

    #[test]
    fn a_failing_endpoint_says_when_it_will_be_disabled_in_both_languages() {
        let chart = chart::chart(Utc::now(), Utc::now(), 60, &[], Tz::UTC);
        for (lang, words) in [
            (Lang::En, "FeedbackPulse will disable the endpoint at"),
            (Lang::De, "deaktiviert FeedbackPulse den Endpunkt am"),
        ] {
            let html = render("logs_health.html", lang, &failing(false), &chart);
            assert!(html.contains(words), "{html}");
            assert!(html.contains("2026-12-06 09:30 UTC"), "{html}");
            assert!(html.contains(r#"data-state="failing""#), "{html}");
            assert!(html.contains("97,5 %") && html.contains("480 ms"), "{html}");
        }
        let due = render("logs_health.html", Lang::En, &failing(true), &chart);
        assert!(due.contains("at its next failed delivery"), "{due}");
    }

    #[test]
    fn a_disabled_endpoint_points_to_the_integrations_page() {
        let chart = chart::chart(Utc::now(), Utc::now(), 60, &[], Tz::UTC);
        let health = HealthView {
            periods: Vec::new(),
            state: StateView::new(
                EndpointState::Disabled {
                    at: Utc::now(),
                    reason: Some("every delivery failed since <then>".to_owned()),
                },
                Tz::UTC,
            ),
        };
        let html = render("logs_health.html", Lang::En, &health, &chart);
        assert!(html.contains(r#"href="/settings/integrations""#), "{html}");
        assert!(!html.contains("/api/v2"), "{html}");
        assert!(
            html.contains("every delivery failed since &lt;then&gt;"),
            "{html}"
        );
    }

    #[test]
    fn the_chart_is_titled_by_what_a_bar_counts() {
        let health = failing(false);
        let from = Utc::now();
        for (bucket_seconds, lang, title) in [
            (10, Lang::En, "Attempts per 10 seconds"),
            (3600, Lang::En, "Attempts per hour"),
            (3 * 3600, Lang::De, "Versuche pro 3 Stunden"),
            (86_400, Lang::De, "Versuche pro Tag"),
        ] {
            let chart = chart::chart(from, from, bucket_seconds, &[], Tz::UTC);
            let html = render("logs_chart.html", lang, &health, &chart);
            assert!(
                html.contains(&format!(r#"id="deliveries-chart-caption">{title}<"#)),
                "{html}"
            );
        }
    }
}
