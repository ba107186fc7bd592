//! Erasure of a submission's personal data (`POST /api/v2/submissions/{id}/erase`, GDPR Art. 17)
//! on the real services: after erasing a delivered submission and one whose retry is pending, a
//! dump of the whole database holds neither's text or customer name anywhere (the submission, the
//! outbox, the delivery log, the audit record), the pending retry is cancelled (the receiver gets
//! nothing more, the log ends with a `cancelled` attempt), another submission of the tenant is
//! untouched, a second erasure (nothing delivered since) changes nothing, and another tenant gets
//! 404.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use diesel::prelude::*;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use fp_broker::Broker;
use fp_contracts::{timestamp_from, v1};
use fp_store::erasure::ErasureRecord;
use fp_store::schema::erasures;
use fp_testkit::environment::{TestEnvironment, broker_url};
use fp_testkit::pipeline::{
    Pipeline, TenantApi, listeners_reach, lock_waiters_reach, publish_attempt_record,
};
use fp_testkit::receiver::{CannedResponse, TlsReceiver};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(60);

/// Words and names found nowhere else, so finding one anywhere means it was kept. Plain letters,
/// so every body format (escaping for Slack and Discord) carries them as they are.
const DELIVERED_TEXT: &str = "Lavender teapot arrived chipped";
const DELIVERED_NAME: &str = "Ottilie Brandstaetter";
const RETRYING_TEXT: &str = "Marmalade spoon kept rattling";
const RETRYING_NAME: &str = "Wendelin Quarzhuber";
const KEPT_TEXT: &str = "Walnut bread was lovely";
const KEPT_NAME: &str = "Philippa Keepsake";

async fn erase(tenant: &TenantApi, submission_id: &str) -> anyhow::Result<(u16, Value)> {
    tenant
        .send(
            Method::POST,
            &format!("/api/v2/submissions/{submission_id}/erase"),
            None,
        )
        .await
}

async fn erased(tenant: &TenantApi, submission_id: i64) -> anyhow::Result<Value> {
    let (status, answer) = erase(tenant, &submission_id.to_string()).await?;
    anyhow::ensure!(status == 200, "erase answered {status}: {answer}");
    Ok(answer)
}

/// What an erasure answer says it changed, without its ids and time.
fn changes(answer: &Value) -> Value {
    json!({
        "erased_fields": answer["erased_fields"],
        "outbox_rows": answer["outbox_rows"],
        "delivery_attempts": answer["delivery_attempts"],
        "erased_events": answer["erased_events"],
        "cancelled_deliveries": answer["cancelled_deliveries"],
    })
}

/// The whole test database as `pg_dump` writes it: every table's rows, bytea columns in hex.
async fn database_dump(env: &TestEnvironment) -> anyhow::Result<String> {
    let output = tokio::process::Command::new("pg_dump")
        .arg("--no-owner")
        .arg("--dbname")
        .arg(&env.database_url)
        .output()
        .await
        .context("pg_dump (installed with PostgreSQL's client tools)")?;
    anyhow::ensure!(
        output.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// Where `needle` appears in the dump: as text, or as the hex of its bytes inside a bytea column
/// (the outbox's encoded events, the attempts' bodies).
fn found_in_dump(dump: &str, needle: &str) -> bool {
    dump.contains(needle) || dump.contains(&hex::encode(needle.as_bytes()))
}

/// Publishes the record of an attempt of `entry`'s delivery made with the submission's data, as a
/// dispatcher whose request was in flight during the erasure does; returns its attempt id.
async fn late_attempt(
    env: &TestEnvironment,
    tenant: &TenantApi,
    entry: &Value,
    url: &str,
) -> anyhow::Result<String> {
    let text = |field: &str| {
        entry[field]
            .as_str()
            .map(str::to_owned)
            .context("field of the entry")
    };
    let body = json!({
        "event": "submission.created",
        "timestamp": entry["timestamp"],
        "data": {"id": 1, "campaign_id": 1, "star_rating": 4, "text_feedback": DELIVERED_TEXT,
                 "customer_name": DELIVERED_NAME, "status": "pending"},
    });
    let record = v1::DeliveryAttempt {
        attempt_id: Uuid::now_v7().to_string(),
        delivery_id: text("delivery_id")?,
        event_id: text("event_id")?,
        tenant_id: tenant.tenant_id.clone(),
        event_type: "submission.created".into(),
        url: url.to_owned(),
        attempt_number: 9,
        attempted_at: Some(timestamp_from(chrono::Utc::now())),
        request_body: body.to_string().into_bytes(),
        response_status: Some(200),
        // A receiver that echoes what it got.
        response_body: DELIVERED_NAME.as_bytes().to_vec(),
        r#final: true,
        ..v1::DeliveryAttempt::default()
    };
    let broker = Broker::connect(&broker_url(), &env.namespace).await?;
    publish_attempt_record(&broker, &record).await?;
    broker.close().await;
    Ok(record.attempt_id)
}

/// The log entry of attempt `id`, once log-ingest has stored it.
async fn logged_attempt(tenant: &TenantApi, id: &str) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, entry) = tenant
            .send(Method::GET, &format!("/api/v2/webhooks/logs/{id}"), None)
            .await?;
        if status == 200 {
            return Ok(entry);
        }
        anyhow::ensure!(
            status == 404 && tokio::time::Instant::now() < deadline,
            "attempt {id}: {status} {entry}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn has_kind(entry: &Value, kind: &str) -> bool {
    entry["error"]["kind"] == kind
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_leaves_no_trace_and_cancels_the_pending_retry() -> anyhow::Result<()> {
    // The retrying submission's endpoint fails; everything else is taken.
    let receiver = TlsReceiver::start(
        "127.0.0.1:0".parse()?,
        Arc::new(|request, _| {
            if String::from_utf8_lossy(&request.body).contains(RETRYING_TEXT) {
                CannedResponse::new(500, "down")
            } else {
                CannedResponse::new(200, "ok")
            }
        }),
    )
    .await?;
    let mut env = TestEnvironment::new("erasure").await?;
    env.trust_receiver(&receiver)?;
    // The retry waits long enough for the erasure to come first.
    env.set("FP__DISPATCHER__RETRY_SCHEDULE", "8s,8s");
    // The dispatcher hears the erasure at once (a notification at commit). Its cached configs
    // live an hour here, so nothing else could make it see the erasure within the test.
    env.set("FP__DISPATCHER__CONFIG_CACHE_TTL_MS", "3600000");
    env.set("FP__DISPATCHER__CONFIG_CACHE_MAX_AGE_MS", "3600000");
    let pipeline = Pipeline::start(&mut env, 1).await?;
    listeners_reach(&env, &fp_store::config_changes::CHANNEL, 1).await?;
    let outcome = run(&env, &pipeline, &receiver).await;
    env.finish_after(outcome).await
}

async fn run(
    env: &TestEnvironment,
    pipeline: &Pipeline,
    receiver: &TlsReceiver,
) -> anyhow::Result<()> {
    let alice = pipeline.tenant(env, "Alice").await?;
    let bob = pipeline.tenant(env, "Bob").await?;
    alice.configure(&receiver.url("/hook"), None).await?;

    let delivered = alice.submit(DELIVERED_TEXT, Some(DELIVERED_NAME)).await?;
    let (status, approved) = alice
        .send(
            Method::PATCH,
            &format!("/api/v2/submissions/{delivered}"),
            Some(r#"{"status":"approved"}"#),
        )
        .await?;
    anyhow::ensure!(status == 200, "status change answered {status}: {approved}");
    let retrying = alice.submit(RETRYING_TEXT, Some(RETRYING_NAME)).await?;
    let kept = alice.submit(KEPT_TEXT, Some(KEPT_NAME)).await?;

    // Three deliveries succeeded; the retrying one failed once and waits for its retry.
    let entries = alice
        .logs_until(PATIENCE, |entries| {
            entries
                .iter()
                .filter(|entry| entry["response_code"] == 200)
                .count()
                == 3
                && entries.iter().any(|entry| entry["response_code"] == 500)
        })
        .await?;
    assert_eq!(entries.len(), 4, "{entries:#?}");
    let failed = entries
        .iter()
        .find(|entry| entry["response_code"] == 500)
        .context("the failed attempt")?;
    assert_eq!(failed["final"], false, "{failed}");
    let retrying_delivery = failed["delivery_id"].clone();
    let delivered_entry = entries
        .iter()
        .find(|entry| {
            entry["payload"]
                .as_str()
                .is_some_and(|payload| payload.contains(DELIVERED_TEXT))
        })
        .context("the delivered submission's attempt")?
        .clone();

    // Another tenant learns nothing: its own 404 for Alice's submission, as for none at all.
    for id in [
        delivered.to_string(),
        "999999999".to_owned(),
        "not-a-number".to_owned(),
    ] {
        let (status, answer) = erase(&bob, &id).await?;
        assert_eq!(status, 404, "{answer}");
        assert_eq!(answer["error"]["code"], "not_found", "{answer}");
    }

    // A log-ingest batch under way when the erasure begins: its tenant locked as log-ingest's
    // batches lock it, and a copy of the delivered attempt written, not yet committed. The
    // erasure waits for it before it reads the attempts, and rewrites that row too.
    let mut batch = fp_store::connect(&env.database_url).await?;
    batch.batch_execute("BEGIN").await?;
    diesel::sql_query("SELECT id FROM tenants WHERE id = $1::uuid FOR KEY SHARE")
        .bind::<diesel::sql_types::Text, _>(&alice.tenant_id)
        .execute(&mut batch)
        .await?;
    let copied = diesel::sql_query(
        "INSERT INTO delivery_attempts SELECT * FROM jsonb_populate_record(NULL::delivery_attempts, \
           (SELECT to_jsonb(a) || jsonb_build_object('id', gen_random_uuid(), 'attempt_number', 8) \
            FROM delivery_attempts a WHERE id = $1::uuid))",
    )
    .bind::<diesel::sql_types::Text, _>(delivered_entry["id"].as_str().context("attempt id")?)
    .execute(&mut batch)
    .await?;
    assert_eq!(copied, 1);
    let erasing = {
        let alice = alice.clone();
        tokio::spawn(async move { erased(&alice, delivered).await })
    };
    let mut observer = fp_store::connect(&env.database_url).await?;
    lock_waiters_reach(&mut observer, 1).await?;
    batch.batch_execute("COMMIT").await?;
    let first = tokio::time::timeout(PATIENCE, erasing).await???;
    assert_eq!(first["submission_id"], delivered);
    assert_eq!(
        changes(&first),
        json!({
            "erased_fields": ["text_feedback", "customer_name"],
            "outbox_rows": 2,
            "delivery_attempts": 3,
            "erased_events": 2,
            "cancelled_deliveries": 0,
        })
    );
    let second = erased(&alice, retrying).await?;
    assert_eq!(
        changes(&second),
        json!({
            "erased_fields": ["text_feedback", "customer_name"],
            "outbox_rows": 1,
            "delivery_attempts": 1,
            "erased_events": 1,
            "cancelled_deliveries": 1,
        })
    );

    // The retry comes due and is cancelled: recorded, final, nothing sent.
    let entries = alice
        .logs_until(PATIENCE, |entries| {
            entries.iter().any(|entry| has_kind(entry, "cancelled"))
        })
        .await?;
    let cancelled = entries
        .iter()
        .find(|entry| has_kind(entry, "cancelled"))
        .context("no cancelled attempt in the log")?;
    assert_eq!(cancelled["delivery_id"], retrying_delivery, "{cancelled}");
    assert_eq!(cancelled["attempt_number"], 2, "{cancelled}");
    assert_eq!(cancelled["final"], true, "{cancelled}");
    assert_eq!(cancelled["payload"], "", "{cancelled}");
    assert_eq!(cancelled["response_code"], Value::Null, "{cancelled}");
    let sent_retrying = receiver
        .requests()
        .iter()
        .filter(|request| request.body.windows(8).any(|part| part == b"[erased]"))
        .count();
    assert_eq!(sent_retrying, 0, "an erased body was sent");
    assert_eq!(receiver.requests().len(), 4, "the cancelled retry was sent");

    // An attempt that was in flight during the erasure reaches the log afterwards: stored with
    // the data erased too.
    let late_id = late_attempt(env, &alice, &delivered_entry, &receiver.url("/hook")).await?;
    let late = logged_attempt(&alice, &late_id).await?;
    assert_eq!(
        late["payload"]
            .as_str()
            .map(|payload| payload.contains("[erased]")),
        Some(true),
        "{late}"
    );
    assert_eq!(late["response_body"], "", "{late}");

    // Again: nothing left to change, and it says so.
    for id in [delivered, retrying] {
        let again = erased(&alice, id).await?;
        assert_eq!(
            changes(&again),
            json!({
                "erased_fields": [],
                "outbox_rows": 0,
                "delivery_attempts": 0,
                "erased_events": 0,
                "cancelled_deliveries": 0,
            })
        );
    }

    // The submissions as the api shows them: erased ones keep their ids, rating and status.
    let (_, shown) = alice
        .send(
            Method::GET,
            &format!("/api/v2/submissions/{delivered}"),
            None,
        )
        .await?;
    assert_eq!(shown["text_feedback"], "[erased]", "{shown}");
    assert_eq!(shown["customer_name"], "[erased]", "{shown}");
    assert_eq!(shown["status"], "approved", "{shown}");
    assert_eq!(shown["star_rating"], 4, "{shown}");
    let (_, untouched) = alice
        .send(Method::GET, &format!("/api/v2/submissions/{kept}"), None)
        .await?;
    assert_eq!(untouched["text_feedback"], KEPT_TEXT, "{untouched}");
    assert_eq!(untouched["customer_name"], KEPT_NAME, "{untouched}");

    // The audit: one record per request, naming the key that asked and what changed.
    let mut conn = fp_store::connect(&env.database_url).await?;
    let records: Vec<ErasureRecord> = erasures::table
        .order(erasures::erased_at.asc())
        .select(ErasureRecord::as_select())
        .load(&mut conn)
        .await?;
    let submissions: Vec<i64> = records.iter().map(|record| record.submission_id).collect();
    assert_eq!(submissions, [delivered, retrying, delivered, retrying]);
    for record in &records {
        assert_eq!(record.tenant_id.to_string(), alice.tenant_id);
        assert!(record.requested_by_api_key.is_some() && record.requested_by_user.is_none());
    }
    assert_eq!(records[1].cancelled_deliveries, 1);

    // Nowhere in the database: the whole dump, every table, bytea columns in hex. The kept
    // submission's words are found, in text and in hex, so the search can find what is there.
    let dump = database_dump(env).await?;
    assert!(dump.contains(KEPT_TEXT) && dump.contains(KEPT_NAME));
    assert!(
        dump.contains(&hex::encode(KEPT_TEXT)),
        "no bytea in hex in the dump"
    );
    for erased_data in [DELIVERED_TEXT, DELIVERED_NAME, RETRYING_TEXT, RETRYING_NAME] {
        assert!(
            !found_in_dump(&dump, erased_data),
            "{erased_data:?} is still in the database"
        );
    }
    assert!(dump.contains("[erased]"));
    Ok(())
}
