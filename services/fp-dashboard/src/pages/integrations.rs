//! Einstellungen > Integrations: the tenant's webhook endpoint (URL, events, secret, enabled) and
//! the test event.
//!
//! The config is read and written through the api with the user's own session, so the api's
//! checks (SSRF policy, events, secret length) and its tenant scoping apply unchanged; the page
//! only shows the api's answers. The secret is write-only: the page shows whether one is set,
//! never the secret, and a form that leaves it empty keeps it. The one exception is a secret the
//! page generates ("Generate secret", no script: the form comes back with it), shown until saved.

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use fp_domain::EventType;
use fp_domain::signing::{GENERATED_KEY_BYTES, WebhookSecret};
use fp_domain::time_zone::Tz;
use fp_store::attempts::{self, AttemptRow};
use reqwest::Method;
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{SignedInUser, html_response, see_other};
use crate::AppState;
use crate::api_client::ApiAnswer;
use crate::error::PageError;
use crate::i18n::{Catalog, Lang};
use crate::local_time::{LocalTime, Precision};
use crate::session::{CsrfPurpose, RandomFailed};
use crate::views::Layout;
use crate::views::logs::explanation_id;

const PAGE_PATH: &str = "/settings/integrations";
const TEST_PATH: &str = "/settings/integrations/test";
const CONFIG_API: &str = "/api/v2/webhooks/config";
const TEST_API: &str = "/api/v2/webhooks/test";
/// How long sending a test event waits for its first attempt to be logged: a healthy pipeline
/// logs one within a second or two; a slow endpoint's result shows in the logs later.
const TEST_WAIT: Duration = Duration::from_secs(5);
const TEST_POLL_INTERVAL: Duration = Duration::from_millis(250);

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route(PAGE_PATH, web::get().to(show))
        .route(PAGE_PATH, web::post().to(save))
        .route(TEST_PATH, web::post().to(send_test));
}

/// The config as the api's `GET /api/v2/webhooks/config` returns it.
#[derive(Debug, Deserialize)]
struct StoredConfig {
    url: String,
    events: Vec<String>,
    enabled: bool,
    format: String,
    secret_set: bool,
    secret_rotating_until: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    failing_since: Option<DateTime<Utc>>,
    disabled_at: Option<DateTime<Utc>>,
    disabled_reason: Option<String>,
}

/// What the save form sent. Read from the raw pairs because the event checkboxes repeat one name.
#[derive(Debug, Default, PartialEq, Eq)]
struct IntegrationForm {
    csrf_token: String,
    url: String,
    events: Vec<String>,
    enabled: bool,
    /// Empty: keep the stored secret.
    secret: String,
    remove_secret: bool,
    /// "Generate secret" was pressed: the form comes back with a new secret, nothing is saved.
    generate_secret: bool,
}

/// What a save does to the secret (the api's `secret`: absent, `null`, or a string).
#[derive(Debug, PartialEq, Eq)]
enum SecretChange {
    Keep,
    Remove,
    Set(String),
}

/// A new secret typed and "remove" ticked at once: which one was meant is unclear.
#[derive(Debug, PartialEq, Eq)]
struct SecretConflict;

impl IntegrationForm {
    fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        let mut form = IntegrationForm::default();
        for (name, value) in pairs {
            match name.as_str() {
                "csrf_token" => form.csrf_token = value,
                "url" => form.url = value.trim().to_owned(),
                "events" if !form.events.contains(&value) => form.events.push(value),
                "events" => {}
                // A ticked checkbox sends its value; an unticked one sends nothing.
                "enabled" => form.enabled = true,
                "remove_secret" => form.remove_secret = true,
                "generate_secret" => form.generate_secret = true,
                "secret" => form.secret = value,
                _ => {}
            }
        }
        form
    }

    fn secret_change(&self) -> Result<SecretChange, SecretConflict> {
        match (self.secret.is_empty(), self.remove_secret) {
            (true, false) => Ok(SecretChange::Keep),
            (true, true) => Ok(SecretChange::Remove),
            (false, false) => Ok(SecretChange::Set(self.secret.clone())),
            (false, true) => Err(SecretConflict),
        }
    }

    /// The body of `PUT /api/v2/webhooks/config`.
    fn api_body(&self) -> Result<Value, SecretConflict> {
        let mut body = json!({
            "url": self.url,
            "events": self.events,
            "enabled": self.enabled,
        });
        match self.secret_change()? {
            SecretChange::Keep => {}
            SecretChange::Remove => body["secret"] = Value::Null,
            SecretChange::Set(secret) => body["secret"] = Value::String(secret),
        }
        Ok(body)
    }

    /// The form as the stored config fills it, or as a first config starts.
    fn from_stored(config: Option<&StoredConfig>) -> Self {
        match config {
            Some(config) => IntegrationForm {
                url: config.url.clone(),
                events: config.events.clone(),
                // An endpoint FeedbackPulse disabled was not switched off by the user, and saving
                // re-enables it, so the box starts ticked.
                enabled: config.enabled || config.disabled_at.is_some(),
                ..IntegrationForm::default()
            },
            None => IntegrationForm {
                events: EventType::SUBSCRIBABLE
                    .map(|event| event.as_str().to_owned())
                    .to_vec(),
                enabled: true,
                ..IntegrationForm::default()
            },
        }
    }
}

/// Messages shown next to the fields they concern, or above the form.
#[derive(Debug, Default, Serialize)]
struct FieldErrors {
    url: Option<String>,
    events: Option<String>,
    secret: Option<String>,
    form: Option<String>,
    any: bool,
}

impl FieldErrors {
    /// Puts the api's message where its `field` (`url`, `events[1]`, ...) is.
    fn from_api(message: &str, field: Option<&str>) -> Self {
        let message = Some(message.to_owned());
        let mut errors = FieldErrors {
            any: true,
            ..FieldErrors::default()
        };
        match field {
            Some("url") => errors.url = message,
            Some(field) if field == "events" || field.starts_with("events[") => {
                errors.events = message;
            }
            Some("secret") => errors.secret = message,
            _ => errors.form = message,
        }
        errors
    }
}

#[derive(Serialize)]
struct EventOption {
    value: &'static str,
    /// The checkbox's id (`event-submission-created`).
    id: String,
    description: String,
    checked: bool,
}

#[derive(Serialize)]
struct FormView {
    url: String,
    events: Vec<EventOption>,
    enabled: bool,
    remove_secret: bool,
    /// A secret "Generate secret" just made, shown in the secret field until it is saved.
    generated_secret: Option<String>,
}

/// The stored config's state, beside the form.
#[derive(Serialize)]
struct ConfigStatus {
    enabled: bool,
    format: String,
    secret_set: bool,
    secret_rotating_until: Option<LocalTime>,
    updated_at: LocalTime,
    failing_since: Option<LocalTime>,
    disabled_at: Option<LocalTime>,
    disabled_reason: Option<String>,
}

/// What became of a test event.
#[derive(Debug, Serialize)]
struct TestOutcome {
    /// `delivered`, `failed`, `pending` (nothing logged yet) or `refused` (by the api).
    kind: &'static str,
    delivery_id: Option<String>,
    response_code: Option<i32>,
    error: Option<String>,
    /// Why it failed and the fix (`logs.explanation.<id>` in the page's language).
    explanation: Option<&'static str>,
    attempted_at: Option<LocalTime>,
    /// `/webhooks/logs/<attempt id>`, once an attempt is logged.
    entry_link: Option<String>,
    /// The api's reason for a refusal.
    message: Option<String>,
}

impl TestOutcome {
    /// From the delivery's attempts, first to last; the last one says how it stands. Its time is
    /// shown in `zone`.
    fn of_delivery(delivery_id: Uuid, attempts: &[AttemptRow], zone: Tz) -> Self {
        let Some(latest) = attempts.last() else {
            return TestOutcome {
                kind: "pending",
                delivery_id: Some(delivery_id.to_string()),
                response_code: None,
                error: None,
                explanation: None,
                attempted_at: None,
                entry_link: None,
                message: None,
            };
        };
        let delivered = latest
            .response_status
            .is_some_and(|status| (200..300).contains(&status));
        let error = match (&latest.error_kind, &latest.error_message) {
            (Some(kind), Some(message)) => Some(format!("{kind}: {message}")),
            (Some(only), None) | (None, Some(only)) => Some(only.clone()),
            (None, None) => None,
        };
        TestOutcome {
            kind: if delivered { "delivered" } else { "failed" },
            delivery_id: Some(delivery_id.to_string()),
            response_code: latest.response_status,
            error,
            explanation: explanation_id(latest),
            attempted_at: Some(LocalTime::new(
                latest.attempted_at,
                zone,
                Precision::Seconds,
            )),
            entry_link: Some(format!("/webhooks/logs/{}", latest.id)),
            message: None,
        }
    }

    fn refused(message: String) -> Self {
        TestOutcome {
            kind: "refused",
            delivery_id: None,
            response_code: None,
            error: None,
            explanation: None,
            attempted_at: None,
            entry_link: None,
            message: Some(message),
        }
    }
}

#[derive(Serialize)]
struct IntegrationsPage<'a> {
    #[serde(flatten)]
    layout: Layout<'a>,
    save_csrf_token: String,
    test_csrf_token: String,
    /// `None` before the first save.
    config: Option<ConfigStatus>,
    form: FormView,
    errors: FieldErrors,
    saved: bool,
    test: Option<TestOutcome>,
    /// The choices of the test event's type.
    test_event_types: Vec<TestEventTypeOption>,
}

#[derive(Serialize)]
struct TestEventTypeOption {
    value: &'static str,
    selected: bool,
}

/// Every event type, `webhook.test` (the api's default) first; `chosen` is selected, else that.
fn test_event_types(chosen: &str) -> Vec<TestEventTypeOption> {
    let default = EventType::WebhookTest;
    let chosen = chosen.parse::<EventType>().unwrap_or(default);
    std::iter::once(default)
        .chain(EventType::ALL.into_iter().filter(|event| *event != default))
        .map(|event| TestEventTypeOption {
            value: event.as_str(),
            selected: event == chosen,
        })
        .collect()
}

#[derive(Deserialize)]
struct PageQuery {
    saved: Option<String>,
    /// The delivery id of a test event just sent, whose outcome the page shows.
    test: Option<String>,
}

async fn show(
    state: web::Data<AppState>,
    request: HttpRequest,
    user: SignedInUser,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, PageError> {
    let tenant_id = user.tenant_id()?;
    // An id that is not a UUID is simply no outcome; the lookup is scoped by the user's tenant,
    // so another tenant's delivery id shows nothing either.
    let test = match query.test.as_deref().map(Uuid::parse_str) {
        Some(Ok(delivery_id)) => {
            let mut conn = state.connection().await?;
            let attempts = attempts::of_delivery(&mut conn, tenant_id, delivery_id).await?;
            Some(TestOutcome::of_delivery(
                delivery_id,
                &attempts,
                user.time_zone(&request),
            ))
        }
        _ => None,
    };
    let rendering = Rendering {
        saved: query.saved.is_some(),
        test,
        ..Rendering::default()
    };
    render(&state, &request, &user, rendering, StatusCode::OK).await
}

async fn save(
    state: web::Data<AppState>,
    request: HttpRequest,
    user: SignedInUser,
    pairs: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, PageError> {
    user.tenant_id()?;
    let form = IntegrationForm::from_pairs(pairs.into_inner());
    user.check_csrf(&state, CsrfPurpose::SaveIntegration, &form.csrf_token)?;
    if form.generate_secret {
        return render_generated_secret(&state, &request, &user, form).await;
    }

    let Ok(body) = form.api_body() else {
        let message = state.text(&request, "integrations.secret_conflict");
        let errors = FieldErrors {
            secret: Some(message.to_owned()),
            any: true,
            ..FieldErrors::default()
        };
        return render_rejected(&state, &request, &user, form, errors).await;
    };
    let answer = state
        .api
        .call(&user.session, Method::PUT, CONFIG_API, Some(&body))
        .await?;
    if answer.is_success() {
        tracing::info!(user_id = %user.user.id, "webhook config saved");
        return Ok(see_other(&format!("{PAGE_PATH}?saved=1")).finish());
    }
    match answer.status {
        400 | 413 | 422 => {
            let message = save_refusal_text(&state.catalog, Lang::of(&request), &answer, &form);
            let errors = FieldErrors::from_api(&message, answer.error().1);
            render_rejected(&state, &request, &user, form, errors).await
        }
        _ => Err(PageError::refused_by_api(&answer)),
    }
}

/// The page's words for the api's refusal of a save. The api's messages are English, so the text
/// is chosen by the field the api names, the SSRF policy's `reason` for a URL, and the form.
fn save_refusal_text(
    catalog: &Catalog,
    lang: Lang,
    answer: &ApiAnswer,
    form: &IntegrationForm,
) -> String {
    let key = match answer.error().1 {
        Some("url") => {
            let url_not_allowed = answer.body["error"]["reason"]
                .as_str()
                .and_then(|reason| url_not_allowed_text(catalog, lang, reason));
            if let Some(text) = url_not_allowed {
                return text;
            }
            if form.url.is_empty() {
                "integrations.errors.url_required"
            } else {
                "integrations.errors.url_invalid"
            }
        }
        Some(field) if field == "events" || field.starts_with("events[") => {
            "integrations.errors.events"
        }
        Some("secret") => "integrations.errors.secret",
        _ => "integrations.errors.other",
    };
    catalog.text(lang, key).to_owned()
}

/// The SSRF policy's refusal in the page's language: the api words it in English and names the
/// kind of address in `reason`. `None` for a kind this dashboard has no text for (the field's
/// general text is shown then).
fn url_not_allowed_text(catalog: &Catalog, lang: Lang, reason: &str) -> Option<String> {
    let path = format!("integrations.url_not_allowed.{reason}");
    let text = catalog.text(lang, &path);
    (text != path).then(|| text.to_owned())
}

#[derive(Deserialize)]
struct TestForm {
    /// Defaulted so a missing token is refused like a wrong one.
    #[serde(default)]
    csrf_token: String,
    /// The type whose example to send; empty: the api's default, `webhook.test`.
    #[serde(default)]
    event_type: String,
}

async fn send_test(
    state: web::Data<AppState>,
    request: HttpRequest,
    user: SignedInUser,
    form: web::Form<TestForm>,
) -> Result<HttpResponse, PageError> {
    let tenant_id = user.tenant_id()?;
    user.check_csrf(&state, CsrfPurpose::SendTestEvent, &form.csrf_token)?;

    let body = (!form.event_type.is_empty()).then(|| json!({ "event_type": form.event_type }));
    let answer = state
        .api
        .call(&user.session, Method::POST, TEST_API, body.as_ref())
        .await?;
    match answer.status {
        202 => {
            let delivery_id = answer.body["delivery_id"]
                .as_str()
                .and_then(|id| Uuid::parse_str(id).ok())
                .ok_or_else(|| PageError::refused_by_api(&answer))?;
            wait_for_first_attempt(&state, tenant_id, delivery_id).await?;
            // The outcome page is a GET, so reloading it refreshes the outcome instead of
            // sending another event.
            Ok(see_other(&format!("{PAGE_PATH}?test={delivery_id}#test-outcome")).finish())
        }
        409 | 422 | 429 => {
            // Said in the page's language, as the api's message is English (and names the api's
            // routes, not what to do on this page).
            let (text, status) = match answer.status {
                409 => match load_config(&state, &user).await? {
                    None => ("integrations.test_no_config", StatusCode::CONFLICT),
                    Some(_) => ("integrations.test_disabled", StatusCode::CONFLICT),
                },
                422 => (
                    "integrations.test_not_subscribed",
                    StatusCode::UNPROCESSABLE_ENTITY,
                ),
                _ => (
                    "integrations.test_rate_limited",
                    StatusCode::TOO_MANY_REQUESTS,
                ),
            };
            let rendering = Rendering {
                test: Some(TestOutcome::refused(state.text(&request, text).to_owned())),
                test_event_type: form.event_type.clone(),
                ..Rendering::default()
            };
            render(&state, &request, &user, rendering, status).await
        }
        _ => Err(PageError::refused_by_api(&answer)),
    }
}

/// Polls the read-only database until the outcome of the delivery's first attempt is logged or
/// [`TEST_WAIT`] has passed; either way the page then shows what is known. The record the
/// dispatcher writes before it sends (kind `interrupted` until the outcome replaces it) is no
/// outcome yet: shown, it would read as a failure with nothing to explain.
async fn wait_for_first_attempt(
    state: &AppState,
    tenant_id: Uuid,
    delivery_id: Uuid,
) -> Result<(), PageError> {
    let deadline = Instant::now() + TEST_WAIT;
    loop {
        let logged = {
            // A connection per poll, so waiting does not hold one of the pool's few.
            let mut conn = state.connection().await?;
            attempts::of_delivery(&mut conn, tenant_id, delivery_id)
                .await?
                .iter()
                .any(|attempt| {
                    attempt.error_kind.as_deref() != Some(fp_contracts::INTERRUPTED_ERROR_KIND)
                })
        };
        if logged || Instant::now() >= deadline {
            return Ok(());
        }
        actix_web::rt::time::sleep(TEST_POLL_INTERVAL).await;
    }
}

/// What a rendering shows besides the stored config.
#[derive(Default)]
struct Rendering {
    /// The user's input after a refused save; otherwise the form shows the stored config.
    submitted: Option<IntegrationForm>,
    errors: FieldErrors,
    saved: bool,
    test: Option<TestOutcome>,
    /// The test event type chosen last; empty: `webhook.test`.
    test_event_type: String,
    /// A secret just generated, for the secret field.
    generated_secret: Option<String>,
}

/// The form again with the user's input and a new `whsec_` secret in the secret field, shown so
/// the user can copy it to the endpoint's server; it is saved only when the form is saved.
async fn render_generated_secret(
    state: &AppState,
    request: &HttpRequest,
    user: &SignedInUser,
    mut form: IntegrationForm,
) -> Result<HttpResponse, PageError> {
    let mut key = [0u8; GENERATED_KEY_BYTES];
    state.rng.fill(&mut key).map_err(|_| RandomFailed)?;
    form.remove_secret = false;
    let rendering = Rendering {
        submitted: Some(form),
        generated_secret: Some(WebhookSecret::from_key(&key).expose().to_owned()),
        ..Rendering::default()
    };
    render(state, request, user, rendering, StatusCode::OK).await
}

/// The form again with the user's input (never the secret) and the reasons it was refused.
async fn render_rejected(
    state: &AppState,
    request: &HttpRequest,
    user: &SignedInUser,
    form: IntegrationForm,
    errors: FieldErrors,
) -> Result<HttpResponse, PageError> {
    let rendering = Rendering {
        submitted: Some(form),
        errors,
        ..Rendering::default()
    };
    render(
        state,
        request,
        user,
        rendering,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await
}

async fn render(
    state: &AppState,
    request: &HttpRequest,
    user: &SignedInUser,
    rendering: Rendering,
    status: StatusCode,
) -> Result<HttpResponse, PageError> {
    let stored = load_config(state, user).await?;
    let form = rendering
        .submitted
        .unwrap_or_else(|| IntegrationForm::from_stored(stored.as_ref()));
    let page = IntegrationsPage {
        layout: state.layout(request, Some(user), "integrations"),
        save_csrf_token: user.csrf_token(state, CsrfPurpose::SaveIntegration),
        test_csrf_token: user.csrf_token(state, CsrfPurpose::SendTestEvent),
        config: stored.map(|config| config_status(state, request, config, user.time_zone(request))),
        form: form_view(state, request, &form, rendering.generated_secret),
        errors: rendering.errors,
        saved: rendering.saved,
        test: rendering.test,
        test_event_types: test_event_types(&rendering.test_event_type),
    };
    let html = state.templates.render("integrations.html", &page)?;
    Ok(html_response(status).body(html))
}

/// The tenant's config through the api, `None` if there is none yet.
async fn load_config(
    state: &AppState,
    user: &SignedInUser,
) -> Result<Option<StoredConfig>, PageError> {
    let answer = state
        .api
        .call(&user.session, Method::GET, CONFIG_API, None)
        .await?;
    match answer.status {
        200 => serde_json::from_value(answer.body)
            .map(Some)
            .map_err(|error| PageError::ApiRefused {
                status: 200,
                message: format!("unexpected config shape: {error}"),
            }),
        404 => Ok(None),
        _ => Err(PageError::refused_by_api(&answer)),
    }
}

fn form_view(
    state: &AppState,
    request: &HttpRequest,
    form: &IntegrationForm,
    generated_secret: Option<String>,
) -> FormView {
    FormView {
        url: form.url.clone(),
        events: EventType::SUBSCRIBABLE
            .into_iter()
            .map(|event| {
                let value = event.as_str();
                let key = value.replace('.', "_");
                EventOption {
                    value,
                    id: format!("event-{}", key.replace('_', "-")),
                    description: state
                        .text(request, &format!("integrations.event_{key}"))
                        .to_owned(),
                    checked: form.events.iter().any(|chosen| chosen == value),
                }
            })
            .collect(),
        enabled: form.enabled,
        remove_secret: form.remove_secret,
        generated_secret,
    }
}

fn config_status(
    state: &AppState,
    request: &HttpRequest,
    config: StoredConfig,
    zone: Tz,
) -> ConfigStatus {
    let format_key = match config.format.as_str() {
        "slack" => "integrations.format_slack",
        "discord" => "integrations.format_discord",
        _ => "integrations.format_custom",
    };
    let time = |at: DateTime<Utc>| LocalTime::new(at, zone, Precision::Seconds);
    ConfigStatus {
        enabled: config.enabled,
        format: state.text(request, format_key).to_owned(),
        secret_set: config.secret_set,
        secret_rotating_until: config.secret_rotating_until.map(time),
        updated_at: time(config.updated_at),
        failing_since: config.failing_since.map(time),
        disabled_at: config.disabled_at.map(time),
        disabled_reason: config.disabled_reason,
    }
}

#[cfg(test)]
mod tests {
    use fp_store::attempts::StoredHeaders;

    use super::*;
    use crate::views::Templates;

    fn layout(catalog: &Catalog) -> Layout<'_> {
        Layout {
            t: catalog.texts(Lang::En),
            lang: "en",
            signed_in: None,
            is_superadmin: false,
            active_nav: "integrations",
            languages: Vec::new(),
        }
    }

    /// A failed first attempt; tests change what they need.
    fn attempt() -> AttemptRow {
        AttemptRow {
            id: Uuid::now_v7(),
            delivery_id: Uuid::now_v7(),
            event_id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            event_type: "webhook.test".into(),
            url: "https://example.com/hook".into(),
            attempt_number: 1,
            attempted_at: Utc::now(),
            duration_ms: 15_000,
            request_headers: StoredHeaders::none(),
            request_body: b"{}".to_vec(),
            response_status: None,
            response_headers: StoredHeaders::none(),
            response_body: Vec::new(),
            response_truncated: false,
            error_kind: Some("timeout".into()),
            error_message: Some("no response within 15000 ms".into()),
            is_final: false,
            next_retry_at: None,
            manual: false,
            traceparent: String::new(),
            tracestate: String::new(),
        }
    }

    fn pairs(fields: &[(&str, &str)]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn the_form_becomes_the_apis_body() {
        let form = IntegrationForm::from_pairs(pairs(&[
            ("csrf_token", "t"),
            ("url", "  https://hooks.example.com/x  "),
            ("events", "submission.created"),
            ("events", "submission.status_changed"),
            ("events", "submission.created"),
            ("enabled", "on"),
            ("secret", ""),
            ("unknown", "ignored"),
        ]));
        assert_eq!(form.csrf_token, "t");
        assert_eq!(
            form.api_body(),
            Ok(json!({
                "url": "https://hooks.example.com/x",
                "events": ["submission.created", "submission.status_changed"],
                "enabled": true,
            }))
        );
    }

    #[test]
    fn an_empty_secret_keeps_a_typed_one_sets_and_remove_removes() {
        let keep = IntegrationForm::from_pairs(pairs(&[("url", "https://a.example")]));
        let body = keep.api_body().expect("body");
        assert!(body.get("secret").is_none(), "{body}");
        assert_eq!(body["enabled"], false);

        let set = IntegrationForm::from_pairs(pairs(&[("secret", " new secret ")]));
        assert_eq!(set.api_body().expect("body")["secret"], " new secret ");

        let remove = IntegrationForm::from_pairs(pairs(&[("remove_secret", "on")]));
        let body = remove.api_body().expect("body");
        assert_eq!(body.get("secret"), Some(&Value::Null), "{body}");

        let both =
            IntegrationForm::from_pairs(pairs(&[("secret", "12345678"), ("remove_secret", "on")]));
        assert_eq!(both.api_body(), Err(SecretConflict));
    }

    #[test]
    fn the_apis_field_decides_where_its_message_shows() {
        assert_eq!(
            FieldErrors::from_api("blocked", Some("url")).url.as_deref(),
            Some("blocked")
        );
        assert!(
            FieldErrors::from_api("bad", Some("events[1]"))
                .events
                .is_some()
        );
        assert!(
            FieldErrors::from_api("short", Some("secret"))
                .secret
                .is_some()
        );
        assert!(FieldErrors::from_api("odd", None).form.is_some());
    }

    #[test]
    fn url_refusals_are_worded_in_the_pages_language_by_kind_of_address() {
        let catalog = Catalog::load().expect("texts load");
        for reason in [
            "private",
            "loopback",
            "link_local",
            "metadata",
            "multicast",
            "reserved",
        ] {
            let english = url_not_allowed_text(&catalog, Lang::En, reason).expect(reason);
            let german = url_not_allowed_text(&catalog, Lang::De, reason).expect(reason);
            assert!(english.contains("webhooks may not call"), "{english}");
            assert!(german.contains("Webhooks nicht aufrufen"), "{german}");
        }
        assert!(
            url_not_allowed_text(&catalog, Lang::En, "private")
                .is_some_and(|text| text.contains("private or internal"))
        );
        assert!(
            url_not_allowed_text(&catalog, Lang::De, "private")
                .is_some_and(|text| text.contains("private oder interne"))
        );
        // A kind this dashboard does not know leaves the api's message in place.
        assert_eq!(url_not_allowed_text(&catalog, Lang::En, "martian"), None);
    }

    fn refusal(field: &str, reason: Option<&str>) -> ApiAnswer {
        let mut body =
            json!({"error": {"code": "invalid_field", "message": "English", "field": field}});
        if let Some(reason) = reason {
            body["error"]["reason"] = reason.into();
        }
        ApiAnswer {
            status: 422,
            body,
            retry_after: None,
        }
    }

    #[test]
    fn save_refusals_are_worded_in_the_pages_language_by_field() {
        let catalog = Catalog::load().expect("texts load");
        let empty = IntegrationForm::default();
        let typed = IntegrationForm::from_pairs(pairs(&[("url", "http://a.example")]));
        let text = |lang, answer: &ApiAnswer, form: &IntegrationForm| {
            save_refusal_text(&catalog, lang, answer, form)
        };
        assert_eq!(
            text(Lang::En, &refusal("url", None), &empty),
            "URL is required"
        );
        assert_eq!(
            text(Lang::De, &refusal("url", None), &empty),
            "URL ist erforderlich"
        );
        assert!(text(Lang::De, &refusal("url", None), &typed).contains("https://-Adresse"));
        assert!(
            text(Lang::De, &refusal("url", Some("loopback")), &typed).contains("Loopback-Adresse")
        );
        assert!(text(Lang::De, &refusal("events[0]", None), &typed).contains("Ereignisse"));
        assert!(text(Lang::De, &refusal("secret", None), &typed).contains("8 bis 256"));
        assert!(text(Lang::De, &refusal("enabled", None), &typed).contains("abgelehnt"));
        for lang in Lang::ALL {
            for field in ["url", "events", "secret", "other"] {
                assert!(
                    !text(lang, &refusal(field, None), &typed).contains("English"),
                    "{field}"
                );
            }
        }
    }

    #[test]
    fn the_test_event_type_defaults_to_webhook_test() {
        let selected = |chosen: &str| {
            test_event_types(chosen)
                .into_iter()
                .filter(|option| option.selected)
                .map(|option| option.value)
                .collect::<Vec<_>>()
        };
        assert_eq!(test_event_types("")[0].value, "webhook.test");
        assert_eq!(test_event_types("").len(), EventType::ALL.len());
        assert_eq!(selected(""), ["webhook.test"]);
        assert_eq!(selected("bogus"), ["webhook.test"]);
        assert_eq!(selected("submission.created"), ["submission.created"]);
    }

    fn stored(url: &str) -> StoredConfig {
        StoredConfig {
            url: url.to_owned(),
            events: vec!["submission.created".into()],
            enabled: false,
            format: "slack".into(),
            secret_set: true,
            secret_rotating_until: Some(Utc::now()),
            updated_at: Utc::now(),
            failing_since: Some(Utc::now()),
            disabled_at: Some(Utc::now()),
            disabled_reason: Some("every delivery <b>failed</b>".into()),
        }
    }

    #[test]
    fn the_page_escapes_what_it_shows_and_never_holds_the_secret() {
        let catalog = Catalog::load().expect("texts load");
        let form = IntegrationForm::from_pairs(pairs(&[
            ("url", "https://x.example/\"><script>alert(1)</script>"),
            ("events", "submission.created"),
            ("secret", "do-not-echo-me"),
        ]));
        let config = stored("https://hooks.slack.com/services/<i>");
        let page = IntegrationsPage {
            layout: layout(&catalog),
            save_csrf_token: "save-token".into(),
            test_csrf_token: "test-token".into(),
            config: Some(ConfigStatus {
                enabled: config.enabled,
                format: "Slack".into(),
                secret_set: config.secret_set,
                secret_rotating_until: config
                    .secret_rotating_until
                    .map(|at| LocalTime::new(at, Tz::UTC, Precision::Seconds)),
                updated_at: LocalTime::new(
                    config.updated_at,
                    Tz::Europe__Berlin,
                    Precision::Seconds,
                ),
                failing_since: None,
                disabled_at: config
                    .disabled_at
                    .map(|at| LocalTime::new(at, Tz::UTC, Precision::Seconds)),
                disabled_reason: config.disabled_reason,
            }),
            form: FormView {
                url: form.url.clone(),
                events: Vec::new(),
                enabled: form.enabled,
                remove_secret: false,
                generated_secret: None,
            },
            errors: FieldErrors::from_api("<u>blocked</u> address", Some("url")),
            saved: false,
            test: Some(TestOutcome::refused("<em>no config</em>".into())),
            test_event_types: test_event_types("submission.created"),
        };
        let html = Templates::load()
            .expect("templates parse")
            .render("integrations.html", &page)
            .expect("page renders");
        for raw in ["<script>", "<b>failed", "<u>blocked", "<em>no"] {
            assert!(!html.contains(raw), "{raw} in {html}");
        }
        assert!(!html.contains("do-not-echo-me"), "{html}");
        assert!(html.contains("&lt;u&gt;blocked"), "{html}");
        assert!(html.contains(r#"id="url-error""#), "{html}");
        assert!(html.contains(r#"aria-invalid="true""#), "{html}");
        assert!(html.contains("A secret is set"), "{html}");
        assert!(html.contains("every delivery &lt;b&gt;failed"), "{html}");
        // Times in the user's zone, UTC on hover.
        let updated = LocalTime::new(config.updated_at, Tz::Europe__Berlin, Precision::Seconds);
        assert!(
            html.contains(&format!(
                r#"<time datetime="{}" title="{}">{}</time>"#,
                updated.iso, updated.utc, updated.local
            )),
            "{html}"
        );
    }

    #[test]
    fn a_test_outcome_comes_from_the_latest_attempt() {
        let delivery_id = Uuid::now_v7();
        let pending = TestOutcome::of_delivery(delivery_id, &[], Tz::UTC);
        assert_eq!(pending.kind, "pending");
        assert_eq!(pending.entry_link, None);

        let mut first = attempt();
        first.response_status = Some(503);
        first.error_kind = None;
        first.error_message = None;
        let mut second = attempt();
        second.response_status = Some(204);
        second.error_kind = None;
        second.error_message = None;
        let outcome = TestOutcome::of_delivery(delivery_id, &[first, second.clone()], Tz::UTC);
        assert_eq!(outcome.kind, "delivered");
        assert_eq!(outcome.response_code, Some(204));
        assert_eq!(outcome.explanation, None);
        assert_eq!(
            outcome.entry_link,
            Some(format!("/webhooks/logs/{}", second.id))
        );

        let failed = TestOutcome::of_delivery(delivery_id, &[attempt()], Tz::UTC);
        assert_eq!(failed.kind, "failed");
        assert_eq!(
            failed.error.as_deref(),
            Some("timeout: no response within 15000 ms")
        );
        assert_eq!(failed.explanation, Some("timeout"));
    }
}
