//! Einstellungen > Integrations and log-in throttling, over HTTP against the real dashboard, api,
//! dispatcher and log-ingest: the page saves through the api with the user's session, shows the
//! api's reasons, keeps or removes the secret as asked, generates a `whsec_` one (with no script)
//! that the test event's signatures verify with, and sends a test event that reaches an HTTPS
//! receiver.

use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use fp_domain::signing::{
    WebhookSecret, verify_feedbackpulse_signature, verify_standard_webhooks_signature,
};
use fp_testkit::dashboard::{
    DashboardFixture, form_body, hidden_field_after, http_client, http_log_in,
};
use fp_testkit::environment::TestEnvironment;
use fp_testkit::pipeline::TenantApi;
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

const PAGE: &str = "/settings/integrations";
const PATIENCE: Duration = Duration::from_secs(30);

/// A browser without JavaScript: cookies, and redirects left to the test so it sees each status.
fn browser() -> anyhow::Result<reqwest::Client> {
    http_client("en", false)
}

/// The value of the first `csrf_token` field after `marker` (a form's id) in `html`.
fn csrf_token_after(html: &str, marker: &str) -> anyhow::Result<String> {
    hidden_field_after(html, marker, "csrf_token")
        .with_context(|| format!("no csrf_token field after {marker:?}"))
}

/// What tera escapes in HTML, and how; `&` first, as escaping it later would escape the others.
const HTML_ESCAPES: [(&str, &str); 6] = [
    ("&", "&amp;"),
    ("<", "&lt;"),
    (">", "&gt;"),
    ("\"", "&quot;"),
    ("'", "&#x27;"),
    ("/", "&#x2F;"),
];

/// Text as tera prints it into HTML.
fn escaped(text: &str) -> String {
    HTML_ESCAPES
        .iter()
        .fold(text.to_owned(), |text, (raw, escape)| {
            text.replace(raw, escape)
        })
}

/// Text as tera printed it into HTML, as the browser reads it.
fn unescaped(html: &str) -> String {
    HTML_ESCAPES
        .iter()
        .rev()
        .fold(html.to_owned(), |html, (raw, escape)| {
            html.replace(escape, raw)
        })
}

struct Dashboard {
    base: String,
}

impl Dashboard {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(
        &self,
        client: &reqwest::Client,
        path: &str,
    ) -> anyhow::Result<(StatusCode, String)> {
        let response = client.get(self.url(path)).send().await?;
        Ok((response.status(), response.text().await?))
    }

    /// Posts a form; the status, the `Location` and the body.
    async fn post(
        &self,
        client: &reqwest::Client,
        path: &str,
        pairs: &[(&str, &str)],
    ) -> anyhow::Result<(StatusCode, String, String)> {
        let response = client
            .post(self.url(path))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form_body(pairs))
            .send()
            .await?;
        let status = response.status();
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok((status, location, response.text().await?))
    }

    /// Posts the Integrations form for `url`, subscribed to `submission.created` and enabled, with
    /// `secret_fields` (the secret, "Generate secret").
    async fn post_endpoint(
        &self,
        client: &reqwest::Client,
        csrf_token: &str,
        url: &str,
        secret_fields: &[(&str, &str)],
    ) -> anyhow::Result<(StatusCode, String, String)> {
        let mut pairs = vec![
            ("csrf_token", csrf_token),
            ("url", url),
            ("events", "submission.created"),
            ("enabled", "on"),
        ];
        pairs.extend_from_slice(secret_fields);
        self.post(client, PAGE, &pairs).await
    }

    /// One log-in attempt with a fresh form; the answer's status.
    async fn log_in(
        &self,
        client: &reqwest::Client,
        email: &str,
        password: &str,
    ) -> anyhow::Result<(StatusCode, String)> {
        http_log_in(client, &self.base, email, password).await
    }

    /// The Integrations page and the CSRF tokens of its save and test forms.
    async fn page(&self, client: &reqwest::Client) -> anyhow::Result<(String, String, String)> {
        let (status, html) = self.get(client, PAGE).await?;
        anyhow::ensure!(status == StatusCode::OK, "{status}: {html}");
        let save = csrf_token_after(&html, r#"id="integration-form""#)?;
        let test = csrf_token_after(&html, r#"id="test-form""#)?;
        Ok((html, save, test))
    }
}

async fn stored_config(api: &TenantApi) -> anyhow::Result<(u16, Value)> {
    api.send(Method::GET, "/api/v2/webhooks/config", None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrations_page_saves_through_the_api_and_sends_a_test_event() -> anyhow::Result<()> {
    let mut env = TestEnvironment::new("dashintegr").await?;
    let outcome = run(&mut env).await;
    env.finish_after(outcome).await
}

async fn run(env: &mut TestEnvironment) -> anyhow::Result<()> {
    let fixture = DashboardFixture::start(env).await?;
    let (api, receiver) = (&fixture.api, &fixture.receiver);
    let (tenant_email, superadmin_email) = (&fixture.tenant_email, &fixture.superadmin_email);
    let password = fixture.password.as_str();
    let dashboard = Dashboard {
        base: fixture.base.clone(),
    };

    let admin = browser()?;
    let (status, body) = dashboard.log_in(&admin, tenant_email, password).await?;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");

    // No config yet: an empty form that says so.
    let (html, save_token, test_token) = dashboard.page(&admin).await?;
    assert!(html.contains(r#"id="no-config""#), "{html}");
    assert!(
        html.contains("it verifies the webhook-signature header"),
        "the secret's help: {html}"
    );
    assert!(
        html.contains(r#"id="webhook-logs-link" href="/webhooks/logs""#),
        "{html}"
    );
    assert!(html.contains("Settings &gt;"), "{html}");

    // Without a config the api refuses the test event, and the page says why.
    let (status, _, html) = dashboard
        .post(
            &admin,
            "/settings/integrations/test",
            &[("csrf_token", &test_token)],
        )
        .await?;
    assert_eq!(status, StatusCode::CONFLICT, "{html}");
    assert!(html.contains(r#"id="test-outcome""#), "{html}");
    assert!(html.contains("The test event could not be sent."), "{html}");
    assert!(
        html.contains("No webhook is set up yet: enter your webhook URL above and save"),
        "the reason, in the page's words: {html}"
    );

    // Save URL, events and a secret.
    let hook_url = receiver.url("/hooks/dashboard");
    let (status, location, body) = dashboard
        .post(
            &admin,
            PAGE,
            &[
                ("csrf_token", &save_token),
                ("url", &hook_url),
                ("events", "submission.created"),
                ("events", "submission.status_changed"),
                ("enabled", "on"),
                ("secret", "dashboard-secret-1"),
            ],
        )
        .await?;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(location, "/settings/integrations?saved=1");
    let (_, saved_page) = dashboard.get(&admin, &location).await?;
    assert!(saved_page.contains(r#"id="saved""#), "{saved_page}");
    assert!(saved_page.contains("A secret is set."), "{saved_page}");
    assert!(saved_page.contains(&escaped(&hook_url)), "{saved_page}");
    assert!(!saved_page.contains("dashboard-secret-1"));
    let (status, config) = stored_config(api).await?;
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["url"], hook_url.as_str());
    assert_eq!(
        config["events"],
        json!(["submission.created", "submission.status_changed"])
    );
    assert_eq!(config["secret_set"], true);
    assert_eq!(config["enabled"], true);

    // A URL the SSRF policy blocks: the api's reason next to the field, the input kept, nothing
    // saved.
    let blocked = "https://169.254.169.254/latest/meta-data";
    let (_, reason) = api
        .send(
            Method::PUT,
            "/api/v2/webhooks/config",
            Some(&json!({"url": blocked, "events": ["submission.created"]}).to_string()),
        )
        .await?;
    assert_eq!(reason["error"]["field"], "url", "{reason}");
    let reason = reason["error"]["message"]
        .as_str()
        .context("the api gives a reason")?
        .to_owned();
    let (status, _, html) = dashboard
        .post(
            &admin,
            PAGE,
            &[
                ("csrf_token", &save_token),
                ("url", blocked),
                ("events", "submission.created"),
                ("enabled", "on"),
                ("secret", "not-kept-in-the-form"),
            ],
        )
        .await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    let error_at = html.find(r#"id="url-error""#).context("url error shown")?;
    let error_text = &html[error_at..];
    assert!(
        error_text[..error_text.find("</p>").unwrap_or(error_text.len())]
            .contains(&escaped(&reason)),
        "{reason} not next to the url field: {html}"
    );
    assert!(html.contains(r#"aria-invalid="true""#), "{html}");
    assert!(html.contains("url-hint url-error"), "{html}");
    assert!(
        html.contains(&escaped(blocked)),
        "the input is kept: {html}"
    );
    assert!(!html.contains("not-kept-in-the-form"), "{html}");
    assert_eq!(stored_config(api).await?.1, config, "nothing changed");

    // Saving without typing a secret keeps it.
    let (status, _, body) = dashboard
        .post(
            &admin,
            PAGE,
            &[
                ("csrf_token", &save_token),
                ("url", &hook_url),
                ("events", "submission.created"),
                ("enabled", "on"),
                ("secret", ""),
            ],
        )
        .await?;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let (_, config) = stored_config(api).await?;
    assert_eq!(config["events"], json!(["submission.created"]));
    assert_eq!(config["secret_set"], true, "{config}");

    // Removing it.
    let (status, _, body) = dashboard
        .post(
            &admin,
            PAGE,
            &[
                ("csrf_token", &save_token),
                ("url", &hook_url),
                ("events", "submission.created"),
                ("enabled", "on"),
                ("remove_secret", "on"),
            ],
        )
        .await?;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let (_, config) = stored_config(api).await?;
    assert_eq!(config["secret_set"], false, "{config}");
    let (html, _, _) = dashboard.page(&admin).await?;
    assert!(html.contains("No secret"), "{html}");

    // Forms without their CSRF token change nothing.
    let (status, _, _) = dashboard
        .post(
            &admin,
            PAGE,
            &[
                ("url", "https://attacker.example/"),
                ("events", "submission.created"),
            ],
        )
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = dashboard
        .post(
            &admin,
            "/settings/integrations/test",
            &[("csrf_token", &save_token)],
        )
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "a token for another form");
    assert_eq!(stored_config(api).await?.1, config, "nothing changed");
    assert_eq!(receiver.requests().len(), 0, "no test event was sent");

    // "Generate secret" (no script): the form comes back with the input kept and a new `whsec_`
    // secret of 32 random bytes in the secret field, and nothing is saved yet.
    let mut generated = Vec::new();
    for _ in 0..2 {
        let (status, _, html) = dashboard
            .post_endpoint(
                &admin,
                &save_token,
                &hook_url,
                &[("secret", "typed-then-replaced"), ("generate_secret", "on")],
            )
            .await?;
        assert_eq!(status, StatusCode::OK, "{html}");
        assert!(html.contains(r#"id="secret-generated""#), "{html}");
        assert!(
            html.contains(&escaped(&hook_url)),
            "the input is kept: {html}"
        );
        assert!(!html.contains("typed-then-replaced"), "{html}");
        let field = hidden_field_after(&html, r#"id="secret""#, "secret")
            .context("the secret field holds the generated secret")?;
        generated.push(unescaped(&field));
    }
    assert_eq!(
        stored_config(api).await?.1,
        config,
        "generating saves nothing"
    );
    assert_ne!(generated[0], generated[1], "each secret is new");
    for secret in &generated {
        let key = secret.strip_prefix("whsec_").context("a whsec_ secret")?;
        assert_eq!(BASE64.decode(key)?.len(), 32, "{secret}");
    }
    // Saved, it signs the test event below.
    let generated_secret = WebhookSecret::new(generated[0].clone());
    let (status, _, body) = dashboard
        .post_endpoint(
            &admin,
            &save_token,
            &hook_url,
            &[("secret", generated_secret.expose())],
        )
        .await?;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let (_, config) = stored_config(api).await?;
    assert_eq!(config["secret_set"], true, "{config}");

    // The test event goes through the pipeline; the page shows how it went.
    let (status, location, body) = dashboard
        .post(
            &admin,
            "/settings/integrations/test",
            &[("csrf_token", &test_token)],
        )
        .await?;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let outcome_path = location.split('#').next().unwrap_or_default().to_owned();
    assert!(
        outcome_path.starts_with("/settings/integrations?test="),
        "{location}"
    );
    let requests = receiver.wait_for(1, PATIENCE).await?;
    assert_eq!(
        requests[0].header("x-feedbackpulse-event"),
        Some("webhook.test")
    );
    assert_eq!(requests[0].target, "/hooks/dashboard");
    let delivery_id = outcome_path.trim_start_matches("/settings/integrations?test=");
    assert_eq!(
        requests[0].header("x-feedbackpulse-delivery"),
        Some(delivery_id)
    );
    let delivered = &requests[0];
    let header = |name: &str| {
        delivered
            .header(name)
            .with_context(|| format!("the test event has no {name}"))
    };
    assert!(
        verify_standard_webhooks_signature(
            &generated_secret,
            header("webhook-id")?,
            header("webhook-timestamp")?.parse()?,
            &delivered.body,
            header("webhook-signature")?,
        ),
        "the generated secret verifies webhook-signature: {:?}",
        delivered.headers
    );
    assert!(verify_feedbackpulse_signature(
        &generated_secret,
        &delivered.body,
        header("x-feedbackpulse-signature")?
    ));
    // Log-ingest writes the attempt in its next batch; the outcome page reads it each time.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let html = loop {
        let (status, html) = dashboard.get(&admin, &outcome_path).await?;
        assert_eq!(status, StatusCode::OK, "{html}");
        if html.contains("Test event delivered.") || tokio::time::Instant::now() > deadline {
            break html;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(html.contains(r#"id="test-outcome""#), "{html}");
    assert!(html.contains("Test event delivered."), "{html}");
    assert!(
        html.contains(r#"<dd id="test-response-code">200</dd>"#),
        "{html}"
    );
    assert!(html.contains(delivery_id), "{html}");
    assert!(html.contains("event_type=webhook.test"), "{html}");

    // German.
    let response = admin
        .get(dashboard.url(PAGE))
        .header(header::ACCEPT_LANGUAGE, "de-DE,de;q=0.9")
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await?;
    assert!(html.contains(r#"<html lang="de">"#), "{html}");
    assert!(html.contains("Einstellungen &gt;"), "{html}");
    assert!(html.contains("Webhook-Endpunkt"), "{html}");
    assert!(html.contains("Speichern"), "{html}");
    assert!(html.contains("Secret erzeugen"), "{html}");
    assert!(
        html.contains("Mit dem Secret prüft Ihr Server"),
        "the secret's help: {html}"
    );
    // The SSRF policy's refusal in German too: the api words it in English only.
    let response = admin
        .post(dashboard.url(PAGE))
        .header(header::ACCEPT_LANGUAGE, "de-DE,de;q=0.9")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form_body(&[
            ("csrf_token", &save_token),
            ("url", blocked),
            ("events", "submission.created"),
            ("enabled", "on"),
        ]))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = response.text().await?;
    assert!(
        html.contains("der Host verweist auf eine Link-Local-Adresse"),
        "{html}"
    );
    assert!(
        !html.contains(&escaped(&reason)),
        "the English reason: {html}"
    );

    // A superadmin belongs to no tenant.
    let superadmin = browser()?;
    let (status, _) = dashboard
        .log_in(&superadmin, superadmin_email, password)
        .await?;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _) = dashboard.get(&superadmin, PAGE).await?;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Throttling: a few wrong passwords, then this client must wait, even with the right one
    // (the guesser's and the owner's different addresses are `tests/sessions.rs`).
    let guesser = browser()?;
    let mut attempts = 0;
    let html = loop {
        attempts += 1;
        let (status, html) = dashboard
            .log_in(&guesser, tenant_email, "wrong password")
            .await?;
        match status {
            StatusCode::UNAUTHORIZED if attempts < 10 => continue,
            StatusCode::TOO_MANY_REQUESTS => break html,
            _ => anyhow::bail!("wrong password {attempts} answered {status}: {html}"),
        }
    };
    assert!(html.contains("Too many failed log-ins"), "{html}");
    let (status, html) = dashboard.log_in(&guesser, tenant_email, password).await?;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{html}");
    // Other accounts are not locked out by it.
    let (status, _) = dashboard
        .log_in(&browser()?, superadmin_email, password)
        .await?;
    assert_eq!(status, StatusCode::SEE_OTHER);
    Ok(())
}
