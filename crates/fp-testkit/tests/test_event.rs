//! `POST /api/v2/webhooks/test` on the real parts: the event goes through the outbox, the broker and
//! a dispatcher to an HTTPS receiver, signed, whatever the endpoint subscribes to, and is logged.

use std::time::Duration;

use anyhow::Context;
use fp_testkit::environment::TestEnvironment;
use fp_testkit::pipeline::{Pipeline, TenantApi};
use fp_testkit::receiver::{TlsReceiver, always_ok};
use reqwest::Method;
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(30);
const SECRET: &str = "test-event-secret";

/// HMAC-SHA256 computed here with ring directly, not with the product's signing code.
fn expected_signature(body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    format!(
        "sha256={}",
        hex::encode(ring::hmac::sign(&key, body).as_ref())
    )
}

async fn send_test(tenant: &TenantApi) -> anyhow::Result<(u16, Value)> {
    tenant
        .send(Method::POST, "/api/v2/webhooks/test", None)
        .await
}

async fn put_config(tenant: &TenantApi, config: Value) -> anyhow::Result<(u16, Value)> {
    tenant
        .send(
            Method::PUT,
            "/api/v2/webhooks/config",
            Some(&config.to_string()),
        )
        .await
}

fn assert_conflict(status: u16, error: &Value, says: &[&str]) {
    assert_eq!(status, 409, "{error}");
    assert_eq!(error["error"]["code"], "conflict", "{error}");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    for words in says {
        assert!(message.contains(words), "{words:?} missing in {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_event_reaches_the_endpoint_through_the_pipeline_and_is_logged() -> anyhow::Result<()>
{
    let receiver = TlsReceiver::start("127.0.0.1:0".parse()?, always_ok()).await?;
    let mut env = TestEnvironment::new("testevent").await?;
    env.trust_receiver(&receiver)?;
    let pipeline = Pipeline::start(&mut env, 1).await?;
    let tenant = pipeline.tenant(&env, "Acme").await?;
    let other = pipeline.tenant(&env, "Other").await?;

    // Without a config there is nowhere to send it.
    let (status, error) = send_test(&tenant).await?;
    assert_conflict(
        status,
        &error,
        &[
            "no webhook config",
            "Integrations page",
            "PUT /api/v2/webhooks/config",
        ],
    );

    // webhook.test cannot be subscribed to; the refusal names the field and says why.
    let url = receiver.url("/hooks/test");
    let (status, error) = put_config(
        &tenant,
        json!({"url": url, "events": ["submission.created", "webhook.test"], "secret": SECRET}),
    )
    .await?;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"]["field"], "events[1]", "{error}");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("cannot be subscribed") && message.contains("POST /api/v2/webhooks/test"),
        "{message}"
    );

    // Subscribed to submission.created only: the test event still goes out.
    let (status, config) = put_config(
        &tenant,
        json!({"url": url, "events": ["submission.created"], "secret": SECRET}),
    )
    .await?;
    assert_eq!(status, 200, "{config}");
    let (status, sent) = send_test(&tenant).await?;
    assert_eq!(status, 202, "{sent}");
    let event_id = sent["event_id"].as_str().context("event_id")?.to_owned();
    let delivery_id = sent["delivery_id"]
        .as_str()
        .context("delivery_id")?
        .to_owned();

    let requests = receiver.wait_for(1, PATIENCE).await?;
    let request = &requests[0];
    assert_eq!(request.target, "/hooks/test");
    assert_eq!(
        request.header("x-feedbackpulse-delivery"),
        Some(delivery_id.as_str())
    );
    assert_eq!(request.header("webhook-id"), Some(delivery_id.as_str()));
    assert_eq!(
        request.header("x-feedbackpulse-event"),
        Some("webhook.test")
    );
    assert_eq!(
        request.header("x-feedbackpulse-signature"),
        Some(expected_signature(&request.body).as_str())
    );
    let body: Value = serde_json::from_slice(&request.body)?;
    assert_eq!(body["event"], "webhook.test", "{body}");
    assert!(body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(
        body["data"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("test event")),
        "{body}"
    );

    // The logs show the delivery under the returned ids, as an ordinary attempt.
    let entries = tenant
        .logs_until(PATIENCE, |entries| {
            entries
                .iter()
                .any(|entry| settled_entry_of(entry, &delivery_id))
        })
        .await?;
    let entry = entries
        .iter()
        .find(|entry| settled_entry_of(entry, &delivery_id))
        .context("the test delivery is logged")?;
    assert_eq!(entry["event_id"], event_id.as_str());
    assert_eq!(entry["event_type"], "webhook.test");
    assert_eq!(entry["response_code"], 200);
    assert_eq!(entry["final"], true);
    assert_eq!(entry["manual"], false);
    assert_eq!(
        entry["payload"].as_str().map(str::as_bytes),
        Some(&request.body[..])
    );
    let (status, page) = tenant
        .send(
            Method::GET,
            "/api/v2/webhooks/logs?event_type=webhook.test",
            None,
        )
        .await?;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["data"].as_array().map(Vec::len), Some(1), "{page}");

    // Another tenant neither sees it nor can send one without a config of its own.
    let (_, others) = other
        .send(Method::GET, "/api/v2/webhooks/logs", None)
        .await?;
    assert_eq!(others["data"], json!([]), "{others}");
    let (status, error) = send_test(&other).await?;
    assert_conflict(status, &error, &["no webhook config"]);

    // A disabled config takes no test event, and the answer says how to re-enable it.
    let (status, config) = put_config(
        &tenant,
        json!({"url": url, "events": ["submission.created"], "secret": SECRET, "enabled": false}),
    )
    .await?;
    assert_eq!(status, 200, "{config}");
    let (status, error) = send_test(&tenant).await?;
    assert_conflict(
        status,
        &error,
        &[
            "disabled",
            "re-enables",
            "Integrations page",
            "PUT /api/v2/webhooks/config",
        ],
    );
    // Nothing more was sent.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.requests().len(), 1);

    env.finish().await
}

/// An entry of `delivery_id` with its outcome (not the `interrupted` row an attempt shows from just
/// before its request until the outcome is logged).
fn settled_entry_of(entry: &Value, delivery_id: &str) -> bool {
    entry["delivery_id"] == delivery_id && entry["error"]["kind"] != "interrupted"
}
