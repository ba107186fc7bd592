//! Failure explanations on the real pipeline: real failures of each kind (a closed port, each
//! certificate problem, a slow endpoint, a redirect, 404, 410 and 500) against real HTTPS
//! receivers, each a test event of its own tenant, come back from `GET /api/v2/webhooks/logs` and
//! the detail with the right `explanation`; and the dashboard shows it on the list, the detail
//! and the test event's outcome, in English and German.

use std::time::Duration;

use anyhow::Context;
use fp_testkit::browser::{Browser, log_in};
use fp_testkit::certificates::{self, ServerCertificate};
use fp_testkit::dashboard::browser_test;
use fp_testkit::environment::TestEnvironment;
use fp_testkit::pipeline::{Pipeline, TenantApi, is_interrupted};
use fp_testkit::receiver::{CannedResponse, ReceivedRequest, Responder, TlsReceiver, always_ok};
use futures_util::future::try_join_all;
use reqwest::Method;
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(30);
const LOOPBACK_NAMES: &[&str] = &["127.0.0.1", "localhost"];
/// The dispatcher's request timeout here; the slow path answers well after it.
const REQUEST_TIMEOUT_MS: u64 = 1000;
const SLOW_ANSWER: Duration = Duration::from_secs(3);

/// Answers by path: `/status/<code>`, `/redirect` (301 elsewhere), `/slow` (200, too late).
fn answers_by_path() -> Responder {
    std::sync::Arc::new(
        |request: &ReceivedRequest, _: usize| match request.target.as_str() {
            "/redirect" => CannedResponse {
                headers: vec![(
                    "location".to_owned(),
                    "https://hooks.example.com/final".to_owned(),
                )],
                ..CannedResponse::new(301, "moved")
            },
            "/slow" => CannedResponse {
                delay: SLOW_ANSWER,
                ..CannedResponse::new(200, "late")
            },
            target => {
                let status = target
                    .strip_prefix("/status/")
                    .and_then(|code| code.parse().ok())
                    .unwrap_or(200);
                CannedResponse::new(status, "canned")
            }
        },
    )
}

/// A case: the endpoint URL, and what its first attempt must be logged with.
struct Case {
    name: &'static str,
    url: String,
    error_kind: &'static str,
    explanation: &'static str,
    /// Words the English text must hold: the fix the product promises.
    says: &'static str,
    response_code: Option<u16>,
}

/// The first settled attempt of the tenant's test event, once logged.
async fn first_outcome(tenant: &TenantApi) -> anyhow::Result<Value> {
    let settled = |entries: &[Value]| entries.iter().any(|entry| !is_interrupted(entry));
    let entries = tenant.logs_until(PATIENCE, settled).await?;
    entries
        .iter()
        .rev()
        .find(|entry| !is_interrupted(entry))
        .cloned()
        .with_context(|| format!("no outcome logged within {PATIENCE:?}: {entries:?}"))
}

async fn check_case(tenant: &TenantApi, case: &Case) -> anyhow::Result<()> {
    let name = case.name;
    tenant
        .configure_events(&case.url, &["submission.created"], None)
        .await?;
    let (status, sent) = tenant
        .send(Method::POST, "/api/v2/webhooks/test", None)
        .await?;
    anyhow::ensure!(
        status == 202,
        "{name}: test event refused ({status}): {sent}"
    );

    let entry = first_outcome(tenant).await?;
    anyhow::ensure!(
        entry["event_type"] == "webhook.test"
            && entry["error"]["kind"] == case.error_kind
            && entry["response_code"].as_u64() == case.response_code.map(u64::from),
        "{name}: expected error kind {} and response code {:?}, got {entry}",
        case.error_kind,
        case.response_code
    );
    let explanation = &entry["explanation"];
    anyhow::ensure!(
        explanation["id"] == case.explanation,
        "{name}: expected explanation {}, got {entry}",
        case.explanation
    );
    let text = explanation["text"].as_str().unwrap_or_default();
    anyhow::ensure!(
        text.contains(case.says),
        "{name}: {:?} missing in {text:?}",
        case.says
    );

    // The detail says the same, for the attempt and in its delivery's list of attempts.
    let id = entry["id"].as_str().context("entry id")?;
    let (status, detail) = tenant
        .send(Method::GET, &format!("/api/v2/webhooks/logs/{id}"), None)
        .await?;
    anyhow::ensure!(status == 200, "{name}: detail answered {status}: {detail}");
    anyhow::ensure!(detail["explanation"] == *explanation, "{name}: {detail}");
    let in_delivery = detail["attempts"]
        .as_array()
        .and_then(|attempts| attempts.iter().find(|attempt| attempt["id"] == id))
        .with_context(|| format!("{name}: the attempt is not in its delivery: {detail}"))?;
    anyhow::ensure!(
        in_delivery["explanation"] == *explanation,
        "{name}: {detail}"
    );
    Ok(())
}

/// The text of the element matching `css`, reloading the page until it shows: the page may have
/// been rendered while the attempt was still in flight.
async fn reload_until_shown(browser: &Browser, css: &str) -> anyhow::Result<String> {
    let url = browser.current_url().await?;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while browser.count(css).await? == 0 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{css} not shown on {url} within {PATIENCE:?}: {}",
            browser.page_text().await?
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        browser.goto(&url).await?;
    }
    browser.text(css).await
}

/// A port nothing listens on: one that was free a moment ago.
fn closed_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_failures_of_each_kind_are_explained_in_the_api() -> anyhow::Result<()> {
    let listen = "127.0.0.1:0".parse()?;
    let answering = TlsReceiver::start(listen, answers_by_path()).await?;
    let expired = TlsReceiver::start_with_identity(
        listen,
        certificates::generate_as(LOOPBACK_NAMES, ServerCertificate::Expired)?,
        always_ok(),
    )
    .await?;
    let wrong_host =
        TlsReceiver::start_with_names(listen, &["hooks.other.test"], always_ok()).await?;
    // Not trusted by the dispatcher: its CA is no root.
    let unknown_ca = TlsReceiver::start(listen, always_ok()).await?;
    let self_signed = TlsReceiver::start_with_identity(
        listen,
        certificates::generate_as(LOOPBACK_NAMES, ServerCertificate::SelfSigned)?,
        always_ok(),
    )
    .await?;

    let mut env = TestEnvironment::new("explanations").await?;
    // The CAs of the answering, expired and wrong-host receivers are trusted, so their
    // certificates fail for their own reason only.
    let mut trusted = String::new();
    for (index, receiver) in [&answering, &expired, &wrong_host].into_iter().enumerate() {
        let path = env.dir.join(format!("ca-{index}.pem"));
        receiver.write_ca_pem(&path)?;
        trusted.push_str(&std::fs::read_to_string(&path)?);
    }
    let roots = env.dir.join("trusted-cas.pem");
    std::fs::write(&roots, trusted)?;
    env.set(
        "FP__DISPATCHER__EXTRA_ROOT_CERTS",
        roots.display().to_string(),
    );
    env.set("FP__DISPATCHER__ALLOW_PRIVATE_CIDRS", "127.0.0.1/32");
    env.set(
        "FP__DISPATCHER__REQUEST_TIMEOUT_MS",
        REQUEST_TIMEOUT_MS.to_string(),
    );
    // One attempt within the test: the second would come an hour later.
    env.set("FP__DISPATCHER__RETRY_SCHEDULE", "1h");
    let pipeline = Pipeline::start(&mut env, 1).await?;

    let cases = [
        Case {
            name: "refused",
            url: format!("https://127.0.0.1:{}/hook", closed_port()?),
            error_kind: "connection_refused",
            explanation: "connection_refused",
            says: "nothing listens on that port",
            response_code: None,
        },
        Case {
            name: "unknown CA",
            url: unknown_ca.url("/hook"),
            error_kind: "tls_unknown_authority",
            explanation: "tls_unknown_authority",
            says: "publicly trusted authority",
            response_code: None,
        },
        Case {
            name: "self-signed",
            url: self_signed.url("/hook"),
            error_kind: "tls_self_signed",
            explanation: "tls_self_signed",
            says: "self-signed",
            response_code: None,
        },
        Case {
            name: "expired",
            url: expired.url("/hook"),
            error_kind: "tls_expired",
            explanation: "tls_expired",
            says: "has expired",
            response_code: None,
        },
        Case {
            name: "wrong host",
            url: wrong_host.url("/hook"),
            error_kind: "tls_wrong_host",
            explanation: "tls_wrong_host",
            says: "not valid for the URL's host name",
            response_code: None,
        },
        Case {
            name: "timeout",
            url: answering.url("/slow"),
            error_kind: "timeout",
            explanation: "timeout",
            says: "2xx at once",
            response_code: None,
        },
        Case {
            name: "redirect",
            url: answering.url("/redirect"),
            error_kind: "redirect",
            explanation: "redirect",
            says: "we do not follow redirects",
            response_code: Some(301),
        },
        Case {
            name: "404",
            url: answering.url("/status/404"),
            error_kind: "http_status",
            explanation: "not_found",
            says: "Check the path in the URL",
            response_code: Some(404),
        },
        Case {
            name: "410",
            url: answering.url("/status/410"),
            error_kind: "http_status",
            explanation: "gone",
            says: "we stopped",
            response_code: Some(410),
        },
        Case {
            name: "500",
            url: answering.url("/status/500"),
            error_kind: "http_status",
            explanation: "server_error",
            says: "error logs",
            response_code: Some(500),
        },
    ];
    let mut tenants = Vec::new();
    for case in &cases {
        tenants.push(pipeline.tenant(&env, case.name).await?);
    }
    try_join_all(
        tenants
            .iter()
            .zip(&cases)
            .map(|(tenant, case)| check_case(tenant, case)),
    )
    .await?;

    // The document lists every explanation id beside the error.
    let document: Value = serde_json::from_str(
        &reqwest::Client::builder()
            .no_proxy()
            .build()?
            .get(format!("http://{}/api/v2/openapi.json", pipeline.api))
            .send()
            .await?
            .text()
            .await?,
    )?;
    let schemas = &document["components"]["schemas"];
    let ids = schemas["AttemptExplanation"]["properties"]["id"]["enum"]
        .as_array()
        .with_context(|| format!("no explanation ids in {schemas}"))?;
    for case in &cases {
        anyhow::ensure!(
            ids.iter().any(|id| id == case.explanation),
            "{} not documented: {ids:?}",
            case.explanation
        );
    }
    anyhow::ensure!(
        schemas["LogEntry"]["properties"]
            .get("explanation")
            .is_some(),
        "LogEntry has no explanation: {schemas}"
    );
    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_explains_a_failure_in_english_and_german() -> anyhow::Result<()> {
    browser_test("explanations_browser", async |fixture, browser| {
        let url = format!("https://127.0.0.1:{}/hook", closed_port()?);
        fixture
            .api
            .configure_events(&url, &["submission.created"], None)
            .await?;
        let english = "The connection was refused: nothing listens on that port.";
        let german = "Die Verbindung wurde abgelehnt: Auf diesem Port lauscht nichts.";

        // The test event's outcome on Integrations.
        log_in(
            browser,
            &fixture.base,
            &fixture.tenant_email,
            &fixture.password,
        )
        .await?;
        browser.goto(&fixture.url("/settings/integrations")).await?;
        browser.click_to_load("Send test event").await?;
        let outcome = reload_until_shown(browser, "#test-explanation").await?;
        anyhow::ensure!(outcome.contains(english), "{outcome}");
        browser.screenshots("explanation-test-event").await?;

        // The list and the detail, in English.
        browser.goto(&fixture.url("/webhooks/logs")).await?;
        let listed = browser.text("#log-table .explanation").await?;
        anyhow::ensure!(listed.contains(english), "{listed}");
        browser.screenshots("explanation-logs").await?;
        let detail = browser
            .links("#log-table tr:has(.explanation) a[href^='/webhooks/logs/']")
            .await?
            .into_iter()
            .next()
            .context("no detail link in the list")?;
        let detail_path = url::Url::parse(&detail)?.path().to_owned();
        browser.goto(&detail).await?;
        let explained = browser.text("#attempt-explanation").await?;
        anyhow::ensure!(explained.contains(english), "{explained}");

        // Switched to German: the detail, then the list.
        browser.click_to_load("DE").await?;
        browser.wait_for_path(&detail_path).await?;
        let explained = browser.text("#attempt-explanation").await?;
        anyhow::ensure!(explained.contains(german), "{explained}");
        browser.screenshots("explanation-detail-de").await?;
        browser.goto(&fixture.url("/webhooks/logs")).await?;
        let listed = browser.text("#log-table .explanation").await?;
        anyhow::ensure!(listed.contains(german), "{listed}");
        anyhow::ensure!(!listed.contains(english), "English left: {listed}");
        Ok(())
    })
    .await
}
