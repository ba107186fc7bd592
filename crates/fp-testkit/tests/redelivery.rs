//! Manual redelivery on the real parts: `POST /api/v2/webhooks/logs/{id}/redeliver` and the bulk
//! `POST /api/v2/webhooks/logs/redeliver`, through the broker's retry queue and a dispatcher to an
//! HTTPS receiver, logged as manual attempts; tenant isolation, conflicts, validation and a broker
//! that refuses the job.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};
use fp_broker::Broker;
use fp_store::attempts::AttemptRow;
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
async fn a_failed_delivery_is_redelivered_byte_for_byte_once_the_receiver_is_fixed()
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
    let mut env = TestEnvironment::new("redeliver").await?;
    env.trust_receiver(&receiver)?;
    // One short retry, so the delivery fails for good within a second.
    env.set("FP__DISPATCHER__RETRY_SCHEDULE", "200ms");
    let pipeline = Pipeline::start(&mut env, 1).await?;
    let alice = pipeline.tenant(&env, "Alice").await?;
    let bob = pipeline.tenant(&env, "Bob").await?;
    let url = receiver.url("/hook");
    alice.configure(&url, Some(SECRET)).await?;
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

    // A redelivery goes only to the endpoint the delivery went to, and only while it is enabled.
    alice
        .configure(&receiver.url("/moved"), Some(SECRET))
        .await?;
    let (status, error) = redeliver(&alice, &attempt_id).await?;
    assert_error(
        status,
        &error,
        409,
        "conflict",
        "changed since this delivery",
    );
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
            request_headers: json!([]),
            request_body: self.body.clone(),
            response_status: status,
            response_headers: json!([]),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_redelivers_exactly_the_failed_deliveries_of_the_range() -> anyhow::Result<()> {
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
    let moved = Seed::new("https://old.example/hook", "old endpoint");
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

    // Exactly the failed deliveries of the range that went to the current URL, oldest first.
    let (status, answer) = redeliver_range(&alice, RANGE).await?;
    assert_eq!(status, 202, "{answer}");
    let expected = [&failed, &ends_later, &manual_failed, &unanswered];
    let expected_ids: Vec<String> = expected
        .iter()
        .map(|seed| seed.delivery_id.to_string())
        .collect();
    assert_eq!(answer["delivery_ids"], json!(expected_ids), "{answer}");
    assert_eq!(answer["redelivered"], 4);
    assert_eq!(answer["more"], false);
    assert_eq!(answer["skipped_endpoint_changed"], 1);

    // They arrive, each its stored body under its delivery id, signed; nothing else is sent.
    receiver.wait_for(4, PATIENCE).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.requests().len(), 4, "only the four were sent");
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
                == 5
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
        (ends_later.delivery_id.to_string(), 3, 1),
        (manual_failed.delivery_id.to_string(), 3, 1),
        (unanswered.delivery_id.to_string(), 2, 1),
    ];
    want.sort();
    assert_eq!(manual, want);

    // Delivered now, so a second call has nothing to do; Bob's own failure is still his to redeliver.
    let (status, answer) = redeliver_range(&alice, RANGE).await?;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["redelivered"], 0, "{answer}");
    let (status, answer) = redeliver_range(&bob, RANGE).await?;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        answer["delivery_ids"],
        json!([bobs.delivery_id.to_string()])
    );
    let bob_request = receiver.wait_for(5, PATIENCE).await?.pop().context("bob")?;
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
