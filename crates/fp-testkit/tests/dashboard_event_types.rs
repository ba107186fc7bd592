//! Einstellungen > Event types and the test event's type, over HTTP against the real dashboard,
//! api, dispatcher and log-ingest: the page shows the api's catalogue in English and German, the
//! Integrations page sends a test event of the chosen type, and the api's refusals read in the
//! page's language.

use std::time::Duration;

use anyhow::Context;
use fp_domain::EventType;
use fp_testkit::dashboard::{
    DashboardFixture, form_body, hidden_field_after, html_escaped, http_session,
};
use fp_testkit::environment::TestEnvironment;
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

const CATALOGUE_PAGE: &str = "/settings/event-types";
const INTEGRATIONS_PAGE: &str = "/settings/integrations";
const TEST_PATH: &str = "/settings/integrations/test";
const PATIENCE: Duration = Duration::from_secs(30);

async fn get(client: &reqwest::Client, url: String) -> anyhow::Result<(StatusCode, String)> {
    let response = client.get(url).send().await?;
    Ok((response.status(), response.text().await?))
}

async fn post(
    client: &reqwest::Client,
    url: String,
    pairs: &[(&str, &str)],
) -> anyhow::Result<(StatusCode, String)> {
    let response = client
        .post(url)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form_body(pairs))
        .send()
        .await?;
    Ok((response.status(), response.text().await?))
}

/// A refusal of the api as the page words it: `status`, `says` in it, and no route of the api.
fn assert_refusal((status, html): &(StatusCode, String), expected: StatusCode, says: &str) {
    assert_eq!(*status, expected, "{html}");
    assert!(html.contains(says), "{says:?} missing: {html}");
    assert!(!html.contains("PUT"), "an api route: {html}");
}

/// The CSRF tokens of the Integrations page's save and test forms.
async fn form_tokens(
    fixture: &DashboardFixture,
    client: &reqwest::Client,
) -> anyhow::Result<(String, String)> {
    let (status, html) = get(client, fixture.url(INTEGRATIONS_PAGE)).await?;
    anyhow::ensure!(status == StatusCode::OK, "{status}: {html}");
    let token = |form: &str| {
        hidden_field_after(&html, form, "csrf_token").with_context(|| format!("no token in {form}"))
    };
    Ok((
        token(r#"id="integration-form""#)?,
        token(r#"id="test-form""#)?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_types_page_and_test_event_types_in_english_and_german() -> anyhow::Result<()> {
    let mut env = TestEnvironment::new("dasheventtypes").await?;
    let outcome = run(&mut env).await;
    env.finish_after(outcome).await
}

async fn run(env: &mut TestEnvironment) -> anyhow::Result<()> {
    let fixture = DashboardFixture::start(env).await?;
    let (email, password) = (&fixture.tenant_email, &fixture.password);
    let english = http_session(&fixture.base, email, password, "en").await?;
    let german = http_session(&fixture.base, email, password, "de-DE,de;q=0.9").await?;

    // The page shows the api's catalogue: every type with its example and schema.
    let (status, catalogue) = fixture
        .api
        .send(Method::GET, "/api/v2/event-types", None)
        .await?;
    assert_eq!(status, 200, "{catalogue}");
    let (status, html) = get(&english, fixture.url(CATALOGUE_PAGE)).await?;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("<h1>Event types</h1>"), "{html}");
    assert!(html.contains("A customer submitted feedback."), "{html}");
    for event_type in EventType::ALL {
        let name = event_type.as_str();
        let entry = catalogue["data"]
            .as_array()
            .and_then(|entries| entries.iter().find(|entry| entry["event_type"] == name))
            .with_context(|| format!("{name} in {catalogue}"))?;
        assert!(
            html.contains(&format!("<code>{name}</code>")),
            "{name}: {html}"
        );
        for part in ["example", "schema"] {
            let pretty = serde_json::to_string_pretty(&entry[part])?;
            assert!(
                html.contains(&html_escaped(&pretty)),
                "{name}'s {part}: {html}"
            );
        }
    }
    let (status, html) = get(&german, fixture.url(CATALOGUE_PAGE)).await?;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains(r#"<html lang="de">"#), "{html}");
    assert!(html.contains("<h1>Ereignistypen</h1>"), "{html}");
    assert!(html.contains("Ein Kunde hat Feedback abgegeben."), "{html}");
    assert!(html.contains("JSON-Schema des Inhalts"), "{html}");

    // The api's refusals in German, saying what to do on the page: no config yet ...
    let (save_token, test_token) = form_tokens(&fixture, &german).await?;
    let refused = post(
        &german,
        fixture.url(TEST_PATH),
        &[("csrf_token", &test_token)],
    )
    .await?;
    let no_config = "Es ist noch kein Webhook eingerichtet";
    assert_refusal(&refused, StatusCode::CONFLICT, no_config);
    assert!(!refused.1.contains("no webhook config"), "{}", refused.1);

    // ... an empty URL ...
    let empty_url = [
        ("csrf_token", save_token.as_str()),
        ("url", ""),
        ("events", "submission.created"),
        ("enabled", "on"),
    ];
    let (status, html) = post(&german, fixture.url(INTEGRATIONS_PAGE), &empty_url).await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("URL ist erforderlich"), "{html}");
    assert!(!html.contains("URL is required"), "{html}");
    assert!(!html.contains("relative URL"), "{html}");
    let (save_token_en, _) = form_tokens(&fixture, &english).await?;
    let empty_url_en = [("csrf_token", save_token_en.as_str()), ("url", "")];
    let (status, html) = post(&english, fixture.url(INTEGRATIONS_PAGE), &empty_url_en).await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("URL is required"), "{html}");

    // ... a disabled endpoint ...
    let url = fixture.receiver_url.as_str();
    let config = json!({"url": url, "events": ["submission.created"], "enabled": false});
    let (status, saved) = fixture
        .api
        .send(
            Method::PUT,
            "/api/v2/webhooks/config",
            Some(&config.to_string()),
        )
        .await?;
    assert_eq!(status, 200, "{saved}");
    let refused = post(
        &german,
        fixture.url(TEST_PATH),
        &[("csrf_token", &test_token)],
    )
    .await?;
    let disabled = "Zustellungen an diesen Endpunkt sind ausgeschaltet";
    assert_refusal(&refused, StatusCode::CONFLICT, disabled);

    // ... and a type the endpoint does not subscribe to.
    fixture
        .api
        .configure_events(url, &["submission.created"], None)
        .await?;
    let refused = post(
        &german,
        fixture.url(TEST_PATH),
        &[
            ("csrf_token", &test_token),
            ("event_type", "submission.status_changed"),
        ],
    )
    .await?;
    let not_subscribed = "Der Endpunkt hat diesen Ereignistyp nicht abonniert";
    assert_refusal(&refused, StatusCode::UNPROCESSABLE_ENTITY, not_subscribed);
    assert!(
        refused
            .1
            .contains(r#"<option value="submission.status_changed" selected>"#),
        "the choice is kept: {}",
        refused.1
    );
    assert_eq!(fixture.receiver.requests().len(), 0, "nothing was sent");

    // The test form offers every type, webhook.test first and chosen; the chosen type's example
    // is delivered as that type.
    let (status, html) = get(&english, fixture.url(INTEGRATIONS_PAGE)).await?;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains(r#"<option value="webhook.test" selected>webhook.test</option><option value="submission.created">"#),
        "{html}"
    );
    assert!(html.contains(r#"href="/settings/event-types""#), "{html}");
    let (_, test_token_en) = form_tokens(&fixture, &english).await?;
    let (status, html) = post(
        &english,
        fixture.url(TEST_PATH),
        &[
            ("csrf_token", &test_token_en),
            ("event_type", "submission.created"),
        ],
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "the outcome page: {html}");
    assert!(html.contains(r#"id="test-outcome""#), "{html}");
    let requests = fixture.receiver.wait_for(1, PATIENCE).await?;
    assert_eq!(
        requests[0].header("x-feedbackpulse-event"),
        Some("submission.created")
    );
    let body: Value = serde_json::from_slice(&requests[0].body)?;
    assert_eq!(body["event"], "submission.created", "{body}");
    assert_eq!(
        body["data"]["text_feedback"], "Love this product!",
        "{body}"
    );
    Ok(())
}
