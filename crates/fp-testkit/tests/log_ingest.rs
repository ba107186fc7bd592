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
    let tenant_id = Uuid::now_v7();
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
                    traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
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
