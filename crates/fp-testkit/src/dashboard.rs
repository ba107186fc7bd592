//! The dashboard on the real pipeline, with users who can log in: the fixture of the browser tests.
//!
//! ```ignore
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn my_page() -> anyhow::Result<()> {
//!     browser_test("mypage", async |fixture, browser| {
//!         log_in(browser, &fixture.base, &fixture.tenant_email, &fixture.password).await?;
//!         browser.goto(&fixture.url("/my/page")).await?;
//!         browser.screenshots("my-page").await
//!     })
//!     .await
//! }
//! ```

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;

use anyhow::Context;
use futures_util::FutureExt;
use serde_json::Value;

use crate::browser::Browser;
use crate::environment::TestEnvironment;
use crate::pipeline::{Pipeline, TenantApi};
use crate::receiver::{Responder, TlsReceiver, always_ok};
use crate::sessions::create_user;

/// fpctl wants at least 10 characters.
const PASSWORD: &str = "correct horse battery staple";

/// fp-api, one fp-dispatcher, fp-log-ingest and fp-dashboard, a tenant with an admin user, a
/// superadmin user, and an HTTPS receiver the dispatcher trusts.
pub struct DashboardFixture {
    /// The dashboard's base URL, `http://127.0.0.1:<port>` (no trailing slash).
    pub base: String,
    pub address: SocketAddr,
    /// The tenant, through the api with its key.
    pub api: TenantApi,
    /// The tenant's admin user.
    pub tenant_email: String,
    /// A platform superadmin (no tenant).
    pub superadmin_email: String,
    /// Both users' password.
    pub password: String,
    pub pipeline: Pipeline,
    /// Answers `200 ok` to every delivery (unless started with another responder); the tenant's
    /// config is not saved until [`DashboardFixture::configure_webhook`] (or a page) does it.
    pub receiver: TlsReceiver,
    /// The receiver's webhook URL, `https://127.0.0.1:<port>/webhooks/feedbackpulse`.
    pub receiver_url: String,
}

impl DashboardFixture {
    /// Starts the pipeline and the dashboard in `env` and creates the tenant and the users.
    pub async fn start(env: &mut TestEnvironment) -> anyhow::Result<DashboardFixture> {
        Self::start_answering(env, always_ok()).await
    }

    /// [`DashboardFixture::start`] with a receiver that answers with `responder` (e.g. by path).
    pub async fn start_answering(
        env: &mut TestEnvironment,
        responder: Responder,
    ) -> anyhow::Result<DashboardFixture> {
        // Trusted before the dispatcher starts: it reads its trust roots once.
        let receiver = TlsReceiver::start("127.0.0.1:0".parse()?, responder).await?;
        env.trust_receiver(&receiver)?;
        let pipeline = Pipeline::start(env, 1).await?;

        let (address, _) = crate::pipeline::start_dashboard(env, pipeline.api).await?;

        let api = pipeline.tenant(env, "Acme GmbH").await?;
        let tenant_email = "admin@acme.example".to_owned();
        let superadmin_email = "ops@feedbackpulse.example".to_owned();
        create_user(env, &tenant_email, PASSWORD, Some(&api.tenant_id)).await?;
        create_user(env, &superadmin_email, PASSWORD, None).await?;

        Ok(DashboardFixture {
            base: format!("http://{address}"),
            address,
            api,
            tenant_email,
            superadmin_email,
            password: PASSWORD.to_owned(),
            pipeline,
            receiver_url: receiver.url("/webhooks/feedbackpulse"),
            receiver,
        })
    }

    /// The dashboard URL of `path` (`/webhooks/logs`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Saves the tenant's webhook config (both submission events, no secret) for the receiver.
    pub async fn configure_webhook(&self) -> anyhow::Result<Value> {
        self.api.configure(&self.receiver_url, None).await
    }
}

/// Runs `test` with a fresh [`TestEnvironment`] (named after `label`), a [`DashboardFixture`] and
/// a [`Browser`]; closes the browser and finishes the environment (database and broker namespace
/// removed, processes ended) whether the test passed, failed or panicked.
pub async fn browser_test<F>(label: &str, test: F) -> anyhow::Result<()>
where
    F: AsyncFnOnce(&DashboardFixture, &Browser) -> anyhow::Result<()>,
{
    browser_test_in(label, async |_, fixture, browser| {
        test(fixture, browser).await
    })
    .await
}

/// [`browser_test`] for a test that also needs the environment, e.g. to create another tenant
/// with `fixture.pipeline.tenant(env, "...")`.
pub async fn browser_test_in<F>(label: &str, test: F) -> anyhow::Result<()>
where
    F: AsyncFnOnce(&TestEnvironment, &DashboardFixture, &Browser) -> anyhow::Result<()>,
{
    browser_test_in_languages(label, crate::browser::DEFAULT_LANGUAGES, test).await
}

/// [`browser_test_in`] with a browser whose languages are `languages` (`de-DE,de`): what the
/// dashboard reads its language and default time zone from.
pub async fn browser_test_in_languages<F>(
    label: &str,
    languages: &str,
    test: F,
) -> anyhow::Result<()>
where
    F: AsyncFnOnce(&TestEnvironment, &DashboardFixture, &Browser) -> anyhow::Result<()>,
{
    let mut env = TestEnvironment::new(label).await?;
    let outcome = AssertUnwindSafe(async {
        let fixture = DashboardFixture::start(&mut env).await?;
        let browser = Browser::start_in(languages).await?;
        let tested = test(&env, &fixture, &browser).await;
        let closed = browser.close().await;
        tested.and(closed)
    })
    .catch_unwind()
    .await;
    env.finish_after_unwinding(outcome).await
}

/// A browser without JavaScript for the dashboard's HTTP tests: a cookie store, the given
/// `Accept-Language`, and redirects followed only when `follow_redirects` (otherwise the test sees
/// each `303` and its `Location`).
pub fn http_client(
    accept_language: &str,
    follow_redirects: bool,
) -> anyhow::Result<reqwest::Client> {
    http_client_from(None, accept_language, follow_redirects)
}

/// [`http_client`] connecting from `local` (e.g. 127.0.0.2: every 127.0.0.0/8 address is this
/// machine), so the dashboard sees another client address than 127.0.0.1.
pub fn http_client_from(
    local: Option<std::net::IpAddr>,
    accept_language: &str,
    follow_redirects: bool,
) -> anyhow::Result<reqwest::Client> {
    crate::install_crypto_provider();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::ACCEPT_LANGUAGE, accept_language.parse()?);
    let redirects = if follow_redirects {
        reqwest::redirect::Policy::default()
    } else {
        reqwest::redirect::Policy::none()
    };
    Ok(reqwest::Client::builder()
        .no_proxy()
        .cookie_store(true)
        .local_address(local)
        .default_headers(headers)
        .redirect(redirects)
        .build()?)
}

/// One log-in attempt through the dashboard's form at `base`, as a browser makes it: the form
/// (for its CSRF token), then the post. Returns the answer's status and body, whatever they are.
pub async fn http_log_in(
    client: &reqwest::Client,
    base: &str,
    email: &str,
    password: &str,
) -> anyhow::Result<(reqwest::StatusCode, String)> {
    let answer = post_log_in(client, base, email, password, None).await?;
    Ok((answer.status(), answer.text().await?))
}

/// [`http_log_in`] as a proxy in front of the dashboard forwards it: the post carries
/// `X-Forwarded-For: forwarded_for`.
pub async fn http_log_in_forwarded(
    client: &reqwest::Client,
    base: &str,
    email: &str,
    password: &str,
    forwarded_for: &str,
) -> anyhow::Result<(reqwest::StatusCode, String)> {
    let answer = post_log_in(client, base, email, password, Some(forwarded_for)).await?;
    Ok((answer.status(), answer.text().await?))
}

/// The session cookie's value after a successful log-in through the form at `base` (the value a
/// thief would copy); fails unless the log-in succeeds.
pub async fn http_session_cookie(
    base: &str,
    email: &str,
    password: &str,
) -> anyhow::Result<String> {
    let client = http_client("en", false)?;
    let answer = post_log_in(&client, base, email, password, None).await?;
    let status = answer.status();
    answer
        .cookies()
        .find(|cookie| cookie.name() == "fp_session" && !cookie.value().is_empty())
        .map(|cookie| cookie.value().to_owned())
        .with_context(|| format!("log-in as {email} answered {status} without a session cookie"))
}

async fn post_log_in(
    client: &reqwest::Client,
    base: &str,
    email: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> anyhow::Result<reqwest::Response> {
    let form = client
        .get(format!("{base}/login"))
        .send()
        .await?
        .text()
        .await?;
    let token = hidden_field_after(&form, r#"action="/login""#, "csrf_token")
        .context("the log-in form has no CSRF token")?;
    let mut post = client.post(format!("{base}/login"));
    if let Some(forwarded_for) = forwarded_for {
        post = post.header("x-forwarded-for", forwarded_for);
    }
    Ok(post
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(form_body(&[
            ("email", email),
            ("password", password),
            ("csrf_token", &token),
        ]))
        .send()
        .await?)
}

/// A client ([`http_client`], following redirects) signed in to the dashboard at `base` as
/// `email`; fails unless the log-in succeeds.
pub async fn http_session(
    base: &str,
    email: &str,
    password: &str,
    accept_language: &str,
) -> anyhow::Result<reqwest::Client> {
    let client = http_client(accept_language, true)?;
    let (status, body) = http_log_in(&client, base, email, password).await?;
    anyhow::ensure!(
        status.is_success(),
        "log-in as {email} answered {status}: {body}"
    );
    Ok(client)
}

/// The value of the first field `name` (`name="..." value="..."`, as the dashboard writes hidden
/// fields) after `marker` (e.g. the start of its form) in `html`, as written (still escaped).
pub fn hidden_field_after(html: &str, marker: &str, name: &str) -> Option<String> {
    let rest = &html[html.find(marker)?..];
    let field = format!(r#"name="{name}" value=""#);
    let start = rest.find(&field)? + field.len();
    let end = rest[start..].find('"')? + start;
    Some(rest[start..end].to_owned())
}

/// `text` as the dashboard's templates print it into HTML (tera's escaping).
pub fn html_escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
        .replace('/', "&#x2F;")
}

/// `application/x-www-form-urlencoded` encoding of `pairs` (names may repeat, as checkboxes do).
pub fn form_body(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}
