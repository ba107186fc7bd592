//! Manual redelivery on the real parts: `POST /api/v2/webhooks/logs/{id}/redeliver` and the bulk
//! `POST /api/v2/webhooks/logs/redeliver` (a recovery, previewed by
//! `GET /api/v2/webhooks/logs/redeliver/preview` and followed by
//! `GET /api/v2/webhooks/recoveries/{id}`), through the broker's retry queue and a dispatcher to
//! HTTPS receivers at the endpoint's current URL, logged as manual attempts; tenant isolation,
//! format changes, conflicts, validation and a broker that refuses the job.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};
use fp_broker::Broker;
use fp_store::attempts::{AttemptRow, StoredHeaders};
use fp_testkit::environment::{TestEnvironment, broker_url};
use fp_testkit::pipeline::{Pipeline, TenantApi};
use fp_testkit::receiver::{CannedResponse, ReceivedRequest, TlsReceiver, always_ok};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(30);
const SECRET: &str = "redelivery-secret";

/// HMAC-SHA256 computed here with ring directly, not with the product's signing code.
fn expected_signature(body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    format!(
        "sha256={}",
        hex::encode(ring::hmac::sign(&key, body).as_ref())
    )
}

fn assert_signed(request: &ReceivedRequest) {
    assert_eq!(
        request.header("x-feedbackpulse-signature"),
        Some(expected_signature(&request.body).as_str())
    );
}

async fn redeliver(tenant: &TenantApi, attempt_id: &str) -> anyhow::Result<(u16, Value)> {
    tenant
        .send(
            Method::POST,
            &format!("/api/v2/webhooks/logs/{attempt_id}/redeliver"),
            None,
        )
        .await
}

async fn redeliver_range(tenant: &TenantApi, body: &str) -> anyhow::Result<(u16, Value)> {
    tenant
        .send(Method::POST, "/api/v2/webhooks/logs/redeliver", Some(body))
        .await
}

/// `GET /api/v2/webhooks/logs/redeliver/preview` with `query` (already encoded).
async fn preview(tenant: &TenantApi, query: &str) -> anyhow::Result<(u16, Value)> {
    tenant
        .send(
            Method::GET,
            &format!("/api/v2/webhooks/logs/redeliver/preview?{query}"),
            None,
        )
        .await
}

async fn recovery(tenant: &TenantApi, id: &str) -> anyhow::Result<(u16, Value)> {
    tenant
        .send(
            Method::GET,
            &format!("/api/v2/webhooks/recoveries/{id}"),
            None,
        )
        .await
}

/// Polls the recovery until `done` holds (or `PATIENCE` passes), checking on every answer that its
/// counts add up to the deliveries it queued; returns the last answer.
async fn recovery_until(
    tenant: &TenantApi,
    id: &str,
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, answer) = recovery(tenant, id).await?;
        anyhow::ensure!(status == 200, "recovery answered {status}: {answer}");
        let count = |name: &str| answer[name].as_i64().unwrap_or(-1);
        let queued = answer["delivery_ids"].as_array().map_or(0, Vec::len);
        anyhow::ensure!(
            count("delivered") + count("failed") + count("pending")
                == i64::try_from(queued).unwrap_or_default(),
            "the counts do not add up: {answer}"
        );
        if done(&answer) || tokio::time::Instant::now() > deadline {
            return Ok(answer);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Lets the services about to start deliver to every one of `receivers` (their CAs as one bundle).
fn trust_receivers(env: &mut TestEnvironment, receivers: &[&TlsReceiver]) -> anyhow::Result<()> {
    let mut bundle = String::new();
    for (index, receiver) in receivers.iter().enumerate() {
        let path = env.dir.join(format!("receiver-{index}-ca.pem"));
        receiver.write_ca_pem(&path)?;
        bundle.push_str(&std::fs::read_to_string(&path)?);
    }
    let bundle_path = env.dir.join("receiver-cas.pem");
    std::fs::write(&bundle_path, bundle)?;
    env.set(
        "FP__DISPATCHER__EXTRA_ROOT_CERTS",
        bundle_path.display().to_string(),
    );
    env.set("FP__DISPATCHER__ALLOW_PRIVATE_CIDRS", "127.0.0.1/32");
    Ok(())
}

fn assert_error(status: u16, error: &Value, want_status: u16, code: &str, says: &str) {
    assert_eq!(status, want_status, "{error}");
    assert_eq!(error["error"]["code"], code, "{error}");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "{says:?} missing in {message}");
}

fn entry_of_attempt(entries: &[Value], attempt_number: i64) -> Option<&Value> {
    entries
        .iter()
        .find(|entry| entry["attempt_number"] == attempt_number)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_is_redelivered_byte_for_byte_to_the_endpoints_current_url()
-> anyhow::Result<()> {
    let broken = Arc::new(AtomicBool::new(true));
    let receiver = TlsReceiver::start(
        "127.0.0.1:0".parse()?,
        Arc::new({
            let broken = broken.clone();
            move |_, _| {
                if broken.load(Ordering::SeqCst) {
                    CannedResponse::new(500, "down")
                } else {
                    CannedResponse::new(200, "ok")
                }
            }
        }),
    )
    .await?;
    // Where the endpoint moves to later: another host and port, its own certificate.
    let moved = TlsReceiver::start("127.0.0.1:0".parse()?, always_ok()).await?;
    let mut env = TestEnvironment::new("redeliver").await?;
    trust_receivers(&mut env, &[&receiver, &moved])?;
    // One short retry, so the delivery fails for good within a second.
    env.set("FP__DISPATCHER__RETRY_SCHEDULE", "200ms");
    // The dispatcher sees a saved config at once, even before it listens for config changes.
    env.set("FP__DISPATCHER__CONFIG_CACHE_TTL_MS", "1");
    let pipeline = Pipeline::start(&mut env, 1).await?;
    let alice = pipeline.tenant(&env, "Alice").await?;
    let bob = pipeline.tenant(&env, "Bob").await?;
    let url = configured_url(&alice, &receiver.url("/hook")).await?;
    alice.submit("it will fail", Some("Jane")).await?;

    let entries = alice
        .logs_until(PATIENCE, |entries| {
            entries.iter().any(|entry| entry["final"] == true)
        })
        .await?;
    assert_eq!(entries.len(), 2, "{entries:?}");
    for entry in &entries {
        assert_eq!(entry["response_code"], 500);
        assert_eq!(entry["manual"], false);
    }
    let first = entry_of_attempt(&entries, 1).context("first attempt")?;
    let attempt_id = first["id"].as_str().context("attempt id")?.to_owned();
    let delivery_id = first["delivery_id"]
        .as_str()
        .context("delivery id")?
        .to_owned();
    let original = receiver.requests()[0].clone();

    // Bob cannot redeliver Alice's attempt, nor learn that it exists.
    for id in [
        attempt_id.clone(),
        Uuid::now_v7().to_string(),
        "not-a-uuid".to_owned(),
    ] {
        let (status, error) = redeliver(&bob, &id).await?;
        assert_error(status, &error, 404, "not_found", "not found");
    }
    let (status, error) = redeliver(&alice, &Uuid::now_v7().to_string()).await?;
    assert_error(status, &error, 404, "not_found", "not found");

    // Fixed: the redelivery is a new attempt of the same delivery, with the same bytes.
    broken.store(false, Ordering::SeqCst);
    let (status, accepted) = redeliver(&alice, &attempt_id).await?;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["delivery_id"], delivery_id.as_str());
    assert_eq!(accepted["attempt_number"], 3);
    let requests = receiver.wait_for(3, PATIENCE).await?;
    let again = &requests[2];
    assert_eq!(again.body, original.body, "byte-identical body");
    assert_eq!(
        again.header("x-feedbackpulse-delivery"),
        Some(delivery_id.as_str())
    );
    assert_eq!(again.header("webhook-id"), Some(delivery_id.as_str()));
    assert_eq!(
        again.header("x-feedbackpulse-event"),
        Some("submission.created")
    );
    assert_signed(again);
    let timestamp = |request: &ReceivedRequest| {
        request
            .header("webhook-timestamp")
            .and_then(|text| text.parse::<i64>().ok())
            .unwrap_or_default()
    };
    assert!(timestamp(again) >= timestamp(&original) && timestamp(&original) > 0);

    let entries = alice
        .logs_until(PATIENCE, |entries| entry_of_attempt(entries, 3).is_some())
        .await?;
    let manual = entry_of_attempt(&entries, 3).context("manual attempt logged")?;
    assert_eq!(manual["delivery_id"], delivery_id.as_str());
    assert_eq!(manual["manual"], true);
    assert_eq!(manual["final"], true);
    assert_eq!(manual["response_code"], 200);
    assert!(manual["next_retry_at"].is_null());
    assert_eq!(
        manual["payload"].as_str().map(str::as_bytes),
        Some(&original.body[..])
    );
    assert!(
        entries
            .iter()
            .filter(|entry| entry["attempt_number"] != 3)
            .all(|entry| entry["manual"] == false)
    );

    // The endpoint moves: a redelivery goes to its current URL (as retries do), the same bytes
    // under the same delivery id, signed with the current secret; the old URL gets nothing.
    let moved_url = configured_url(&alice, &moved.url("/moved")).await?;
    let (status, accepted) = redeliver(&alice, &attempt_id).await?;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["delivery_id"], delivery_id.as_str());
    assert_eq!(accepted["attempt_number"], 4);
    let at_new_url = moved.wait_for(1, PATIENCE).await?.remove(0);
    assert_eq!(at_new_url.target, "/moved");
    assert_eq!(at_new_url.body, original.body, "byte-identical body");
    assert_eq!(
        at_new_url.header("x-feedbackpulse-delivery"),
        Some(delivery_id.as_str())
    );
    assert_eq!(at_new_url.header("webhook-id"), Some(delivery_id.as_str()));
    assert_signed(&at_new_url);
    // The log says where each attempt went: the list and the delivery's detail.
    let entries = alice
        .logs_until(PATIENCE, |entries| entry_of_attempt(entries, 4).is_some())
        .await?;
    let to_new_url = entry_of_attempt(&entries, 4).context("attempt 4 logged")?;
    assert_eq!(to_new_url["url"], moved_url.as_str());
    assert_eq!(to_new_url["response_code"], 200);
    assert_eq!(to_new_url["manual"], true);
    let (status, detail) = alice
        .send(
            Method::GET,
            &format!(
                "/api/v2/webhooks/logs/{}",
                to_new_url["id"].as_str().context("attempt 4's id")?
            ),
            None,
        )
        .await?;
    assert_eq!(status, 200, "{detail}");
    let went_to: Vec<(i64, &str)> = detail["attempts"]
        .as_array()
        .context("the delivery's attempts")?
        .iter()
        .map(|attempt| {
            (
                attempt["attempt_number"].as_i64().unwrap_or_default(),
                attempt["url"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        went_to,
        [
            (1, url.as_str()),
            (2, url.as_str()),
            (3, url.as_str()),
            (4, moved_url.as_str())
        ]
    );
    assert_eq!(
        receiver.requests().len(),
        3,
        "nothing more went to the old URL"
    );

    // A body made for another format (here a Slack message) is not sent to a custom endpoint:
    // 409, saying why, and nothing is sent.
    let slack = Seed::new("https://hooks.slack.com/services/T0/B0/SlackT0ken", "slack");
    let slack_attempt = slack.attempt(tenant_uuid(&alice)?, 1, Utc::now(), Some(500), true);
    let mut conn = fp_store::connect(&env.database_url).await?;
    fp_store::attempts::insert_batch(&mut conn, std::slice::from_ref(&slack_attempt)).await?;
    let (status, error) = redeliver(&alice, &slack_attempt.id.to_string()).await?;
    assert_error(
        status,
        &error,
        409,
        "conflict",
        "`slack` endpoint it went to",
    );
    assert_error(
        status,
        &error,
        409,
        "conflict",
        "now names a `custom` endpoint",
    );

    // Only while the endpoint is enabled, and only while there is one.
    let (status, config) = alice
        .send(
            Method::PUT,
            "/api/v2/webhooks/config",
            Some(
                &json!({"url": url, "events": ["submission.created"], "secret": SECRET, "enabled": false})
                    .to_string(),
            ),
        )
        .await?;
    assert_eq!(status, 200, "{config}");
    let (status, error) = redeliver(&alice, &attempt_id).await?;
    assert_error(status, &error, 409, "conflict", "disabled");
    // `send` expects a JSON answer; a delete answers 204 with none.
    let deleted = alice
        .http
        .delete(format!("{}/api/v2/webhooks/config", alice.base))
        .bearer_auth(&alice.key)
        .send()
        .await?;
    assert_eq!(deleted.status().as_u16(), 204);
    let (status, error) = redeliver(&alice, &attempt_id).await?;
    assert_error(status, &error, 409, "conflict", "no webhook config");

    // A broker that does not take the job: the caller learns it, and nothing is sent.
    alice.configure(&url, Some(SECRET)).await?;
    let broker = Broker::connect(&broker_url(), &env.namespace).await?;
    broker
        .channel()
        .await?
        .queue_delete(broker.names.retry_queue.as_str().into(), Default::default())
        .await?;
    let (status, error) = redeliver(&alice, &attempt_id).await?;
    assert_error(status, &error, 503, "unavailable", "not queued");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.requests().len(), 3);
    assert_eq!(moved.requests().len(), 1);
    // Put the queue back, so the namespace is whole when it is deleted.
    env.fpctl(&["migrate"]).await?;
    broker.close().await;

    env.finish().await
}

fn day(n: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 1, 10, 0, 0)
        .single()
        .unwrap_or_default()
        + chrono::Duration::days(i64::from(n))
}

/// One logged attempt of a seeded delivery.
struct Seed {
    delivery_id: Uuid,
    event_id: Uuid,
    url: String,
    body: Vec<u8>,
}

impl Seed {
    fn new(url: &str, name: &str) -> Self {
        let event_id = Uuid::now_v7();
        Seed {
            delivery_id: Uuid::now_v7(),
            event_id,
            url: url.to_owned(),
            body: format!(r#"{{"event":"submission.created","data":{{"seed":"{name}"}}}}"#)
                .into_bytes(),
        }
    }

    fn attempt(
        &self,
        tenant_id: Uuid,
        attempt_number: i32,
        at: DateTime<Utc>,
        status: Option<i32>,
        is_final: bool,
    ) -> AttemptRow {
        AttemptRow {
            id: Uuid::now_v7(),
            delivery_id: self.delivery_id,
            event_id: self.event_id,
            tenant_id,
            event_type: "submission.created".to_owned(),
            url: self.url.clone(),
            attempt_number,
            attempted_at: at,
            duration_ms: 10,
            request_headers: StoredHeaders::none(),
            request_body: self.body.clone(),
            response_status: status,
            response_headers: StoredHeaders::none(),
            response_body: Vec::new(),
            response_truncated: false,
            error_kind: None,
            error_message: None,
            is_final,
            next_retry_at: None,
            manual: false,
            traceparent: String::new(),
            tracestate: String::new(),
        }
    }
}

fn tenant_uuid(tenant: &TenantApi) -> anyhow::Result<Uuid> {
    Ok(Uuid::parse_str(&tenant.tenant_id)?)
}

/// The URL the api stored, which is what attempts record.
async fn configured_url(tenant: &TenantApi, url: &str) -> anyhow::Result<String> {
    let config = tenant.configure(url, Some(SECRET)).await?;
    Ok(config["url"].as_str().context("url")?.to_owned())
}

const RANGE: &str = r#"{"from": "2024-03-01T00:00:00Z", "to": "2024-03-08T00:00:00Z"}"#;
/// [`RANGE`] as the preview's query string.
const RANGE_QUERY: &str = "from=2024-03-01T00:00:00Z&to=2024-03-08T00:00:00Z";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_is_previewed_then_redelivers_exactly_the_failed_deliveries_of_the_range()
-> anyhow::Result<()> {
    let receiver = TlsReceiver::start("127.0.0.1:0".parse()?, always_ok()).await?;
    let mut env = TestEnvironment::new("bulkredeliver").await?;
    env.trust_receiver(&receiver)?;
    let pipeline = Pipeline::start(&mut env, 1).await?;
    let alice = pipeline.tenant(&env, "Alice").await?;
    let bob = pipeline.tenant(&env, "Bob").await?;
    let carol = pipeline.tenant(&env, "Carol").await?;
    let url = configured_url(&alice, &receiver.url("/alice")).await?;
    let bob_url = configured_url(&bob, &receiver.url("/bob")).await?;
    let (a, b) = (tenant_uuid(&alice)?, tenant_uuid(&bob)?);

    // Alice's history, the range being days 0 to 6.
    let failed = Seed::new(&url, "failed");
    let succeeded = Seed::new(&url, "succeeded");
    let retrying = Seed::new(&url, "still retrying");
    let outside = Seed::new(&url, "failed after the range");
    // Sent to another URL of the same format: recovered, to the URL the config names now.
    let moved = Seed::new("https://old.example/hook", "old endpoint");
    // Its body was made for Slack: the custom endpoint cannot take it.
    let slack = Seed::new("https://hooks.slack.com/services/T0/B0/SlackT0ken", "slack");
    let ends_later = Seed::new(&url, "failed for good after the range");
    let manual_failed = Seed::new(&url, "manual redelivery failed too");
    let unanswered = Seed::new(&url, "no answer");
    let bobs = Seed::new(&bob_url, "bob's");
    let rows = vec![
        failed.attempt(a, 1, day(1), Some(500), false),
        failed.attempt(a, 2, day(1), Some(503), true),
        succeeded.attempt(a, 1, day(1), Some(500), false),
        succeeded.attempt(a, 2, day(1), Some(200), true),
        retrying.attempt(a, 1, day(2), Some(500), false),
        outside.attempt(a, 1, day(20), Some(500), true),
        moved.attempt(a, 1, day(2), Some(500), true),
        ends_later.attempt(a, 1, day(2), Some(500), false),
        ends_later.attempt(a, 2, day(10), Some(500), true),
        manual_failed.attempt(a, 1, day(3), Some(410), true),
        AttemptRow {
            manual: true,
            traceparent: String::new(),
            tracestate: String::new(),
            ..manual_failed.attempt(a, 2, day(4), Some(500), true)
        },
        unanswered.attempt(a, 1, day(4), None, true),
        slack.attempt(a, 1, day(5), Some(404), true),
        bobs.attempt(b, 1, day(1), Some(500), true),
    ];
    let mut conn = fp_store::connect(&env.database_url).await?;
    fp_store::attempts::insert_batch(&mut conn, &rows).await?;

    // Bad bodies name their field.
    for (body, field) in [
        ("{}", "from"),
        (r#"{"from": "2024-03-01T00:00:00Z"}"#, "to"),
        (
            r#"{"from": "yesterday", "to": "2024-03-08T00:00:00Z"}"#,
            "from",
        ),
        (r#"{"from": "2024-03-01T00:00:00Z", "to": 17}"#, "to"),
        (
            r#"{"from": "2024-03-08T00:00:00Z", "to": "2024-03-08T00:00:00Z"}"#,
            "to",
        ),
        (
            r#"{"from": "2024-03-08T00:00:00Z", "to": "2024-03-01T00:00:00Z"}"#,
            "to",
        ),
        (
            r#"{"from": "2024-03-01T00:00:00Z", "to": "2024-04-01T00:00:01Z"}"#,
            "to",
        ),
        (
            r#"{"from": "2024-03-01T00:00:00Z", "to": "2024-03-08T00:00:00Z", "tenant_id": "x"}"#,
            "tenant_id",
        ),
    ] {
        let (status, error) = redeliver_range(&alice, body).await?;
        assert_eq!(status, 422, "{body}: {error}");
        assert_eq!(error["error"]["field"], field, "{body}: {error}");
    }
    let (status, error) = redeliver_range(&alice, "{").await?;
    assert_error(status, &error, 400, "malformed_json", "not valid JSON");
    let (status, error) = redeliver_range(&carol, RANGE).await?;
    assert_error(status, &error, 409, "conflict", "no webhook config");
    // The preview checks its range as the bulk call does, and takes nothing else.
    for (query, field) in [
        ("to=2024-03-08T00:00:00Z", "from"),
        ("from=2024-03-01T00:00:00Z", "to"),
        ("from=yesterday&to=2024-03-08T00:00:00Z", "from"),
        ("from=2024-03-08T00:00:00Z&to=2024-03-01T00:00:00Z", "to"),
        ("from=2024-03-01T00:00:00Z&to=2024-04-01T00:00:01Z", "to"),
        (
            "from=2024-03-01T00:00:00Z&to=2024-03-08T00:00:00Z&tenant_id=x",
            "tenant_id",
        ),
    ] {
        let (status, error) = preview(&alice, query).await?;
        assert_eq!(status, 422, "{query}: {error}");
        assert_eq!(error["error"]["field"], field, "{query}: {error}");
    }
    let (status, error) = preview(&carol, RANGE_QUERY).await?;
    assert_error(status, &error, 409, "conflict", "no webhook config");

    // The preview counts what the call will send, and sends nothing.
    let (status, previewed) = preview(&alice, RANGE_QUERY).await?;
    assert_eq!(status, 200, "{previewed}");
    assert_eq!(
        previewed,
        json!({"failed": 6, "would_redeliver": 5, "skipped_format_changed": 1, "more": false, "url": url})
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receiver.requests().is_empty(), "the preview sent something");

    // Exactly the failed deliveries of the range that the current URL takes, oldest first.
    let (status, answer) = redeliver_range(&alice, RANGE).await?;
    assert_eq!(status, 202, "{answer}");
    let expected = [&failed, &moved, &ends_later, &manual_failed, &unanswered];
    let expected_ids: Vec<String> = expected
        .iter()
        .map(|seed| seed.delivery_id.to_string())
        .collect();
    assert_eq!(answer["delivery_ids"], json!(expected_ids), "{answer}");
    assert_eq!(answer["redelivered"], previewed["would_redeliver"]);
    assert_eq!(answer["more"], false);
    assert_eq!(
        answer["skipped_format_changed"],
        previewed["skipped_format_changed"]
    );
    let recovery_id = answer["recovery_id"]
        .as_str()
        .context("recovery_id")?
        .to_owned();

    // They arrive at the current URL, each its stored body under its delivery id, signed;
    // nothing else is sent.
    receiver.wait_for(5, PATIENCE).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.requests().len(), 5, "only the five were sent");
    for seed in expected {
        let request = receiver
            .requests()
            .into_iter()
            .find(|request| {
                request.header("x-feedbackpulse-delivery") == Some(&seed.delivery_id.to_string())
            })
            .with_context(|| format!("{} arrived", seed.delivery_id))?;
        assert_eq!(request.target, "/alice");
        assert_eq!(request.body, seed.body);
        assert_signed(&request);
    }

    // Logged as manual attempts numbered after each delivery's last one.
    let entries = alice
        .logs_until(PATIENCE, |entries| {
            entries
                .iter()
                .filter(|entry| entry["manual"] == true)
                .count()
                == 6
        })
        .await?;
    let mut manual: Vec<(String, i64, i64)> = entries
        .iter()
        .filter(|entry| entry["manual"] == true && entry["response_code"] == 200)
        .map(|entry| {
            (
                entry["delivery_id"].as_str().unwrap_or_default().to_owned(),
                entry["attempt_number"].as_i64().unwrap_or_default(),
                i64::from(entry["final"] == true),
            )
        })
        .collect();
    manual.sort();
    let mut want = vec![
        (failed.delivery_id.to_string(), 3, 1),
        (moved.delivery_id.to_string(), 2, 1),
        (ends_later.delivery_id.to_string(), 3, 1),
        (manual_failed.delivery_id.to_string(), 3, 1),
        (unanswered.delivery_id.to_string(), 2, 1),
    ];
    want.sort();
    assert_eq!(manual, want);

    // The recovery's progress: every one delivered.
    let progress =
        recovery_until(&alice, &recovery_id, |progress| progress["delivered"] == 5).await?;
    assert_eq!(progress["id"], recovery_id.as_str());
    assert_eq!(progress["delivery_ids"], json!(expected_ids));
    assert_eq!(
        (
            &progress["delivered"],
            &progress["failed"],
            &progress["pending"]
        ),
        (&json!(5), &json!(0), &json!(0)),
        "{progress}"
    );
    assert_eq!(progress["skipped_format_changed"], 1);
    assert_eq!(progress["from"], "2024-03-01T00:00:00Z");
    assert_eq!(progress["to"], "2024-03-08T00:00:00Z");
    // Another tenant's recovery is as unknown as one that does not exist.
    for id in [
        recovery_id.clone(),
        Uuid::now_v7().to_string(),
        "not-a-uuid".to_owned(),
    ] {
        let (status, error) = recovery(&bob, &id).await?;
        assert_error(status, &error, 404, "not_found", "not found");
    }

    // Delivered now, so a second call has nothing to do and the preview says so; Bob's own
    // failure is still his to redeliver.
    let (status, previewed) = preview(&alice, RANGE_QUERY).await?;
    assert_eq!(status, 200, "{previewed}");
    assert_eq!(
        (&previewed["failed"], &previewed["would_redeliver"]),
        (&json!(1), &json!(0)),
        "{previewed}"
    );
    let (status, answer) = redeliver_range(&alice, RANGE).await?;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["redelivered"], 0, "{answer}");
    let (status, answer) = redeliver_range(&bob, RANGE).await?;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        answer["delivery_ids"],
        json!([bobs.delivery_id.to_string()])
    );
    let bob_request = receiver.wait_for(6, PATIENCE).await?.pop().context("bob")?;
    assert_eq!(bob_request.target, "/bob");

    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_redelivers_at_most_a_thousand_per_call_oldest_first() -> anyhow::Result<()> {
    let receiver = TlsReceiver::start("127.0.0.1:0".parse()?, always_ok()).await?;
    let mut env = TestEnvironment::new("bulkmore").await?;
    env.trust_receiver(&receiver)?;
    let pipeline = Pipeline::start(&mut env, 1).await?;
    let tenant = pipeline.tenant(&env, "Many").await?;
    let url = configured_url(&tenant, &receiver.url("/many")).await?;
    let tenant_id = tenant_uuid(&tenant)?;
    let seeds: Vec<Seed> = (0..1001)
        .map(|n| Seed::new(&url, &format!("n{n}")))
        .collect();
    let rows: Vec<AttemptRow> = seeds
        .iter()
        .enumerate()
        .map(|(n, seed)| {
            let at = day(1) + chrono::Duration::seconds(i64::try_from(n).unwrap_or_default());
            seed.attempt(tenant_id, 1, at, Some(500), true)
        })
        .collect();
    let mut conn = fp_store::connect(&env.database_url).await?;
    fp_store::attempts::insert_batch(&mut conn, &rows).await?;

    let (status, previewed) = preview(&tenant, RANGE_QUERY).await?;
    assert_eq!(status, 200, "{previewed}");
    assert_eq!(
        (
            &previewed["failed"],
            &previewed["would_redeliver"],
            &previewed["more"]
        ),
        (&json!(1001), &json!(1000), &json!(true)),
        "{previewed}"
    );
    let (status, answer) = redeliver_range(&tenant, RANGE).await?;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["redelivered"], 1000);
    assert_eq!(answer["more"], true);
    let ids: Vec<&str> = answer["delivery_ids"]
        .as_array()
        .context("delivery_ids")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let oldest: Vec<String> = seeds[..1000]
        .iter()
        .map(|seed| seed.delivery_id.to_string())
        .collect();
    assert_eq!(ids, oldest);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 1000);

    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recoverys_progress_is_read_from_the_manual_attempts_made_since_it_was_asked()
-> anyhow::Result<()> {
    use chrono::SubsecRound;
    use fp_store::recoveries::{self, RecoveryProgress, RecoveryRow};

    let env = TestEnvironment::new("recoveryprogress").await?;
    let created = |text: String| -> anyhow::Result<Uuid> {
        let tenant: Value = serde_json::from_str(&text)?;
        Ok(tenant["tenant_id"].as_str().context("tenant_id")?.parse()?)
    };
    let alice = created(env.fpctl(&["tenant", "create", "Alice"]).await?)?;
    let bob = created(env.fpctl(&["tenant", "create", "Bob"]).await?)?;
    let requested_at = (Utc::now() - chrono::Duration::minutes(10)).trunc_subsecs(6);
    let before = requested_at - chrono::Duration::minutes(1);
    let after = requested_at + chrono::Duration::seconds(5);
    let manual = |seed: &Seed, tenant_id, number, at, status: Option<i32>| AttemptRow {
        manual: true,
        ..seed.attempt(tenant_id, number, at, status, true)
    };

    let url = "https://example.com/hook";
    let delivered = Seed::new(url, "delivered, after a failed try by hand");
    let failed = Seed::new(url, "failed again");
    let untouched = Seed::new(url, "no manual attempt yet");
    let earlier = Seed::new(url, "delivered by hand before the recovery");
    let in_flight = Seed::new(url, "its attempt's outcome not logged yet");
    let elsewhere = Seed::new(url, "a 2xx of the same id, another tenant's");
    let rows = vec![
        delivered.attempt(alice, 1, before, Some(500), true),
        manual(&delivered, alice, 2, after, Some(503)),
        manual(
            &delivered,
            alice,
            3,
            after + chrono::Duration::seconds(1),
            Some(200),
        ),
        failed.attempt(alice, 1, before, Some(500), true),
        manual(&failed, alice, 2, after, None),
        untouched.attempt(alice, 1, before, Some(500), true),
        manual(&earlier, alice, 2, before, Some(200)),
        AttemptRow {
            error_kind: Some(fp_contracts::INTERRUPTED_ERROR_KIND.to_owned()),
            ..manual(&in_flight, alice, 2, after, None)
        },
        manual(&elsewhere, bob, 2, after, Some(200)),
    ];
    let mut conn = fp_store::connect(&env.database_url).await?;
    fp_store::attempts::insert_batch(&mut conn, &rows).await?;
    let recovery = RecoveryRow {
        id: Uuid::now_v7(),
        tenant_id: alice,
        range_from: day(0),
        range_to: day(7),
        requested_at,
        delivery_ids: [
            &delivered, &failed, &untouched, &earlier, &in_flight, &elsewhere,
        ]
        .iter()
        .map(|seed| seed.delivery_id)
        .collect(),
        skipped_format_changed: 2,
        more: true,
    };
    recoveries::insert(&mut conn, &recovery).await?;

    assert_eq!(
        recoveries::find(&mut conn, alice, recovery.id).await?,
        Some(recovery.clone())
    );
    assert_eq!(recoveries::find(&mut conn, bob, recovery.id).await?, None);
    assert_eq!(
        recoveries::progress(&mut conn, &recovery, fp_contracts::INTERRUPTED_ERROR_KIND).await?,
        RecoveryProgress {
            delivered: 1,
            failed: 1,
            pending: 4,
        }
    );
    // A recovery that queued nothing is done at once.
    let empty = RecoveryRow {
        id: Uuid::now_v7(),
        delivery_ids: Vec::new(),
        ..recovery
    };
    recoveries::insert(&mut conn, &empty).await?;
    assert_eq!(
        recoveries::progress(&mut conn, &empty, fp_contracts::INTERRUPTED_ERROR_KIND).await?,
        RecoveryProgress::default()
    );
    env.finish().await
}
