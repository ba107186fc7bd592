//! Discord webhooks: one embed, with a short `content` line for notifications.
//!
//! Mentions are switched off twice: `allowed_mentions` parses none, and `@everyone`/`@here` in tenant
//! text get a zero-width space after the `@`, so even a client that ignores `allowed_mentions` shows
//! no ping. Tenant text also has Discord's markdown characters escaped, so a customer cannot dress
//! up a masked link (`[click](https://…)`) or hide text in spoilers.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::message::{CUSTOMER_LABEL, CUSTOMER_NAME_MAX_CHARS, Message, TEST_HEADLINE};
use super::text::truncate_chars;
use crate::erasure::ERASED;
use crate::event::EventType;
use crate::payload::TEST_EVENT_MESSAGE;
use crate::submission::SubmissionStatus;

const USERNAME: &str = "FeedbackPulse";
const CONTENT_MAX_CHARS: usize = 2000;
const TITLE_MAX_CHARS: usize = 256;
const DESCRIPTION_MAX_CHARS: usize = 4096;
const FIELD_VALUE_MAX_CHARS: usize = 1024;
const FOOTER_MAX_CHARS: usize = 2048;
/// Discord's cap on all embed text together: title, description, fields, footer and author.
const EMBED_TOTAL_MAX_CHARS: usize = 6000;
const NO_TEXT: &str = "*(no text)*";

/// Characters Discord markdown gives a meaning to (formatting, links, quotes, headings, mentions).
const MARKDOWN_CHARS: [char; 11] = ['\\', '*', '_', '~', '`', '|', '[', ']', '<', '>', '#'];
const ZERO_WIDTH_SPACE: char = '\u{200B}';

const GREEN: u32 = 0x2E_CC_71;
const AMBER: u32 = 0xF1_C4_0F;
const RED: u32 = 0xE7_4C_3C;
const BLUE: u32 = 0x34_98_DB;
const GREY: u32 = 0x95_A5_A6;

pub(super) fn message(message: &Message<'_>) -> Value {
    let headline = message.headline();
    let title = fit(&headline, TITLE_MAX_CHARS);
    let footer = fit(
        &format!("{} · {}", message.campaign(), message.submission_ref()),
        FOOTER_MAX_CHARS,
    );
    let fields = [
        (
            CUSTOMER_LABEL,
            fit(&tenant_text(&message.customer()), CUSTOMER_NAME_MAX_CHARS),
        ),
        ("Rating", fit(&message.rating(), FIELD_VALUE_MAX_CHARS)),
        ("Status", fit(&message.status(), FIELD_VALUE_MAX_CHARS)),
    ];
    // The description takes whatever the embed total leaves after everything else.
    let other_chars: usize = [title.as_str(), footer.as_str()]
        .into_iter()
        .chain(
            fields
                .iter()
                .flat_map(|(name, value)| [*name, value.as_str()]),
        )
        .map(|text| text.chars().count())
        .sum();
    let description_max_chars = EMBED_TOTAL_MAX_CHARS
        .saturating_sub(other_chars)
        .min(DESCRIPTION_MAX_CHARS);
    let description = message
        .feedback()
        .map_or_else(|| NO_TEXT.to_owned(), tenant_text);
    webhook_body(
        &headline,
        json!({
            "title": title,
            "description": fit(&description, description_max_chars),
            "color": color(message),
            "fields": fields.map(|(name, value)| json!({ "name": name, "value": value, "inline": true })),
            "footer": { "text": footer },
            "timestamp": timestamp(message.occurred_at),
        }),
    )
}

/// Rewrites a stored submission message with [`ERASED`] in place of the customer's words (the
/// embed's description) and name (its customer field). The title and content (the headline),
/// rating, status, colour, footer and time stay. `false` when the body is not laid out as
/// [`message`] lays it out (the caller then clears it whole).
pub(super) fn erase(body: &mut Value) -> bool {
    let Some(embed) = body.pointer_mut("/embeds/0") else {
        return false;
    };
    if embed.get("description").is_none() {
        return false;
    }
    // Escaped as tenant text is, so the body is what the erased submission renders to.
    let erased = tenant_text(ERASED);
    embed["description"] = erased.clone().into();
    let Some(fields) = embed.get_mut("fields").and_then(Value::as_array_mut) else {
        return false;
    };
    let mut customer_erased = false;
    for field in fields.iter_mut() {
        if field.get("name").and_then(Value::as_str) == Some(CUSTOMER_LABEL) {
            field["value"] = erased.clone().into();
            customer_erased = true;
        }
    }
    customer_erased
}

/// The `webhook.test` message: our own wording only, well within every limit.
pub(super) fn test_message(occurred_at: DateTime<Utc>) -> Value {
    webhook_body(
        TEST_HEADLINE,
        json!({
            "title": fit(TEST_HEADLINE, TITLE_MAX_CHARS),
            "description": fit(TEST_EVENT_MESSAGE, DESCRIPTION_MAX_CHARS),
            "color": BLUE,
            "fields": [{ "name": "Event", "value": EventType::WebhookTest.as_str(), "inline": true }],
            "footer": { "text": USERNAME },
            "timestamp": timestamp(occurred_at),
        }),
    )
}

/// The webhook body around one embed, with every mention switched off.
fn webhook_body(content: &str, embed: Value) -> Value {
    json!({
        "username": USERNAME,
        "content": fit(content, CONTENT_MAX_CHARS),
        "embeds": [embed],
        "allowed_mentions": { "parse": [] },
    })
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Green for praise or approval, red for complaints or rejection, amber in between.
fn color(message: &Message<'_>) -> u32 {
    match message.previous_status {
        None => match message.submission.star_rating {
            ..=2 => RED,
            3 => AMBER,
            _ => GREEN,
        },
        Some(_) => match message.submission.status {
            SubmissionStatus::Approved => GREEN,
            SubmissionStatus::Rejected => RED,
            SubmissionStatus::Pending => BLUE,
            SubmissionStatus::Archived => GREY,
        },
    }
}

/// Tenant text made inert: markdown characters escaped, mass mentions broken.
fn tenant_text(text: &str) -> String {
    let mut inert = String::with_capacity(text.len() + text.len() / 8);
    for (index, c) in text.char_indices() {
        if MARKDOWN_CHARS.contains(&c) {
            inert.push('\\');
        }
        inert.push(c);
        if c == '@' && is_mass_mention(&text[index + c.len_utf8()..]) {
            inert.push(ZERO_WIDTH_SPACE);
        }
    }
    inert
}

/// Whether text right after an `@` would make it `@everyone` or `@here` (in any letter case, to be
/// safe against clients that match loosely).
fn is_mass_mention(after_at: &str) -> bool {
    ["everyone", "here"].iter().any(|word| {
        after_at
            .get(..word.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(word))
    })
}

/// Discord counts characters and has no escape sequence a cut could break: a cut after a `\` only
/// makes the ellipsis literal.
fn fit(text: &str, max_chars: usize) -> String {
    truncate_chars(text, max_chars, |kept| kept)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::format::EndpointFormat;
    use crate::format::fixtures::{
        adversarial_events, char_len, created, jane_approved, jane_created, render_json,
        sample_submission, status_changed, strings, submission_message, webhook_test,
    };
    use crate::submission::Submission;

    const MAX_EMBEDS: usize = 10;
    const MAX_FIELDS: usize = 25;
    const FIELD_NAME_MAX_CHARS: usize = 256;
    const AUTHOR_NAME_MAX_CHARS: usize = 256;

    /// Walks a Discord body and checks every limit of the webhook reference, plus mention safety.
    fn assert_within_discord_limits(body: &Value) {
        assert!(char_len(&body["content"]) <= CONTENT_MAX_CHARS);
        assert_eq!(body["allowed_mentions"]["parse"], serde_json::json!([]));
        let embeds = body["embeds"].as_array().expect("embeds array");
        assert!(embeds.len() <= MAX_EMBEDS);
        let mut total_chars = 0;
        for embed in embeds {
            let within = |value: &Value, max_chars: usize, what: &str| {
                let chars = char_len(value);
                assert!(
                    chars <= max_chars,
                    "{what}: {chars} chars, limit {max_chars}"
                );
                chars
            };
            total_chars += within(&embed["title"], TITLE_MAX_CHARS, "title");
            total_chars += within(&embed["description"], DESCRIPTION_MAX_CHARS, "description");
            total_chars += within(&embed["footer"]["text"], FOOTER_MAX_CHARS, "footer");
            total_chars += within(&embed["author"]["name"], AUTHOR_NAME_MAX_CHARS, "author");
            let fields = embed["fields"].as_array().expect("fields array");
            assert!(fields.len() <= MAX_FIELDS);
            for field in fields {
                let name = within(&field["name"], FIELD_NAME_MAX_CHARS, "field name");
                let value = within(&field["value"], FIELD_VALUE_MAX_CHARS, "field value");
                // Discord rejects empty field names and values.
                assert!(name > 0 && value > 0);
                total_chars += name + value;
            }
            assert!(embed["color"].is_u64());
        }
        assert!(
            total_chars <= EMBED_TOTAL_MAX_CHARS,
            "embeds total {total_chars}"
        );
        for text in strings(body) {
            let lower = text.to_lowercase();
            assert!(
                !lower.contains("@everyone") && !lower.contains("@here"),
                "mass mention in {text:.80}"
            );
        }
    }

    fn embed_text(body: &Value) -> String {
        strings(&body["embeds"]).join("\n")
    }

    #[test]
    fn adversarial_input_stays_within_every_limit() {
        for event in adversarial_events() {
            assert_within_discord_limits(&render_json(&event, EndpointFormat::Discord));
        }
    }

    #[test]
    fn long_feedback_fills_the_description_up_to_the_embed_total() {
        let event = created(Submission {
            text_feedback: "👍🏽".repeat(10_000),
            customer_name: Some("n".repeat(5_000)),
            ..sample_submission()
        });
        let body = render_json(&event, EndpointFormat::Discord);
        assert_within_discord_limits(&body);
        let description = char_len(&body["embeds"][0]["description"]);
        assert_eq!(description, DESCRIPTION_MAX_CHARS);
    }

    #[test]
    fn new_feedback_shows_rating_customer_text_campaign_and_status() {
        let body = render_json(&jane_created(), EndpointFormat::Discord);
        assert_within_discord_limits(&body);
        assert_eq!(body["content"], "New feedback: ★★★★★ 5/5");
        let embed = &body["embeds"][0];
        assert_eq!(embed["title"], "New feedback: ★★★★★ 5/5");
        assert_eq!(embed["description"], "Love this product!");
        assert_eq!(embed["color"], GREEN);
        assert_eq!(embed["footer"]["text"], "Campaign #1 · Submission #42");
        assert_eq!(embed["timestamp"], "2024-03-15T10:30:00Z");
        let text = embed_text(&body);
        for fact in ["Jane Doe", "★★★★★ 5/5", "pending"] {
            assert!(text.contains(fact), "missing {fact:?} in {text}");
        }
    }

    #[test]
    fn status_change_shows_from_and_to() {
        let body = render_json(&jane_approved(), EndpointFormat::Discord);
        assert_within_discord_limits(&body);
        assert_eq!(body["content"], "Feedback #42 approved");
        assert_eq!(body["embeds"][0]["color"], GREEN);
        let text = embed_text(&body);
        assert!(text.contains("from pending to approved"), "{text}");
        assert!(text.contains("Jane Doe") && text.contains("Campaign #1"));
    }

    #[test]
    fn test_event_reads_as_a_test_within_every_limit() {
        let body = render_json(&webhook_test(), EndpointFormat::Discord);
        assert_within_discord_limits(&body);
        assert_eq!(body["content"], TEST_HEADLINE);
        let embed = &body["embeds"][0];
        assert_eq!(embed["title"], TEST_HEADLINE);
        assert_eq!(embed["description"], TEST_EVENT_MESSAGE);
        assert_eq!(embed["color"], BLUE);
        assert_eq!(embed["fields"][0]["value"], "webhook.test");
        assert_eq!(embed["timestamp"], "2024-03-15T10:30:00Z");
    }

    #[test]
    fn colour_follows_rating_or_new_status() {
        let rated = |star_rating| {
            created(Submission {
                star_rating,
                ..sample_submission()
            })
        };
        assert_eq!(color(&submission_message(&rated(1))), RED);
        assert_eq!(color(&submission_message(&rated(3))), AMBER);
        assert_eq!(color(&submission_message(&rated(4))), GREEN);
        let rejected = status_changed(
            Submission {
                status: SubmissionStatus::Rejected,
                ..sample_submission()
            },
            SubmissionStatus::Pending,
        );
        assert_eq!(color(&submission_message(&rejected)), RED);
    }

    #[test]
    fn tenant_mentions_and_markdown_are_inert() {
        let event = created(Submission {
            text_feedback: "@everyone @Here [click](https://evil.example) **x**".into(),
            customer_name: Some("<@123> @everyone".into()),
            ..sample_submission()
        });
        let body = render_json(&event, EndpointFormat::Discord);
        assert_within_discord_limits(&body);
        assert_eq!(
            body["embeds"][0]["description"],
            "@\u{200B}everyone @\u{200B}Here \\[click\\](https://evil.example) \\*\\*x\\*\\*"
        );
        assert_eq!(
            body["embeds"][0]["fields"][0]["value"],
            "\\<@123\\> @\u{200B}everyone"
        );
    }

    #[test]
    fn blank_feedback_and_name_get_placeholders() {
        let event = created(Submission {
            text_feedback: " ".into(),
            customer_name: Some(String::new()),
            ..sample_submission()
        });
        let body = render_json(&event, EndpointFormat::Discord);
        assert_within_discord_limits(&body);
        assert_eq!(body["embeds"][0]["description"], NO_TEXT);
        assert_eq!(body["embeds"][0]["fields"][0]["value"], "Anonymous");
    }
}
