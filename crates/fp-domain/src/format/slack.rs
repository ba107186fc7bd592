//! Slack incoming webhooks: a Block Kit message.
//!
//! Slack reads `<…>` in message text as mentions and links (`<!channel>` pings a whole channel), so
//! every piece of tenant text has `&`, `<` and `>` escaped before it is placed, and is shortened only
//! after escaping, so the escaped text fits and no entity is cut in half. Our own wording contains
//! none of those characters, which keeps every `&` in the output the start of an entity.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::message::{CUSTOMER_LABEL, CUSTOMER_NAME_MAX_CHARS, Message, TEST_HEADLINE};
use super::text::truncate_chars;
use crate::erasure::ERASED;
use crate::event::EventType;
use crate::payload::TEST_EVENT_MESSAGE;

const HEADER_MAX_CHARS: usize = 150;
/// Also used for the top-level `text`, the fallback shown in notifications.
const TEXT_MAX_CHARS: usize = 3000;
const FIELD_MAX_CHARS: usize = 2000;
/// Slack rejects empty text, so blank feedback gets a visible placeholder.
const NO_TEXT: &str = "_(no text)_";

pub(super) fn message(message: &Message<'_>) -> Value {
    let headline = message.headline();
    let customer = fit(&escape(&message.customer()), CUSTOMER_NAME_MAX_CHARS);
    let feedback = message.feedback().map(escape);
    let fallback = fallback(&headline, &customer, feedback.as_deref());
    let fields = [
        (CUSTOMER_LABEL, customer),
        ("Rating", message.rating()),
        ("Status", message.status()),
    ]
    .map(|(label, value)| mrkdwn(&field_text(label, &value), FIELD_MAX_CHARS));
    json!({
        "text": fallback,
        "blocks": [
            header(&headline),
            { "type": "section", "fields": fields },
            {
                "type": "section",
                "text": mrkdwn(feedback.as_deref().unwrap_or(NO_TEXT), TEXT_MAX_CHARS),
            },
            { "type": "divider" },
            context(&[
                &message.campaign(),
                &message.submission_ref(),
                &time(message.occurred_at),
            ]),
        ],
    })
}

/// The top-level `text` of a submission message, shown in notifications.
fn fallback(headline: &str, customer: &str, feedback: Option<&str>) -> String {
    let text = match feedback {
        Some(feedback) => format!("{headline} — {customer}: {feedback}"),
        None => format!("{headline} — {customer}"),
    };
    fit(&text, TEXT_MAX_CHARS)
}

fn field_text(label: &str, value: &str) -> String {
    format!("*{label}*\n{value}")
}

/// Rewrites a stored submission message with [`ERASED`] in place of the customer's name and
/// words: the fallback text, the customer field and the feedback section. The headline, rating,
/// status, campaign, submission and time stay. `false` when the body is not laid out as
/// [`message`] lays it out (the caller then clears it whole).
pub(super) fn erase(body: &mut Value) -> bool {
    let Some(blocks) = body.get_mut("blocks").and_then(Value::as_array_mut) else {
        return false;
    };
    let mut headline = None;
    let mut customer_erased = false;
    let mut feedback_erased = false;
    for block in blocks.iter_mut() {
        match block.get("type").and_then(Value::as_str) {
            Some("header") => {
                headline = block
                    .pointer("/text/text")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
            }
            Some("section") => {
                if let Some(fields) = block.get_mut("fields").and_then(Value::as_array_mut) {
                    let label = field_text(CUSTOMER_LABEL, "");
                    for field in fields.iter_mut() {
                        let is_customer = field
                            .get("text")
                            .and_then(Value::as_str)
                            .is_some_and(|text| text.starts_with(&label));
                        if is_customer {
                            *field = mrkdwn(&field_text(CUSTOMER_LABEL, ERASED), FIELD_MAX_CHARS);
                            customer_erased = true;
                        }
                    }
                } else if block.get("text").is_some() {
                    block["text"] = mrkdwn(ERASED, TEXT_MAX_CHARS);
                    feedback_erased = true;
                }
            }
            _ => {}
        }
    }
    let Some(headline) = headline.filter(|_| customer_erased && feedback_erased) else {
        return false;
    };
    body["text"] = fallback(&headline, ERASED, Some(ERASED)).into();
    true
}

/// The `webhook.test` message: our own wording only, which has nothing to escape.
pub(super) fn test_message(occurred_at: DateTime<Utc>) -> Value {
    json!({
        "text": fit(&format!("{TEST_HEADLINE}: {TEST_EVENT_MESSAGE}"), TEXT_MAX_CHARS),
        "blocks": [
            header(TEST_HEADLINE),
            { "type": "section", "text": mrkdwn(TEST_EVENT_MESSAGE, TEXT_MAX_CHARS) },
            { "type": "divider" },
            context(&[EventType::WebhookTest.as_str(), &time(occurred_at)]),
        ],
    })
}

fn header(text: &str) -> Value {
    json!({
        "type": "header",
        "text": { "type": "plain_text", "text": fit(text, HEADER_MAX_CHARS), "emoji": true },
    })
}

fn context(elements: &[&str]) -> Value {
    let elements: Vec<Value> = elements
        .iter()
        .map(|text| mrkdwn(text, TEXT_MAX_CHARS))
        .collect();
    json!({ "type": "context", "elements": elements })
}

fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn mrkdwn(text: &str, max_chars: usize) -> Value {
    json!({ "type": "mrkdwn", "text": fit(text, max_chars) })
}

/// The three escapes Slack asks for; `&` first so the others' entities are not escaped again.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Shortens escaped text without leaving half an entity behind.
fn fit(escaped: &str, max_chars: usize) -> String {
    truncate_chars(escaped, max_chars, without_partial_entity)
}

/// Drops a trailing entity that was cut short (`&am`): in escaped text every `&` starts an entity,
/// and an entity is complete once its `;` follows.
fn without_partial_entity(escaped: &str) -> &str {
    match escaped.rfind('&') {
        Some(start) if !escaped[start..].contains(';') => &escaped[..start],
        _ => escaped,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::format::EndpointFormat;
    use crate::format::fixtures::{
        adversarial_events, char_len, created, jane_approved, jane_created, render_json,
        sample_submission, strings, webhook_test,
    };
    use crate::submission::Submission;

    const MAX_BLOCKS: usize = 50;
    const MAX_FIELDS: usize = 10;
    const MAX_CONTEXT_ELEMENTS: usize = 10;

    /// A text object Slack accepts: non-empty and within `max_chars`.
    fn assert_text_object(text: &Value, max_chars: usize) {
        let chars = char_len(&text["text"]);
        assert!(
            (1..=max_chars).contains(&chars),
            "text object of {chars} chars, limit {max_chars}"
        );
    }

    /// Walks a Slack body and checks every limit of the Block Kit reference, plus our escaping.
    fn assert_within_slack_limits(body: &Value) {
        let fallback = char_len(&body["text"]);
        assert!(
            (1..=TEXT_MAX_CHARS).contains(&fallback),
            "fallback {fallback}"
        );
        let blocks = body["blocks"].as_array().expect("blocks array");
        assert!(!blocks.is_empty() && blocks.len() <= MAX_BLOCKS);
        for block in blocks {
            match block["type"].as_str().expect("block type") {
                "header" => {
                    assert_eq!(block["text"]["type"], "plain_text");
                    assert_text_object(&block["text"], HEADER_MAX_CHARS);
                }
                "section" => {
                    if let Some(fields) = block.get("fields") {
                        let fields = fields.as_array().expect("fields array");
                        assert!(fields.len() <= MAX_FIELDS);
                        for field in fields {
                            assert_text_object(field, FIELD_MAX_CHARS);
                        }
                    }
                    if let Some(text) = block.get("text") {
                        assert_text_object(text, TEXT_MAX_CHARS);
                    }
                    assert!(block.get("fields").is_some() || block.get("text").is_some());
                }
                "context" => {
                    let elements = block["elements"].as_array().expect("elements array");
                    assert!((1..=MAX_CONTEXT_ELEMENTS).contains(&elements.len()));
                    for element in elements {
                        assert_text_object(element, TEXT_MAX_CHARS);
                    }
                }
                "divider" => {}
                other => panic!("unexpected block type {other}"),
            }
        }
        for text in strings(body) {
            // We write no `<` or `>` ourselves, so any would be tenant markup reaching Slack.
            assert!(
                !text.contains(['<', '>']),
                "raw angle bracket in {text:.80}"
            );
            for (index, _) in text.match_indices('&') {
                let rest = &text[index..];
                assert!(
                    ["&amp;", "&lt;", "&gt;"]
                        .iter()
                        .any(|entity| rest.starts_with(entity)),
                    "broken entity in {rest:.10}"
                );
            }
        }
    }

    fn all_text(body: &Value) -> String {
        strings(body).join("\n")
    }

    #[test]
    fn adversarial_input_stays_within_every_limit() {
        for event in adversarial_events() {
            assert_within_slack_limits(&render_json(&event, EndpointFormat::Slack));
        }
    }

    #[test]
    fn new_feedback_shows_rating_customer_text_campaign_and_status() {
        let body = render_json(&jane_created(), EndpointFormat::Slack);
        assert_within_slack_limits(&body);
        assert_eq!(body["blocks"][0]["text"]["text"], "New feedback: ★★★★★ 5/5");
        assert_eq!(
            body["text"],
            "New feedback: ★★★★★ 5/5 — Jane Doe: Love this product!"
        );
        let text = all_text(&body);
        for fact in [
            "*Customer*\nJane Doe",
            "*Rating*\n★★★★★ 5/5",
            "*Status*\npending",
            "Love this product!",
            "Campaign #1",
            "Submission #42",
            "2024-03-15 10:30 UTC",
        ] {
            assert!(text.contains(fact), "missing {fact:?} in {text}");
        }
    }

    #[test]
    fn status_change_shows_from_and_to() {
        let body = render_json(&jane_approved(), EndpointFormat::Slack);
        assert_within_slack_limits(&body);
        assert_eq!(body["blocks"][0]["text"]["text"], "Feedback #42 approved");
        let text = all_text(&body);
        assert!(
            text.contains("*Status*\nfrom pending to approved"),
            "{text}"
        );
        assert!(text.contains("Jane Doe") && text.contains("Campaign #1"));
    }

    #[test]
    fn test_event_reads_as_a_test_within_every_limit() {
        let body = render_json(&webhook_test(), EndpointFormat::Slack);
        assert_within_slack_limits(&body);
        assert_eq!(body["blocks"][0]["text"]["text"], TEST_HEADLINE);
        assert_eq!(
            body["text"],
            format!("{TEST_HEADLINE}: {TEST_EVENT_MESSAGE}")
        );
        let text = all_text(&body);
        for fact in [TEST_EVENT_MESSAGE, "webhook.test", "2024-03-15 10:30 UTC"] {
            assert!(text.contains(fact), "missing {fact:?} in {text}");
        }
    }

    #[test]
    fn tenant_markup_is_escaped_not_interpreted() {
        let event = created(Submission {
            text_feedback: "<!channel> <https://evil.example|click> & co".into(),
            customer_name: Some("<@U123>".into()),
            ..sample_submission()
        });
        let body = render_json(&event, EndpointFormat::Slack);
        assert_within_slack_limits(&body);
        let text = all_text(&body);
        assert!(text.contains("&lt;!channel&gt; &lt;https://evil.example|click&gt; &amp; co"));
        assert!(text.contains("&lt;@U123&gt;"));
    }

    #[test]
    fn blank_feedback_and_name_get_placeholders() {
        let event = created(Submission {
            text_feedback: String::new(),
            customer_name: None,
            ..sample_submission()
        });
        let body = render_json(&event, EndpointFormat::Slack);
        assert_within_slack_limits(&body);
        assert_eq!(body["blocks"][2]["text"]["text"], NO_TEXT);
        assert!(all_text(&body).contains("*Customer*\nAnonymous"));
    }

    #[test]
    fn truncation_happens_after_escaping_and_never_splits_an_entity() {
        assert_eq!(fit(&escape("&&&"), 7), "&amp;…");
        assert_eq!(fit(&escape("a<b"), 5), "a…");
        assert_eq!(fit(&escape("a<b"), 8), "a&lt;b");
        let escaped = escape(&"&".repeat(1_000));
        let cut = fit(&escaped, TEXT_MAX_CHARS);
        assert!(cut.chars().count() <= TEXT_MAX_CHARS);
        assert!(cut.trim_end_matches('…').ends_with("&amp;"));
    }
}
