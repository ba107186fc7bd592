//! log-ingest against the real broker and database: idempotent batches and dead-lettering.

use std::time::Duration;

use anyhow::Context;
use fp_broker::{Broker, OutgoingMessage};
use fp_contracts::{ProtoMessage, timestamp_from, v1};
use fp_testkit::environment::{Readiness, TestEnvironment, broker_url, free_local_address};
use futures_util::StreamExt;
use uuid::Uuid;

fn attempt_record(tenant_id: Uuid) -> v1::DeliveryAttempt {
    v1::DeliveryAttempt {
        attempt_id: Uuid::now_v7().to_string(),
        delivery_id: Uuid::now_v7().to_string(),
        event_id: Uuid::now_v7().to_string(),
        tenant_id: tenant_id.to_string(),
        event_type: "submission.created".into(),
        url: "https://example.com/hook".into(),
        attempt_number: 1,
        attempted_at: Some(timestamp_from(chrono::Utc::now())),
        request_body: br#"{"event":"submission.created"}"#.to_vec(),
        response_status: Some(200),
        response_body: b"ok".to_vec(),
        r#final: true,
        ..v1::DeliveryAttempt::default()
    }
}

/// A new tenant's id: log-ingest stores only records of tenants that exist.
async fn existing_tenant(env: &TestEnvironment) -> anyhow::Result<Uuid> {
    let tenant_id = Uuid::now_v7();
    let mut conn = fp_store::connect(&env.database_url).await?;
    fp_store::identity::create_tenant(&mut conn, tenant_id, "ingest").await?;
    Ok(tenant_id)
}

async fn stored_attempts(env: &TestEnvironment, tenant_id: Uuid) -> anyhow::Result<usize> {
    let mut conn = fp_store::connect(&env.database_url).await?;
    Ok(
        fp_store::attempts::newest_for_tenant(&mut conn, tenant_id, 100)
            .await?
            .len(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_delivered_twice_makes_one_row_and_garbage_is_dead_lettered() -> anyhow::Result<()>
{
    let mut env = TestEnvironment::new("ingest").await?;
    let health = free_local_address()?;
    env.start(
        "fp-log-ingest",
        &[("FP__LOG_INGEST__HEALTH_LISTEN", health.to_string())],
        Readiness::Ok(format!("http://{health}/readyz")),
    )
    .await?;

    let broker = Broker::connect(&broker_url(), &env.namespace).await?;
    let publisher = broker.publisher();
    let tenant_id = existing_tenant(&env).await?;
    let record = attempt_record(tenant_id);
    let payload = record.encode_to_vec();
    let publish = |payload: Vec<u8>, message_id: String| {
        let publisher = publisher.clone();
        let exchange = broker.names.attempts_exchange.clone();
        async move {
            publisher
                .publish(&OutgoingMessage {
                    exchange: &exchange,
                    routing_key: "submission.created",
                    message_id: &message_id,
                    parent: None,
                    payload: &payload,
                    headers: &[],
                    expiration: None,
                })
                .await
        }
    };
    // The same record twice (a redelivery after a crash), then one nobody can read.
    publish(payload.clone(), record.attempt_id.clone()).await?;
    publish(payload, record.attempt_id.clone()).await?;
    publish(b"\xff\x00 not protobuf".to_vec(), "garbage".into()).await?;
    let second = attempt_record(tenant_id);
    publish(second.encode_to_vec(), second.attempt_id.clone()).await?;

    let mut dead_letters = broker.consume(&broker.names.dead_letter_queue, "test-dead-letters", 10);
    let dead = tokio::time::timeout(Duration::from_secs(20), dead_letters.next())
        .await
        .context("no dead letter within 20 s")?
        .context("dead-letter consumer ended")?;
    assert_eq!(dead.data, b"\xff\x00 not protobuf");
    let reason = fp_broker::header_text(&dead, fp_broker::DEAD_LETTER_REASON_HEADER)
        .context("reason header")?;
    assert!(reason.contains("protobuf"), "{reason}");
    assert_eq!(
        fp_broker::header_text(&dead, fp_broker::DEAD_LETTER_SOURCE_HEADER).as_deref(),
        Some(broker.names.attempts_queue.as_str())
    );
    fp_broker::ack(&dead).await?;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while stored_attempts(&env, tenant_id).await? < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give a wrongly stored duplicate time to show up before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stored_attempts(&env, tenant_id).await?, 2);

    broker.close().await;
    env.finish().await
}

/// The rows of `tenant_id`, newest first.
async fn stored_rows(
    env: &TestEnvironment,
    tenant_id: Uuid,
) -> anyhow::Result<Vec<fp_store::attempts::AttemptRow>> {
    let mut conn = fp_store::connect(&env.database_url).await?;
    Ok(fp_store::attempts::newest_for_tenant(&mut conn, tenant_id, 100).await?)
}

/// Polls until `done` holds for the tenant's rows (or 20 s pass), then returns them.
async fn rows_when(
    env: &TestEnvironment,
    tenant_id: Uuid,
    done: impl Fn(&[fp_store::attempts::AttemptRow]) -> bool,
) -> anyhow::Result<Vec<fp_store::attempts::AttemptRow>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rows = stored_rows(env, tenant_id).await?;
        if done(&rows) || tokio::time::Instant::now() > deadline {
            return Ok(rows);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_record_shows_as_interrupted_until_its_outcome_replaces_it() -> anyhow::Result<()>
{
    let mut env = TestEnvironment::new("pending").await?;
    let health = free_local_address()?;
    env.start(
        "fp-log-ingest",
        &[("FP__LOG_INGEST__HEALTH_LISTEN", health.to_string())],
        Readiness::Ok(format!("http://{health}/readyz")),
    )
    .await?;
    let broker = Broker::connect(&broker_url(), &env.namespace).await?;
    let publisher = broker.publisher();
    let publish = |record: &v1::DeliveryAttempt| {
        let publisher = publisher.clone();
        let exchange = broker.names.attempts_exchange.clone();
        let payload = record.encode_to_vec();
        let message_id = record.attempt_id.clone();
        async move {
            publisher
                .publish(&OutgoingMessage {
                    exchange: &exchange,
                    routing_key: "submission.created",
                    message_id: &message_id,
                    parent: None,
                    payload: &payload,
                    headers: &[],
                    expiration: None,
                })
                .await
        }
    };
    let tenant_id = existing_tenant(&env).await?;
    let outcome = attempt_record(tenant_id);
    let pending = v1::DeliveryAttempt {
        outcome_pending: true,
        response_status: None,
        response_body: Vec::new(),
        r#final: false,
        error_kind: fp_contracts::INTERRUPTED_ERROR_KIND.to_owned(),
        error_message: fp_contracts::INTERRUPTED_ERROR_MESSAGE.to_owned(),
        ..outcome.clone()
    };

    // The pending record alone: the attempt shows, as interrupted.
    publish(&pending).await?;
    let rows = rows_when(&env, tenant_id, |rows| !rows.is_empty()).await?;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].error_kind.as_deref(), Some("interrupted"));
    assert_eq!(rows[0].response_status, None);

    // Its outcome, in a later batch, replaces it: still one row.
    publish(&outcome).await?;
    let rows = rows_when(&env, tenant_id, |rows| {
        rows.first()
            .is_some_and(|row| row.response_status == Some(200))
    })
    .await?;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].error_kind, None);
    assert!(rows[0].is_final);

    // A pending record that arrives late (redelivered after its outcome) changes nothing; a
    // pending record right before its outcome (usually in the same batch) leaves only the outcome.
    publish(&pending).await?;
    let second_outcome = attempt_record(tenant_id);
    let second_pending = v1::DeliveryAttempt {
        outcome_pending: true,
        error_kind: fp_contracts::INTERRUPTED_ERROR_KIND.to_owned(),
        ..second_outcome.clone()
    };
    publish(&second_pending).await?;
    publish(&second_outcome).await?;
    let rows = rows_when(&env, tenant_id, |rows| rows.len() >= 2).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows_after = stored_rows(&env, tenant_id).await?;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows_after.len(), 2);
    assert!(
        rows_after
            .iter()
            .all(|row| row.response_status == Some(200) && row.error_kind.is_none()),
        "every attempt has its outcome"
    );

    broker.close().await;
    env.finish().await
}
