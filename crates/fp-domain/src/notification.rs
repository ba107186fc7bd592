//! The emails that tell a tenant's admins their webhook endpoint is failing, and that it was
//! disabled: what failed, how to fix it ([`crate::explanation`]) and where to look. Composed here
//! from the facts the api gathers; sent by the api's notifier through SMTP. Plain text in English,
//! the api's language (users have no language of their own stored).

use chrono::{DateTime, Utc};

use crate::explanation::explain;
use crate::url_redaction::redact_url;

/// What is known about an endpoint that fails every delivery.
#[derive(Debug, Clone)]
pub struct FailingEndpoint {
    /// The endpoint's URL as stored; the email names it redacted (no path, query or credentials).
    pub url: String,
    /// Since when every delivery to it has failed.
    pub failing_since: DateTime<Utc>,
    /// Its newest failed attempt in the delivery log, if one is logged.
    pub last_failure: Option<FailedAttempt>,
    /// The dashboard's address as browsers open it (`dashboard.public_url`), for the links.
    pub dashboard_url: String,
}

/// One failed attempt, as its log record has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedAttempt {
    pub attempted_at: DateTime<Utc>,
    /// The record's error kind (`connection_refused`, `http_status`, ...).
    pub error_kind: Option<String>,
    pub response_status: Option<u16>,
}

/// An email's subject and plain-text body (lines of at most [`LINE_WIDTH`] characters, except a
/// word longer than that, such as a long link).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub subject: String,
    pub body: String,
}

/// Longest line of a body, so it reads in any mail client and goes out without re-encoding.
pub const LINE_WIDTH: usize = 72;

pub const FAILING_SUBJECT: &str = "Your FeedbackPulse webhook endpoint is failing";
pub const DISABLED_SUBJECT: &str = "Your FeedbackPulse webhook endpoint has been disabled";

/// The email sent once an endpoint has failed every delivery for a while (`now` is when it is
/// composed), saying when it will be disabled unless a delivery succeeds first.
pub fn failing_email(
    endpoint: &FailingEndpoint,
    now: DateTime<Utc>,
    disabled_at: DateTime<Utc>,
) -> Email {
    let mut body = Body::default();
    body.paragraph("Hello,");
    body.paragraph(&format!(
        "every delivery to your FeedbackPulse webhook endpoint has failed since {} ({} ago).",
        time(endpoint.failing_since),
        duration(now - endpoint.failing_since)
    ));
    body.facts(endpoint);
    body.paragraph(&format!(
        "Unless a delivery succeeds before {}, the endpoint will be disabled: no events are sent \
         to it from then on until you save its settings again. Until then every event is retried \
         on its schedule, so fixing the endpoint soon loses nothing.",
        time(disabled_at)
    ));
    body.links(endpoint);
    body.signature();
    Email {
        subject: FAILING_SUBJECT.to_owned(),
        body: body.text,
    }
}

/// The email sent when an endpoint was disabled for failing every delivery too long.
pub fn disabled_email(endpoint: &FailingEndpoint, disabled_at: DateTime<Utc>) -> Email {
    let mut body = Body::default();
    body.paragraph("Hello,");
    body.paragraph(&format!(
        "your FeedbackPulse webhook endpoint has been disabled at {}: every delivery to it had \
         failed since {} ({}). No events are sent to it now.",
        time(disabled_at),
        time(endpoint.failing_since),
        duration(disabled_at - endpoint.failing_since)
    ));
    body.facts(endpoint);
    body.paragraph(
        "To enable it again, fix the problem above, then save the webhook settings again \
         (Settings > Integrations in the dashboard, or PUT /api/v2/webhooks/config): new events \
         are delivered from then on. Deliveries that failed meanwhile can be redelivered from the \
         delivery logs.",
    );
    body.links(endpoint);
    body.signature();
    Email {
        subject: DISABLED_SUBJECT.to_owned(),
        body: body.text,
    }
}

#[derive(Default)]
struct Body {
    text: String,
}

impl Body {
    /// `text` wrapped to [`LINE_WIDTH`], then a blank line.
    fn paragraph(&mut self, text: &str) {
        self.wrapped(text, "");
        self.text.push('\n');
    }

    /// `text` wrapped, each line after `indent`.
    fn wrapped(&mut self, text: &str, indent: &str) {
        let mut line = String::new();
        for word in text.split_whitespace() {
            if !line.is_empty() && indent.len() + line.len() + 1 + word.len() > LINE_WIDTH {
                self.line(indent, &line);
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        if !line.is_empty() {
            self.line(indent, &line);
        }
    }

    fn line(&mut self, indent: &str, text: &str) {
        self.text.push_str(indent);
        self.text.push_str(text);
        self.text.push('\n');
    }

    /// The endpoint, its last failure and what to do about it.
    fn facts(&mut self, endpoint: &FailingEndpoint) {
        self.wrapped(&format!("Endpoint: {}", redact_url(&endpoint.url)), "  ");
        let failure = endpoint.last_failure.as_ref();
        if let Some(failure) = failure {
            let outcome = match (failure.response_status, failure.error_kind.as_deref()) {
                (Some(status), _) => format!("HTTP {status}"),
                (None, Some(kind)) => format!("no HTTP answer ({kind})"),
                (None, None) => "no HTTP answer".to_owned(),
            };
            self.wrapped(
                &format!("Last failure: {}, {outcome}", time(failure.attempted_at)),
                "  ",
            );
        }
        self.text.push('\n');
        let explanation = failure
            .and_then(|failure| explain(failure.error_kind.as_deref(), failure.response_status));
        match explanation {
            Some(explanation) => {
                self.paragraph("What went wrong, and how to fix it:");
                self.wrapped(explanation.english(), "  ");
                self.text.push('\n');
            }
            None => self
                .paragraph("The delivery logs show each attempt's error and what to do about it."),
        }
    }

    fn links(&mut self, endpoint: &FailingEndpoint) {
        let dashboard = endpoint.dashboard_url.trim_end_matches('/');
        self.line("", "Delivery logs:");
        self.line("  ", &format!("{dashboard}/webhooks/logs"));
        self.line("", "Webhook settings:");
        self.line("  ", &format!("{dashboard}/settings/integrations"));
        self.text.push('\n');
    }

    fn signature(&mut self) {
        self.line("", "-- ");
        self.wrapped(
            "FeedbackPulse Webhooks. You receive this as an admin of your organisation's \
             FeedbackPulse account.",
            "",
        );
    }
}

/// A moment as the email writes it: UTC, to the second.
fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A span in its two largest units (`2 days 3 hours`, `1 hour 5 minutes`, `40 seconds`).
fn duration(span: chrono::TimeDelta) -> String {
    let seconds = span.num_seconds().max(0);
    let units = [
        ("day", 86_400),
        ("hour", 3_600),
        ("minute", 60),
        ("second", 1),
    ];
    let parts: Vec<String> = units
        .iter()
        .scan(seconds, |left, (name, size)| {
            let count = *left / size;
            *left %= size;
            Some((count, name))
        })
        .skip_while(|(count, _)| *count == 0)
        .take(2)
        .filter(|(count, _)| *count > 0)
        .map(|(count, name)| format!("{count} {name}{}", if count == 1 { "" } else { "s" }))
        .collect();
    if parts.is_empty() {
        "0 seconds".to_owned()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explanation::Explanation;
    use crate::test_clock::at;

    fn endpoint(last_failure: Option<FailedAttempt>) -> FailingEndpoint {
        FailingEndpoint {
            url: "https://user:pass@hooks.example.com/secret/path?token=abc".to_owned(),
            failing_since: at(0),
            last_failure,
            dashboard_url: "https://dashboard.example/".to_owned(),
        }
    }

    fn failed(error_kind: &str, response_status: Option<u16>) -> Option<FailedAttempt> {
        Some(FailedAttempt {
            attempted_at: at(3_590),
            error_kind: Some(error_kind.to_owned()),
            response_status,
        })
    }

    /// The body with its line breaks undone, so a test can look for a sentence.
    fn unwrapped(email: &Email) -> String {
        email.body.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn the_failing_email_says_what_failed_how_to_fix_it_and_when_it_is_disabled() {
        let email = failing_email(
            &endpoint(failed("http_status", Some(500))),
            at(3_600),
            at(5 * 86_400),
        );
        assert_eq!(email.subject, FAILING_SUBJECT);
        let text = unwrapped(&email);
        for expected in [
            "has failed since 2027-01-15 08:00:00 UTC (1 hour ago)",
            "Endpoint: https://hooks.example.com",
            "Last failure: 2027-01-15 08:59:50 UTC, HTTP 500",
            Explanation::ServerError.english(),
            "will be disabled",
            "2027-01-20 08:00:00 UTC",
            "https://dashboard.example/webhooks/logs",
            "https://dashboard.example/settings/integrations",
        ] {
            assert!(text.contains(expected), "{expected:?} missing in {text}");
        }
        // The stored URL's path, query and credentials stay out of the email.
        for hidden in ["secret", "token", "pass"] {
            assert!(!email.body.contains(hidden), "{hidden} in {}", email.body);
        }
    }

    #[test]
    fn the_disabled_email_says_what_failed_and_how_to_enable_it_again() {
        let email = disabled_email(
            &endpoint(failed("connection_refused", None)),
            at(5 * 86_400 + 90),
        );
        assert_eq!(email.subject, DISABLED_SUBJECT);
        let text = unwrapped(&email);
        for expected in [
            "has been disabled at 2027-01-20 08:01:30 UTC",
            "failed since 2027-01-15 08:00:00 UTC (5 days)",
            "no HTTP answer (connection_refused)",
            Explanation::ConnectionRefused.english(),
            "save the webhook settings again",
            "PUT /api/v2/webhooks/config",
            "redelivered",
        ] {
            assert!(text.contains(expected), "{expected:?} missing in {text}");
        }
    }

    #[test]
    fn without_a_logged_failure_the_email_points_to_the_logs() {
        let email = failing_email(&endpoint(None), at(60), at(120));
        let text = unwrapped(&email);
        assert!(!text.contains("Last failure"), "{text}");
        assert!(text.contains("The delivery logs show each attempt's error"));
        // An interrupted attempt has no explanation either.
        let email = failing_email(&endpoint(failed("interrupted", None)), at(60), at(120));
        assert!(unwrapped(&email).contains("The delivery logs show"));
    }

    #[test]
    fn lines_stay_short_except_a_single_long_word() {
        let mut long = endpoint(failed("tls_unknown_authority", None));
        long.dashboard_url = format!("https://{}.example", "d".repeat(80));
        for email in [
            failing_email(&long, at(10), at(20)),
            disabled_email(&long, at(20)),
        ] {
            for line in email.body.lines() {
                let words = line.split_whitespace().count();
                assert!(
                    line.len() <= LINE_WIDTH || words == 1,
                    "{line:?} is too long"
                );
            }
            assert!(email.body.is_ascii());
        }
    }

    #[test]
    fn durations_use_their_two_largest_units() {
        let span = chrono::TimeDelta::seconds;
        assert_eq!(duration(span(0)), "0 seconds");
        assert_eq!(duration(span(-5)), "0 seconds");
        assert_eq!(duration(span(1)), "1 second");
        assert_eq!(duration(span(3_600)), "1 hour");
        assert_eq!(duration(span(3_600 + 5 * 60 + 7)), "1 hour 5 minutes");
        assert_eq!(duration(span(2 * 86_400 + 7)), "2 days");
        assert_eq!(duration(span(86_400 + 3 * 3_600)), "1 day 3 hours");
    }
}
