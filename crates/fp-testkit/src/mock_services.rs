//! Stand-ins for Slack incoming webhooks and Discord webhooks. Each checks every request against
//! the rules the real service enforces and answers as that service does, so an end-to-end test
//! fails on a body the real service would refuse. Each can be scripted to rate-limit its first
//! requests or to play a webhook that is gone, and records its own verdict on every request.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use fp_testkit::mock_services::SlackMock;
//! let slack = SlackMock::new().rate_limit_first(1, 1).start().await?;
//! let url = slack.url("/services/T000/B000/XXXX"); // https://hooks.slack.com:<port>/services/…
//! // … deliver to `url` through a hosts file that maps hooks.slack.com to 127.0.0.1 …
//! assert!(slack.verdicts.rejections().is_empty());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Map, Value, json};

use crate::receiver::{CannedResponse, ReceivedRequest, Responder, TlsReceiver};

/// The mock's verdict on each request, in arrival order: `Err` says which rules the body broke.
#[derive(Debug, Clone, Default)]
pub struct Verdicts(Arc<Mutex<Vec<Result<(), String>>>>);

impl Verdicts {
    pub fn all(&self) -> Vec<Result<(), String>> {
        self.entries().clone()
    }

    /// Why the real service would have refused each refused request; empty when all were valid.
    pub fn rejections(&self) -> Vec<String> {
        self.entries()
            .iter()
            .filter_map(|verdict| verdict.clone().err())
            .collect()
    }

    fn record(&self, verdict: Result<(), String>) {
        self.entries().push(verdict);
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Vec<Result<(), String>>> {
        // A test that panicked while holding the lock left a complete list behind.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How a service answered one request, and whether the real service would have accepted its body.
pub struct Judgment {
    pub answer: CannedResponse,
    pub verdict: Result<(), String>,
}

/// The rules and answers of one chat service.
pub trait ChatService: Clone + Default + Send + Sync + 'static {
    /// Host names the service's webhooks live under; the mock's certificate covers all of them and
    /// [`MockWebhook::url`] uses the first.
    const HOST_NAMES: &'static [&'static str];

    /// Checks a POST as the service does and gives its answer. `index` counts requests from 0.
    fn judge(&self, request: &ReceivedRequest, index: usize) -> Judgment;

    /// The service's answer while it rate-limits the webhook.
    fn rate_limited(&self, retry_after_secs: u64) -> CannedResponse;
}

/// A scriptable mock of one webhook of service `S`; see [`SlackMock`] and [`DiscordMock`].
#[derive(Clone, Default)]
pub struct ChatMock<S> {
    service: S,
    rate_limited_requests: usize,
    retry_after_secs: u64,
    /// Set when the webhook no longer exists: this answer replaces every other.
    gone: Option<CannedResponse>,
    verdicts: Verdicts,
}

/// A Slack incoming webhook (`https://hooks.slack.com/services/…`).
pub type SlackMock = ChatMock<SlackWebhook>;
/// A Discord webhook (`https://discord.com/api/webhooks/{id}/{token}`).
pub type DiscordMock = ChatMock<DiscordWebhook>;

impl<S: ChatService> ChatMock<S> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers the first `requests` requests with the service's 429 and `Retry-After`.
    pub fn rate_limit_first(mut self, requests: usize, retry_after_secs: u64) -> Self {
        self.rate_limited_requests = requests;
        self.retry_after_secs = retry_after_secs;
        self
    }

    /// A handle on the verdicts this mock records, for assertions while or after it runs.
    pub fn verdicts(&self) -> Verdicts {
        self.verdicts.clone()
    }

    pub fn responder(&self) -> Responder {
        let mock = self.clone();
        Arc::new(move |request, index| mock.answer(request, index))
    }

    /// Starts an HTTPS receiver on a free loopback port with a certificate for the service's hosts.
    pub async fn start(self) -> anyhow::Result<MockWebhook> {
        let receiver =
            TlsReceiver::start_with_names("127.0.0.1:0".parse()?, S::HOST_NAMES, self.responder())
                .await?;
        Ok(MockWebhook {
            receiver,
            verdicts: self.verdicts,
            host: S::HOST_NAMES.first().copied().unwrap_or("localhost"),
        })
    }

    /// Every request is judged, scripted or not, so a test can tell a body the service would
    /// refuse even when the script answered something else.
    fn answer(&self, request: &ReceivedRequest, index: usize) -> CannedResponse {
        let judgment = if request.method == "POST" {
            self.service.judge(request, index)
        } else {
            Judgment {
                answer: CannedResponse::new(405, "method not allowed"),
                verdict: Err(format!("{} instead of POST", request.method)),
            }
        };
        self.verdicts.record(judgment.verdict);
        if let Some(gone) = &self.gone {
            gone.clone()
        } else if index < self.rate_limited_requests {
            self.service.rate_limited(self.retry_after_secs)
        } else {
            judgment.answer
        }
    }
}

impl SlackMock {
    /// The webhook was removed: 404 with Slack's `error` body (`no_service`, `channel_not_found`).
    pub fn gone(mut self, error: &str) -> Self {
        self.gone = Some(plain_text(404, error));
        self
    }

    /// The webhook's channel was archived: 410 `channel_is_archived`.
    pub fn archived(mut self) -> Self {
        self.gone = Some(plain_text(410, "channel_is_archived"));
        self
    }
}

impl DiscordMock {
    /// The webhook was deleted: 404 Unknown Webhook.
    pub fn deleted(mut self) -> Self {
        self.gone = Some(json_response(
            404,
            &json!({"message": "Unknown Webhook", "code": 10015}),
        ));
        self
    }
}

/// A started mock.
pub struct MockWebhook {
    pub receiver: TlsReceiver,
    pub verdicts: Verdicts,
    host: &'static str,
}

impl MockWebhook {
    /// `https://<service host>:<port><path>`: the real host name, which the dispatcher's hosts file
    /// maps to the mock, so format detection sees the service's URL.
    pub fn url(&self, path: &str) -> String {
        self.url_at(self.host, path)
    }

    /// As [`MockWebhook::url`] with another of the service's hosts (`canary.discord.com`).
    pub fn url_at(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.receiver.address().port())
    }
}

// ---------------------------------------------------------------------------------------------
// Rules both services share: typed fields and length limits counted in characters.

/// Where in a body a rule was broken, e.g. `blocks.2.text.text`.
#[derive(Debug, Clone, Default)]
struct JsonPath(Vec<String>);

impl JsonPath {
    fn child(&self, key: impl ToString) -> JsonPath {
        let mut segments = self.0.clone();
        segments.push(key.to_string());
        JsonPath(segments)
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("(body)")
        } else {
            f.write_str(&self.0.join("."))
        }
    }
}

/// One broken rule. Codes and messages follow Discord's form-body errors; Slack answers only a
/// summary code, so for Slack they serve the verdict alone.
#[derive(Debug)]
struct Problem {
    path: JsonPath,
    code: &'static str,
    message: String,
}

fn describe(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|problem| format!("{}: {} [{}]", problem.path, problem.message, problem.code))
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    Required,
    Optional,
}

/// Collects the problems of one body. Counts are in Unicode scalar values, as both services count.
#[derive(Debug, Default)]
struct PayloadCheck {
    problems: Vec<Problem>,
}

impl PayloadCheck {
    fn report(&mut self, path: &JsonPath, code: &'static str, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.clone(),
            code,
            message: message.into(),
        });
    }

    /// `None` when the value is absent (JSON `null` counts as absent, as both services read it).
    fn present<'v>(
        &mut self,
        path: &JsonPath,
        value: Option<&'v Value>,
        presence: Presence,
    ) -> Option<&'v Value> {
        match value {
            Some(Value::Null) | None => {
                if presence == Presence::Required {
                    self.report(path, "BASE_TYPE_REQUIRED", "This field is required");
                }
                None
            }
            Some(value) => Some(value),
        }
    }

    fn length(&mut self, path: &JsonPath, found: usize, allowed: &RangeInclusive<usize>) {
        if allowed.contains(&found) {
            return;
        }
        let (start, end) = (*allowed.start(), *allowed.end());
        let (code, rule) = if start == 0 {
            (
                "BASE_TYPE_MAX_LENGTH",
                format!("Must be {end} or fewer in length."),
            )
        } else {
            (
                "BASE_TYPE_BAD_LENGTH",
                format!("Must be between {start} and {end} in length."),
            )
        };
        self.report(path, code, format!("{rule} (found {found})"));
    }

    /// A string of `allowed` characters; returns its length (0 when absent or not a string).
    fn text(
        &mut self,
        path: &JsonPath,
        value: Option<&Value>,
        presence: Presence,
        allowed: RangeInclusive<usize>,
    ) -> usize {
        let Some(value) = self.present(path, value, presence) else {
            return 0;
        };
        let Some(text) = value.as_str() else {
            self.report(path, "STRING_TYPE_CONVERT", "Must be a string.");
            return 0;
        };
        let chars = text.chars().count();
        self.length(path, chars, &allowed);
        chars
    }

    /// A list of `allowed` items; empty when absent or not a list.
    fn list<'v>(
        &mut self,
        path: &JsonPath,
        value: Option<&'v Value>,
        presence: Presence,
        allowed: RangeInclusive<usize>,
    ) -> &'v [Value] {
        let Some(value) = self.present(path, value, presence) else {
            return &[];
        };
        let Some(items) = value.as_array() else {
            self.report(
                path,
                "LIST_TYPE_CONVERT",
                "Only iterables may be used in a ListType",
            );
            return &[];
        };
        self.length(path, items.len(), &allowed);
        items
    }

    fn object<'v>(
        &mut self,
        path: &JsonPath,
        value: Option<&'v Value>,
        presence: Presence,
    ) -> Option<&'v Map<String, Value>> {
        let value = self.present(path, value, presence)?;
        let object = value.as_object();
        if object.is_none() {
            self.report(
                path,
                "MODEL_TYPE_CONVERT",
                "Only dictionaries may be used in a ModelType",
            );
        }
        object
    }

    fn boolean(&mut self, path: &JsonPath, value: Option<&Value>) {
        if let Some(value) = self.present(path, value, Presence::Optional)
            && !value.is_boolean()
        {
            self.report(path, "BASE_TYPE_BOOLEAN", "Must be either true or false.");
        }
    }

    fn finish(self) -> Result<(), Vec<Problem>> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(self.problems)
        }
    }
}

fn response(status: u16, content_type: &str, body: String) -> CannedResponse {
    CannedResponse {
        headers: vec![("content-type".to_owned(), content_type.to_owned())],
        ..CannedResponse::new(status, &body)
    }
}

fn plain_text(status: u16, body: &str) -> CannedResponse {
    response(status, "text/plain; charset=utf-8", body.to_owned())
}

fn json_response(status: u16, body: &Value) -> CannedResponse {
    response(status, "application/json", body.to_string())
}

fn with_retry_after(mut answer: CannedResponse, retry_after_secs: u64) -> CannedResponse {
    answer
        .headers
        .push(("retry-after".to_owned(), retry_after_secs.to_string()));
    answer
}

fn json_object(body: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(object)) => Some(object),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Slack: https://api.slack.com/messaging/webhooks and the Block Kit reference.

const SLACK_MAX_BLOCKS: usize = 50;
const SLACK_BLOCK_ID_MAX_CHARS: usize = 255;
const SLACK_HEADER_MAX_CHARS: usize = 150;
/// Section text, and the ceiling of any text object.
const SLACK_TEXT_MAX_CHARS: usize = 3000;
const SLACK_MAX_SECTION_FIELDS: usize = 10;
const SLACK_FIELD_MAX_CHARS: usize = 2000;
const SLACK_MAX_CONTEXT_ELEMENTS: usize = 10;
const PLAIN_TEXT: &str = "plain_text";
const MRKDWN: &str = "mrkdwn";
/// Real block types whose rules this mock does not model: a body with one is reported rather than
/// passed unchecked.
const SLACK_UNMODELLED_BLOCKS: [&str; 7] = [
    "actions",
    "file",
    "image",
    "input",
    "markdown",
    "rich_text",
    "video",
];

#[derive(Debug, Clone, Copy, Default)]
pub struct SlackWebhook;

impl ChatService for SlackWebhook {
    const HOST_NAMES: &'static [&'static str] = &["hooks.slack.com"];

    fn judge(&self, request: &ReceivedRequest, _index: usize) -> Judgment {
        match check_slack_message(&request.body) {
            // Slack labels its `ok` as HTML.
            Ok(()) => Judgment {
                answer: response(200, "text/html", "ok".to_owned()),
                verdict: Ok(()),
            },
            Err((error, why)) => Judgment {
                answer: plain_text(400, error),
                verdict: Err(format!("{error}: {why}")),
            },
        }
    }

    fn rate_limited(&self, retry_after_secs: u64) -> CannedResponse {
        with_retry_after(plain_text(429, "rate_limited"), retry_after_secs)
    }
}

/// Slack's error code for a refused body, with the reason.
fn check_slack_message(body: &[u8]) -> Result<(), (&'static str, String)> {
    let Some(message) = json_object(body) else {
        return Err((
            "invalid_payload",
            "the body is not a JSON object".to_owned(),
        ));
    };
    let root = JsonPath::default();
    let mut fields = PayloadCheck::default();
    // No length limit on `text`: Slack shortens a long one rather than refusing it.
    fields.text(
        &root.child("text"),
        message.get("text"),
        Presence::Optional,
        0..=usize::MAX,
    );
    let blocks_path = root.child("blocks");
    let blocks = fields.list(
        &blocks_path,
        message.get("blocks"),
        Presence::Optional,
        0..=usize::MAX,
    );
    fields
        .finish()
        .map_err(|problems| ("invalid_payload", describe(&problems)))?;

    let mut block_rules = PayloadCheck::default();
    block_rules.length(&blocks_path, blocks.len(), &(0..=SLACK_MAX_BLOCKS));
    for (index, block) in blocks.iter().enumerate() {
        check_slack_block(&mut block_rules, &blocks_path.child(index), block);
    }
    block_rules
        .finish()
        .map_err(|problems| ("invalid_blocks", describe(&problems)))?;

    let text_is_blank = message
        .get("text")
        .and_then(Value::as_str)
        .is_none_or(|text| text.trim().is_empty());
    if text_is_blank && blocks.is_empty() {
        return Err(("no_text", "neither text nor blocks".to_owned()));
    }
    Ok(())
}

fn check_slack_block(check: &mut PayloadCheck, path: &JsonPath, block: &Value) {
    let Some(block) = check.object(path, Some(block), Presence::Required) else {
        return;
    };
    check.text(
        &path.child("block_id"),
        block.get("block_id"),
        Presence::Optional,
        1..=SLACK_BLOCK_ID_MAX_CHARS,
    );
    let type_path = path.child("type");
    match block.get("type").and_then(Value::as_str) {
        Some("header") => check_text_object(
            check,
            &path.child("text"),
            block.get("text"),
            &[PLAIN_TEXT],
            SLACK_HEADER_MAX_CHARS,
        ),
        Some("section") => {
            let has_text = block.get("text").is_some_and(|text| !text.is_null());
            let has_fields = block.get("fields").is_some_and(|fields| !fields.is_null());
            if !has_text && !has_fields {
                check.report(path, "SECTION_EMPTY", "A section needs text or fields.");
            }
            if has_text {
                check_text_object(
                    check,
                    &path.child("text"),
                    block.get("text"),
                    &[PLAIN_TEXT, MRKDWN],
                    SLACK_TEXT_MAX_CHARS,
                );
            }
            let fields_path = path.child("fields");
            let fields = check.list(
                &fields_path,
                block.get("fields"),
                Presence::Optional,
                1..=SLACK_MAX_SECTION_FIELDS,
            );
            for (index, field) in fields.iter().enumerate() {
                check_text_object(
                    check,
                    &fields_path.child(index),
                    Some(field),
                    &[PLAIN_TEXT, MRKDWN],
                    SLACK_FIELD_MAX_CHARS,
                );
            }
        }
        Some("context") => {
            let elements_path = path.child("elements");
            let elements = check.list(
                &elements_path,
                block.get("elements"),
                Presence::Required,
                1..=SLACK_MAX_CONTEXT_ELEMENTS,
            );
            for (index, element) in elements.iter().enumerate() {
                check_context_element(check, &elements_path.child(index), element);
            }
        }
        Some("divider") => {}
        Some(kind) if SLACK_UNMODELLED_BLOCKS.contains(&kind) => check.report(
            &type_path,
            "UNMODELLED_BLOCK",
            format!("`{kind}` blocks are real but this mock does not check them."),
        ),
        Some(kind) => check.report(
            &type_path,
            "UNKNOWN_BLOCK",
            format!("`{kind}` is not a block type."),
        ),
        None => check.report(&type_path, "BASE_TYPE_REQUIRED", "This field is required"),
    }
}

/// A context element is an image element or a text object.
fn check_context_element(check: &mut PayloadCheck, path: &JsonPath, element: &Value) {
    if element.get("type").and_then(Value::as_str) == Some("image") {
        for key in ["image_url", "alt_text"] {
            check.text(
                &path.child(key),
                element.get(key),
                Presence::Required,
                1..=SLACK_TEXT_MAX_CHARS,
            );
        }
    } else {
        check_text_object(
            check,
            path,
            Some(element),
            &[PLAIN_TEXT, MRKDWN],
            SLACK_TEXT_MAX_CHARS,
        );
    }
}

/// `{"type": "plain_text" | "mrkdwn", "text": "…"}` with non-empty text of at most `max_chars`.
fn check_text_object(
    check: &mut PayloadCheck,
    path: &JsonPath,
    value: Option<&Value>,
    kinds: &[&str],
    max_chars: usize,
) {
    let Some(object) = check.object(path, value, Presence::Required) else {
        return;
    };
    let kind = object.get("type").and_then(Value::as_str);
    if !kind.is_some_and(|kind| kinds.contains(&kind)) {
        check.report(
            &path.child("type"),
            "BASE_TYPE_CHOICES",
            format!("Value must be one of {kinds:?}."),
        );
    }
    check.text(
        &path.child("text"),
        object.get("text"),
        Presence::Required,
        1..=max_chars,
    );
    // `emoji` belongs to plain_text only; Slack refuses it on mrkdwn.
    if object.contains_key("emoji") && kind == Some(MRKDWN) {
        check.report(
            &path.child("emoji"),
            "NOT_ALLOWED",
            "`emoji` is only allowed on plain_text.",
        );
    }
    check.boolean(&path.child("emoji"), object.get("emoji"));
}

// ---------------------------------------------------------------------------------------------
// Discord: https://discord.com/developers/docs/resources/webhook#execute-webhook and the embed
// limits.

const DISCORD_CONTENT_MAX_CHARS: usize = 2000;
const DISCORD_USERNAME_CHARS: RangeInclusive<usize> = 1..=80;
const DISCORD_MAX_EMBEDS: usize = 10;
const DISCORD_TITLE_MAX_CHARS: usize = 256;
const DISCORD_DESCRIPTION_MAX_CHARS: usize = 4096;
const DISCORD_MAX_FIELDS: usize = 25;
const DISCORD_FIELD_NAME_MAX_CHARS: usize = 256;
const DISCORD_FIELD_VALUE_MAX_CHARS: usize = 1024;
const DISCORD_FOOTER_MAX_CHARS: usize = 2048;
const DISCORD_AUTHOR_NAME_MAX_CHARS: usize = 256;
/// Over title, description, field names and values, footer text and author name of all embeds.
const DISCORD_EMBEDS_TOTAL_MAX_CHARS: usize = 6000;
const DISCORD_COLOR_MAX: u64 = 0xFF_FF_FF;
const DISCORD_MENTION_KINDS: [&str; 3] = ["roles", "users", "everyone"];
/// Made up but well-formed, so answers look like Discord's.
const DISCORD_CHANNEL_ID: &str = "1100000000000000001";
const DISCORD_FIRST_MESSAGE_ID: u64 = 1_200_000_000_000_000_000;

#[derive(Debug, Clone, Copy, Default)]
pub struct DiscordWebhook;

impl ChatService for DiscordWebhook {
    const HOST_NAMES: &'static [&'static str] = &[
        "discord.com",
        "ptb.discord.com",
        "canary.discord.com",
        "discordapp.com",
        "ptb.discordapp.com",
        "canary.discordapp.com",
    ];

    fn judge(&self, request: &ReceivedRequest, index: usize) -> Judgment {
        let judgment = judge_discord_message(request, index);
        // Discord's docs: without `wait=true`, "a message that is not saved does not return an
        // error". Only with it does the sender learn anything.
        if wants_wait(&request.target) {
            judgment
        } else {
            Judgment {
                answer: CannedResponse {
                    headers: Vec::new(),
                    ..CannedResponse::new(204, "")
                },
                ..judgment
            }
        }
    }

    fn rate_limited(&self, retry_after_secs: u64) -> CannedResponse {
        // Discord sends the wait twice: whole seconds in the header, decimal seconds in the body.
        let body = json!({
            "message": "You are being rate limited.",
            "retry_after": retry_after_secs as f64,
            "global": false,
        });
        with_retry_after(json_response(429, &body), retry_after_secs)
    }
}

fn judge_discord_message(request: &ReceivedRequest, index: usize) -> Judgment {
    let refuse = |body: Value, why: String| Judgment {
        answer: json_response(400, &body),
        verdict: Err(why),
    };
    let is_json = request
        .header("content-type")
        .is_some_and(|value| value.starts_with("application/json"));
    let message = is_json.then(|| json_object(&request.body)).flatten();
    let Some(message) = message else {
        return refuse(
            json!({"message": "The request body contains invalid JSON.", "code": 50109}),
            "the body is not a JSON object sent as application/json".to_owned(),
        );
    };
    if let Err(problems) = check_discord_message(&message) {
        let mut errors = Map::new();
        for problem in &problems {
            let error = json!({"code": problem.code, "message": problem.message});
            insert_form_error(&mut errors, &problem.path.0, error);
        }
        return refuse(
            json!({"code": 50035, "message": "Invalid Form Body", "errors": errors}),
            describe(&problems),
        );
    }
    let content = message.get("content").and_then(Value::as_str).unwrap_or("");
    let embeds = message
        .get("embeds")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    if content.trim().is_empty() && embeds.is_empty() {
        return refuse(
            json!({"message": "Cannot send an empty message", "code": 50006}),
            "empty message: no content and no embeds".to_owned(),
        );
    }
    Judgment {
        answer: json_response(200, &created_message(request, &message, index)),
        verdict: Ok(()),
    }
}

fn check_discord_message(message: &Map<String, Value>) -> Result<(), Vec<Problem>> {
    let root = JsonPath::default();
    let mut check = PayloadCheck::default();
    check.text(
        &root.child("content"),
        message.get("content"),
        Presence::Optional,
        0..=DISCORD_CONTENT_MAX_CHARS,
    );
    check.text(
        &root.child("username"),
        message.get("username"),
        Presence::Optional,
        DISCORD_USERNAME_CHARS,
    );
    let embeds_path = root.child("embeds");
    let embeds = check.list(
        &embeds_path,
        message.get("embeds"),
        Presence::Optional,
        0..=DISCORD_MAX_EMBEDS,
    );
    let total_chars: usize = embeds
        .iter()
        .enumerate()
        .map(|(index, embed)| check_embed(&mut check, &embeds_path.child(index), embed))
        .sum();
    if total_chars > DISCORD_EMBEDS_TOTAL_MAX_CHARS {
        check.report(
            &embeds_path,
            "MAX_EMBED_SIZE_EXCEEDED",
            format!(
                "Embed size exceeds maximum size of {DISCORD_EMBEDS_TOTAL_MAX_CHARS} (found {total_chars})"
            ),
        );
    }
    let mentions_path = root.child("allowed_mentions");
    if let Some(mentions) = check.object(
        &mentions_path,
        message.get("allowed_mentions"),
        Presence::Optional,
    ) {
        let parse_path = mentions_path.child("parse");
        let kinds = check.list(
            &parse_path,
            mentions.get("parse"),
            Presence::Optional,
            0..=DISCORD_MENTION_KINDS.len(),
        );
        for (index, kind) in kinds.iter().enumerate() {
            if !kind
                .as_str()
                .is_some_and(|kind| DISCORD_MENTION_KINDS.contains(&kind))
            {
                check.report(
                    &parse_path.child(index),
                    "BASE_TYPE_CHOICES",
                    format!("Value must be one of {DISCORD_MENTION_KINDS:?}."),
                );
            }
        }
    }
    check.finish()
}

/// Checks one embed and returns the characters it adds to the embeds' total.
fn check_embed(check: &mut PayloadCheck, path: &JsonPath, embed: &Value) -> usize {
    let Some(embed) = check.object(path, Some(embed), Presence::Required) else {
        return 0;
    };
    let mut chars = check.text(
        &path.child("title"),
        embed.get("title"),
        Presence::Optional,
        0..=DISCORD_TITLE_MAX_CHARS,
    );
    chars += check.text(
        &path.child("description"),
        embed.get("description"),
        Presence::Optional,
        0..=DISCORD_DESCRIPTION_MAX_CHARS,
    );
    let color_path = path.child("color");
    if let Some(color) = check.present(&color_path, embed.get("color"), Presence::Optional) {
        match color.as_u64() {
            Some(color) if color <= DISCORD_COLOR_MAX => {}
            Some(_) => check.report(
                &color_path,
                "NUMBER_TYPE_MAX",
                format!("int value should be less than or equal to {DISCORD_COLOR_MAX}."),
            ),
            None => check.report(
                &color_path,
                "NUMBER_TYPE_COERCE",
                format!("Value \"{color}\" is not int."),
            ),
        }
    }
    let timestamp_path = path.child("timestamp");
    if let Some(timestamp) =
        check.present(&timestamp_path, embed.get("timestamp"), Presence::Optional)
        && timestamp
            .as_str()
            .is_none_or(|text| chrono::DateTime::parse_from_rfc3339(text).is_err())
    {
        check.report(
            &timestamp_path,
            "DATE_TYPE_PARSE",
            format!("Could not parse {timestamp}. Should be ISO8601."),
        );
    }
    for (part, key, max_chars) in [
        ("footer", "text", DISCORD_FOOTER_MAX_CHARS),
        ("author", "name", DISCORD_AUTHOR_NAME_MAX_CHARS),
    ] {
        let part_path = path.child(part);
        if let Some(object) = check.object(&part_path, embed.get(part), Presence::Optional) {
            chars += check.text(
                &part_path.child(key),
                object.get(key),
                Presence::Required,
                1..=max_chars,
            );
        }
    }
    let fields_path = path.child("fields");
    let fields = check.list(
        &fields_path,
        embed.get("fields"),
        Presence::Optional,
        0..=DISCORD_MAX_FIELDS,
    );
    for (index, field) in fields.iter().enumerate() {
        let field_path = fields_path.child(index);
        let Some(field) = check.object(&field_path, Some(field), Presence::Required) else {
            continue;
        };
        chars += check.text(
            &field_path.child("name"),
            field.get("name"),
            Presence::Required,
            1..=DISCORD_FIELD_NAME_MAX_CHARS,
        );
        chars += check.text(
            &field_path.child("value"),
            field.get("value"),
            Presence::Required,
            1..=DISCORD_FIELD_VALUE_MAX_CHARS,
        );
        check.boolean(&field_path.child("inline"), field.get("inline"));
    }
    chars
}

/// Discord's form errors nest by path with `_errors` at the leaf:
/// `{"embeds": {"0": {"title": {"_errors": [{"code": …, "message": …}]}}}}`.
fn insert_form_error(node: &mut Map<String, Value>, path: &[String], error: Value) {
    match path.split_first() {
        None => {
            if let Value::Array(errors) = node.entry("_errors").or_insert_with(|| json!([])) {
                errors.push(error);
            }
        }
        Some((first, rest)) => {
            if let Value::Object(child) = node
                .entry(first.as_str())
                .or_insert_with(|| Value::Object(Map::new()))
            {
                insert_form_error(child, rest, error);
            }
        }
    }
}

fn wants_wait(target: &str) -> bool {
    target.split_once('?').is_some_and(|(_, query)| {
        query
            .split('&')
            .any(|pair| pair.eq_ignore_ascii_case("wait=true"))
    })
}

/// The message object Discord returns for `wait=true`.
fn created_message(request: &ReceivedRequest, message: &Map<String, Value>, index: usize) -> Value {
    let path = request.target.split('?').next().unwrap_or_default();
    let webhook_id = path
        .split('/')
        .skip_while(|segment| *segment != "webhooks")
        .nth(1)
        .unwrap_or_default();
    let message_id = DISCORD_FIRST_MESSAGE_ID.saturating_add(u64::try_from(index).unwrap_or(0));
    json!({
        "id": message_id.to_string(),
        "type": 0,
        "channel_id": DISCORD_CHANNEL_ID,
        "webhook_id": webhook_id,
        "author": {
            "id": webhook_id,
            "username": message.get("username").and_then(Value::as_str).unwrap_or("Captain Hook"),
            "bot": true,
        },
        "content": message.get("content").and_then(Value::as_str).unwrap_or(""),
        "embeds": message.get("embeds").cloned().unwrap_or_else(|| json!([])),
        "mention_everyone": pings_everyone(message),
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "components": [],
        "pinned": false,
        "tts": false,
        "flags": 0,
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false),
        "edited_timestamp": null,
    })
}

/// Whether Discord would ping the whole channel: `@everyone` or `@here` in `content` (embeds never
/// ping) while `allowed_mentions` is absent or lets `everyone` through.
fn pings_everyone(message: &Map<String, Value>) -> bool {
    let content = message.get("content").and_then(Value::as_str).unwrap_or("");
    let mentions_allowed = message
        .get("allowed_mentions")
        .and_then(|mentions| mentions.get("parse"))
        .and_then(Value::as_array)
        .is_none_or(|kinds| kinds.iter().any(|kind| kind == "everyone"));
    mentions_allowed && (content.contains("@everyone") || content.contains("@here"))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn post(target: &str, body: &Value) -> ReceivedRequest {
        ReceivedRequest {
            method: "POST".to_owned(),
            target: target.to_owned(),
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body: body.to_string().into_bytes(),
            received_at: Instant::now(),
        }
    }

    fn body_text(answer: &CannedResponse) -> String {
        String::from_utf8_lossy(&answer.body).into_owned()
    }

    fn header<'a>(answer: &'a CannedResponse, name: &str) -> Option<&'a str> {
        answer
            .headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Sends each body in turn to a fresh responder of `mock`; returns the answers.
    fn answers<S: ChatService>(
        mock: &ChatMock<S>,
        target: &str,
        bodies: &[Value],
    ) -> Vec<CannedResponse> {
        let responder = mock.responder();
        bodies
            .iter()
            .enumerate()
            .map(|(index, body)| responder(&post(target, body), index))
            .collect()
    }

    fn slack_message(blocks: Value) -> Value {
        json!({"text": "fallback", "blocks": blocks})
    }

    fn section(text: &str) -> Value {
        json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    }

    const SLACK_PATH: &str = "/services/T000/B000/XXXX";
    const DISCORD_TARGET: &str = "/api/webhooks/123/abc?wait=true";

    #[test]
    fn slack_accepts_a_block_kit_message_at_every_limit() {
        let fields: Vec<Value> = (0..10)
            .map(|_| json!({"type": "mrkdwn", "text": "f".repeat(2000)}))
            .collect();
        let mut blocks = vec![
            json!({"type": "header", "text": {"type": "plain_text", "text": "h".repeat(150), "emoji": true}}),
            json!({"type": "section", "fields": fields}),
            section(&"👍🏽".repeat(1500)),
            json!({"type": "divider"}),
            json!({"type": "context", "elements": vec![json!({"type": "mrkdwn", "text": "c"}); 10]}),
        ];
        blocks.resize(50, json!({"type": "divider"}));
        let mock = SlackMock::new();
        let answer = &answers(&mock, SLACK_PATH, &[slack_message(json!(blocks))])[0];
        assert_eq!(answer.status, 200);
        assert_eq!(body_text(answer), "ok");
        assert_eq!(header(answer, "content-type"), Some("text/html"));
        assert_eq!(mock.verdicts().all(), vec![Ok(())]);
    }

    #[test]
    fn slack_refuses_what_slack_refuses_with_its_error_code() {
        let cases = [
            (
                slack_message(json!(vec![json!({"type": "divider"}); 51])),
                "invalid_blocks",
                "blocks: Must be 50 or fewer",
            ),
            (
                slack_message(
                    json!([{"type": "header", "text": {"type": "plain_text", "text": "h".repeat(151)}}]),
                ),
                "invalid_blocks",
                "blocks.0.text.text: Must be between 1 and 150",
            ),
            (
                slack_message(json!([{"type": "header", "text": {"type": "mrkdwn", "text": "h"}}])),
                "invalid_blocks",
                "blocks.0.text.type",
            ),
            (
                slack_message(json!([section(&"s".repeat(3001))])),
                "invalid_blocks",
                "blocks.0.text.text",
            ),
            (
                slack_message(json!([section("")])),
                "invalid_blocks",
                "blocks.0.text.text: Must be between 1",
            ),
            (
                slack_message(
                    json!([{"type": "section", "fields": vec![json!({"type": "mrkdwn", "text": "f"}); 11]}]),
                ),
                "invalid_blocks",
                "blocks.0.fields",
            ),
            (
                slack_message(
                    json!([{"type": "section", "fields": [{"type": "mrkdwn", "text": "f".repeat(2001)}]}]),
                ),
                "invalid_blocks",
                "blocks.0.fields.0.text",
            ),
            (
                slack_message(json!([{"type": "section"}])),
                "invalid_blocks",
                "blocks.0: A section needs",
            ),
            (
                slack_message(
                    json!([{"type": "context", "elements": vec![json!({"type": "mrkdwn", "text": "c"}); 11]}]),
                ),
                "invalid_blocks",
                "blocks.0.elements",
            ),
            (
                slack_message(
                    json!([{"type": "section", "text": {"type": "mrkdwn", "text": "x", "emoji": true}}]),
                ),
                "invalid_blocks",
                "emoji",
            ),
            (
                slack_message(json!([{"type": "marquee"}])),
                "invalid_blocks",
                "not a block type",
            ),
            (
                slack_message(json!([{"type": "section", "text": {"text": "no type"}}])),
                "invalid_blocks",
                "blocks.0.text.type",
            ),
            (json!({"text": " "}), "no_text", "neither text nor blocks"),
            (json!({}), "no_text", "neither text nor blocks"),
            (
                json!({"text": 5}),
                "invalid_payload",
                "text: Must be a string",
            ),
            (
                json!({"text": "x", "blocks": {}}),
                "invalid_payload",
                "blocks",
            ),
            (
                json!(["not", "an", "object"]),
                "invalid_payload",
                "not a JSON object",
            ),
        ];
        for (body, error, reason) in cases {
            let mock = SlackMock::new();
            let answer = &answers(&mock, SLACK_PATH, std::slice::from_ref(&body))[0];
            assert_eq!(
                (answer.status, body_text(answer).as_str()),
                (400, error),
                "{body}"
            );
            let verdict = mock.verdicts().rejections().join("");
            assert!(
                verdict.starts_with(error) && verdict.contains(reason),
                "{body}: {verdict}"
            );
        }
    }

    #[test]
    fn slack_scripts_rate_limits_and_gone_webhooks_but_still_judges_every_body() {
        let mock = SlackMock::new().rate_limit_first(2, 3);
        let valid = json!({"text": "hi"});
        let answers = answers(&mock, SLACK_PATH, &[valid.clone(), json!({}), valid]);
        let statuses: Vec<u16> = answers.iter().map(|answer| answer.status).collect();
        assert_eq!(statuses, [429, 429, 200]);
        assert_eq!(body_text(&answers[0]), "rate_limited");
        assert_eq!(header(&answers[0], "retry-after"), Some("3"));
        assert_eq!(mock.verdicts().rejections().len(), 1);

        let removed = answers_of(SlackMock::new().gone("no_service"));
        assert_eq!(
            (removed.status, body_text(&removed).as_str()),
            (404, "no_service")
        );
        let archived = answers_of(SlackMock::new().archived());
        assert_eq!(
            (archived.status, body_text(&archived).as_str()),
            (410, "channel_is_archived")
        );

        fn answers_of(mock: SlackMock) -> CannedResponse {
            mock.responder()(&post(SLACK_PATH, &json!({"text": "hi"})), 5)
        }
    }

    fn discord_message(embed: Value) -> Value {
        json!({
            "username": "FeedbackPulse",
            "content": "New feedback",
            "embeds": [embed],
            "allowed_mentions": {"parse": []},
        })
    }

    fn full_embed() -> Value {
        json!({
            "title": "t".repeat(256),
            "description": "d".repeat(4096),
            "color": 0xFF_FF_FF,
            "timestamp": "2024-03-15T10:30:00Z",
            "fields": [{"name": "n", "value": "v".repeat(1024), "inline": true}],
            "footer": {"text": "f".repeat(100)},
            "author": {"name": "a"},
        })
    }

    #[test]
    fn discord_answers_wait_true_with_the_created_message() {
        let mock = DiscordMock::new();
        let body = discord_message(full_embed());
        let answer = &answers(&mock, DISCORD_TARGET, std::slice::from_ref(&body))[0];
        assert_eq!(answer.status, 200, "{}", body_text(answer));
        let created: Value = serde_json::from_slice(&answer.body).expect("JSON message");
        assert_eq!(created["webhook_id"], "123");
        assert_eq!(created["content"], "New feedback");
        assert_eq!(created["embeds"], body["embeds"]);
        assert_eq!(created["mention_everyone"], false);
        assert!(created["id"].as_str().is_some_and(|id| !id.is_empty()));
        assert_eq!(mock.verdicts().all(), vec![Ok(())]);
    }

    #[test]
    fn discord_refuses_broken_limits_with_form_body_errors() {
        let over = |key: &str, value: Value| {
            let mut embed = json!({"title": "t"});
            embed[key] = value;
            discord_message(embed)
        };
        let cases = [
            (
                over("title", json!("t".repeat(257))),
                "embeds.0.title",
                json!({"embeds": {"0": {"title": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 256 or fewer in length. (found 257)"}]}}}}),
            ),
            (
                over("description", json!("d".repeat(4097))),
                "embeds.0.description",
                Value::Null,
            ),
            (
                over(
                    "fields",
                    json!(vec![json!({"name": "n", "value": "v"}); 26]),
                ),
                "embeds.0.fields",
                Value::Null,
            ),
            (
                over("fields", json!([{"name": "", "value": "v"}])),
                "embeds.0.fields.0.name",
                Value::Null,
            ),
            (
                over("fields", json!([{"name": "n", "value": "v".repeat(1025)}])),
                "embeds.0.fields.0.value",
                Value::Null,
            ),
            (
                over("footer", json!({"text": "f".repeat(2049)})),
                "embeds.0.footer.text",
                Value::Null,
            ),
            (
                over("author", json!({"name": "a".repeat(257)})),
                "embeds.0.author.name",
                Value::Null,
            ),
            (over("color", json!("red")), "embeds.0.color", Value::Null),
            (over("color", json!(1.5)), "embeds.0.color", Value::Null),
            (
                over("timestamp", json!("yesterday")),
                "embeds.0.timestamp",
                Value::Null,
            ),
            (json!({"content": "c".repeat(2001)}), "content", Value::Null),
            (
                json!({"content": "c", "embeds": vec![json!({"title": "t"}); 11]}),
                "embeds",
                Value::Null,
            ),
            (
                json!({"content": "c", "allowed_mentions": {"parse": ["channel"]}}),
                "allowed_mentions.parse.0",
                Value::Null,
            ),
            // Two embeds each within its own limits, together over 6000 characters.
            (
                json!({"embeds": [full_embed(), full_embed()]}),
                "embeds: Embed size exceeds",
                Value::Null,
            ),
        ];
        for (body, reason, errors) in cases {
            let mock = DiscordMock::new();
            let answer = &answers(&mock, DISCORD_TARGET, std::slice::from_ref(&body))[0];
            assert_eq!(answer.status, 400);
            let refusal: Value = serde_json::from_slice(&answer.body).expect("JSON error");
            assert_eq!(refusal["code"], 50035);
            assert_eq!(refusal["message"], "Invalid Form Body");
            if !errors.is_null() {
                assert_eq!(refusal["errors"], errors);
            }
            let verdict = mock.verdicts().rejections().join("");
            assert!(verdict.contains(reason), "{body:.200}: {verdict}");
        }
    }

    #[test]
    fn discord_refuses_empty_messages_and_bodies_that_are_not_json() {
        let mock = DiscordMock::new();
        let empty = &answers(
            &mock,
            DISCORD_TARGET,
            &[json!({"content": "  ", "embeds": []})],
        )[0];
        assert_eq!(empty.status, 400);
        assert!(body_text(empty).contains("50006"));
        let mut not_json = post(DISCORD_TARGET, &json!({"content": "hi"}));
        not_json.headers.clear();
        let answer = mock.responder()(&not_json, 1);
        assert_eq!(answer.status, 400);
        assert!(body_text(&answer).contains("50109"));
        assert_eq!(mock.verdicts().rejections().len(), 2);
    }

    #[test]
    fn discord_without_wait_answers_204_even_to_a_body_it_drops() {
        let mock = DiscordMock::new();
        let target = "/api/webhooks/123/abc";
        let statuses: Vec<u16> = answers(&mock, target, &[json!({"content": "hi"}), json!({})])
            .iter()
            .map(|answer| answer.status)
            .collect();
        assert_eq!(statuses, [204, 204]);
        assert_eq!(mock.verdicts().rejections().len(), 1);
    }

    #[test]
    fn discord_scripts_rate_limits_and_deleted_webhooks() {
        let mock = DiscordMock::new().rate_limit_first(1, 2);
        let limited = &answers(&mock, DISCORD_TARGET, &[json!({"content": "hi"})])[0];
        assert_eq!(limited.status, 429);
        assert_eq!(header(limited, "retry-after"), Some("2"));
        let body: Value = serde_json::from_slice(&limited.body).expect("JSON");
        assert_eq!(body["retry_after"], 2.0);
        assert_eq!(body["global"], false);

        let deleted = DiscordMock::new().deleted();
        let answer = &answers(&deleted, DISCORD_TARGET, &[json!({"content": "hi"})])[0];
        assert_eq!(answer.status, 404);
        let body: Value = serde_json::from_slice(&answer.body).expect("JSON");
        assert_eq!(body, json!({"message": "Unknown Webhook", "code": 10015}));
    }

    #[test]
    fn discord_reports_a_ping_only_when_allowed_mentions_lets_it_through() {
        let ping = |body: Value| {
            let answer = &answers(&DiscordMock::new(), DISCORD_TARGET, &[body])[0];
            let created: Value = serde_json::from_slice(&answer.body).expect("JSON");
            created["mention_everyone"].clone()
        };
        assert_eq!(ping(json!({"content": "@everyone look"})), json!(true));
        assert_eq!(
            ping(json!({"content": "@here", "allowed_mentions": {"parse": []}})),
            json!(false)
        );
    }
}
