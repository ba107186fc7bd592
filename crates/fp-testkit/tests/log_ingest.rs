//! log-ingest against the real broker and database: idempotent batches and dead-lettering.

use std::time::Duration;

use anyhow::Context;
use fp_broker::{Broker, OutgoingMessage};
use fp_contracts::{ProtoMessage, timestamp_from, v1};
use fp_testkit::environment::{TestEnvironment, broker_url};
use fp_testkit::pipeline::{publish_attempt_record, start_log_ingest};
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

/// Publishes one message to the attempts exchange, as a dispatcher does.
async fn publish_to_attempts(
    publisher: &fp_broker::Publisher,
    broker: &Broker,
    payload: &[u8],
    message_id: &str,
) -> Result<(), fp_broker::BrokerError> {
    publisher
        .publish(&OutgoingMessage {
            exchange: &broker.names.attempts_exchange,
            routing_key: "submission.created",
            message_id,
            parent: None,
            payload,
            headers: &[],
            expiration: None,
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_delivered_twice_makes_one_row_and_garbage_is_dead_lettered() -> anyhow::Result<()>
{
    let mut env = TestEnvironment::new("ingest").await?;
    start_log_ingest(&mut env, &[]).await?;

    let broker = Broker::connect(&broker_url(), &env.namespace).await?;
    let publisher = broker.publisher();
    let tenant_id = existing_tenant(&env).await?;
    let record = attempt_record(tenant_id);
    let payload = record.encode_to_vec();
    let publish = |payload: Vec<u8>, message_id: String| {
        let (publisher, broker) = (&publisher, &broker);
        async move { publish_to_attempts(publisher, broker, &payload, &message_id).await }
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

/// An unreadable record whose dead-lettering fails (here its exchange is gone) is returned to its
/// queue, and dead-lettered by log-ingest, with its reason, once the broker takes the copy: left
/// unacked, it was settled by the multiple-ack of the readable records after it, and lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_record_is_returned_until_it_can_be_dead_lettered() -> anyhow::Result<()> {
    let mut env = TestEnvironment::new("ingest-dead-later").await?;
    let outcome = dead_letter_after_a_refusal(&mut env).await;
    env.finish_after(outcome).await
}

async fn dead_letter_after_a_refusal(env: &mut TestEnvironment) -> anyhow::Result<()> {
    start_log_ingest(env, &[]).await?;
    let broker = Broker::connect(&broker_url(), &env.namespace).await?;
    let channel = broker.channel().await?;
    channel
        .exchange_delete(
            broker.names.dead_letter_exchange.as_str().into(),
            lapin::options::ExchangeDeleteOptions::default(),
        )
        .await?;
    channel.close(200, "done".into()).await?;

    // The unreadable record, then a readable one, whose batch's ack covers both.
    let publisher = broker.publisher();
    let tenant_id = existing_tenant(env).await?;
    let readable = attempt_record(tenant_id);
    for (payload, message_id) in [
        (b"\xff\x00 not protobuf".to_vec(), "garbage".to_owned()),
        (readable.encode_to_vec(), readable.attempt_id.clone()),
    ] {
        publish_to_attempts(&publisher, &broker, &payload, &message_id).await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while stored_attempts(env, tenant_id).await? < 1 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the readable record was not stored within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The dead-lettering failed at least once before the exchange comes back.
    while !env
        .service_logs()?
        .iter()
        .any(|(_, log)| log.contains("could not dead-letter"))
    {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "log-ingest did not try to dead-letter within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    broker.declare_topology().await?;

    let mut dead_letters = broker.consume(&broker.names.dead_letter_queue, "test-dead-letters", 10);
    let dead = tokio::time::timeout(Duration::from_secs(20), dead_letters.next())
        .await
        .context(
            "the unreadable record was not dead-lettered within 20 s of its exchange's return",
        )?
        .context("dead-letter consumer ended")?;
    anyhow::ensure!(dead.data == b"\xff\x00 not protobuf", "another dead letter");
    anyhow::ensure!(
        fp_broker::header_text(&dead, fp_broker::DEAD_LETTER_REASON_HEADER).is_some(),
        "dead-lettered by the queue's delivery limit, not by log-ingest"
    );
    fp_broker::ack(&dead).await?;
    drop(dead_letters);
    broker.close().await;
    Ok(())
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
    start_log_ingest(&mut env, &[]).await?;
    let broker = Broker::connect(&broker_url(), &env.namespace).await?;
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
    publish_attempt_record(&broker, &pending).await?;
    let rows = rows_when(&env, tenant_id, |rows| !rows.is_empty()).await?;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].error_kind.as_deref(), Some("interrupted"));
    assert_eq!(rows[0].response_status, None);

    // Its outcome, in a later batch, replaces it: still one row.
    publish_attempt_record(&broker, &outcome).await?;
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
    publish_attempt_record(&broker, &pending).await?;
    let second_outcome = attempt_record(tenant_id);
    let second_pending = v1::DeliveryAttempt {
        outcome_pending: true,
        error_kind: fp_contracts::INTERRUPTED_ERROR_KIND.to_owned(),
        ..second_outcome.clone()
    };
    publish_attempt_record(&broker, &second_pending).await?;
    publish_attempt_record(&broker, &second_outcome).await?;
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

/// Publishes `records` concurrently through one batch publisher, as the dispatcher does (each
/// record keeps the trace context it has).
async fn publish_in_batches(
    broker: &Broker,
    records: Vec<v1::DeliveryAttempt>,
) -> anyhow::Result<()> {
    let batches = broker.publisher().batched(
        fp_broker::BatchTarget {
            exchange: broker.names.attempts_exchange.clone(),
            routing_key: "attempts".into(),
            message_type: fp_contracts::ATTEMPT_BATCH_TYPE,
            frame: fp_contracts::encode_attempt_batch,
        },
        fp_broker::BatchLimits {
            max_messages: 256,
            max_bytes: 1024 * 1024,
            in_flight: 2,
        },
    );
    let published = futures_util::future::join_all(records.iter().map(|record| {
        batches.publish(&record.attempt_id, Duration::ZERO, |_| {
            record.encode_to_vec()
        })
    }))
    .await;
    for confirmed in published {
        confirmed?;
    }
    Ok(())
}

fn traceparent(index: usize) -> String {
    format!("00-{:032x}-{:016x}-01", index + 1, index + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_published_together_share_messages_and_each_is_confirmed() -> anyhow::Result<()> {
    let env = TestEnvironment::new("batches").await?;
    let broker = Broker::connect(&broker_url(), &env.namespace).await?;
    let tenant_id = Uuid::now_v7();
    let records: Vec<v1::DeliveryAttempt> = (0..1_000).map(|_| attempt_record(tenant_id)).collect();
    publish_in_batches(&broker, records.clone()).await?;

    // No log-ingest runs: the queue holds exactly what was published, in fewer messages.
    let mut queue = broker.consume(&broker.names.attempts_queue, "test-batches", 1_000);
    let mut received = Vec::new();
    let mut messages = 0;
    while received.len() < records.len() {
        let message = tokio::time::timeout(Duration::from_secs(20), queue.next())
            .await
            .context("the records did not all arrive within 20 s")?
            .context("consumer ended")?;
        assert_eq!(
            message.properties.kind().as_ref().map(|kind| kind.as_str()),
            Some(fp_contracts::ATTEMPT_BATCH_TYPE)
        );
        let batch = v1::DeliveryAttemptBatch::decode(message.data.as_slice())?;
        assert!(!batch.attempts.is_empty() && batch.attempts.len() <= 256);
        received.extend(batch.attempts);
        messages += 1;
        fp_broker::ack(&message).await?;
    }
    let sent: std::collections::HashSet<&str> = records
        .iter()
        .map(|record| record.attempt_id.as_str())
        .collect();
    let got: std::collections::HashSet<&str> = received
        .iter()
        .map(|record| record.attempt_id.as_str())
        .collect();
    assert_eq!(received.len(), records.len(), "no record twice");
    assert_eq!(got, sent);
    assert!(
        messages < records.len() / 4,
        "1,000 records at once went in {messages} messages"
    );
    broker.close().await;
    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_records_are_stored_each_with_its_own_trace() -> anyhow::Result<()> {
    let mut env = TestEnvironment::new("batch-rows").await?;
    start_log_ingest(
        &mut env,
        &[
            // Large batches: one transaction, and one INSERT, holds thousands of rows.
            ("FP__LOG_INGEST__BATCH_SIZE", "5000".to_owned()),
            ("FP__LOG_INGEST__BATCH_LINGER_MS", "1000".to_owned()),
        ],
    )
    .await?;
    let broker = Broker::connect(&broker_url(), &env.namespace).await?;
    let tenant_id = existing_tenant(&env).await?;
    let records: Vec<v1::DeliveryAttempt> = (0..3_200)
        .map(|index| v1::DeliveryAttempt {
            traceparent: traceparent(index),
            tracestate: format!("vendor={index}"),
            // Every column with a value, in one batch of 3,200 rows (the old multi-row insert
            // needed several statements for them: over 65,535 parameters).
            response_status: Some(500),
            error_kind: "http_status".into(),
            error_message: "HTTP 500".into(),
            next_retry_at: Some(timestamp_from(chrono::Utc::now())),
            request_headers: vec![v1::Header {
                name: "Content-Type".into(),
                value: "application/json".into(),
            }],
            ..attempt_record(tenant_id)
        })
        .collect();
    publish_in_batches(&broker, records.clone()).await?;

    let mut conn = fp_store::connect(&env.database_url).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let rows = fp_store::attempts::newest_for_tenant(&mut conn, tenant_id, 4_000).await?;
        if rows.len() >= records.len() || tokio::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(rows.len(), records.len());
    let by_id: std::collections::HashMap<String, &v1::DeliveryAttempt> = records
        .iter()
        .map(|record| (record.attempt_id.clone(), record))
        .collect();
    for row in &rows {
        let record = by_id
            .get(&row.id.to_string())
            .context("a row of a record sent")?;
        assert_eq!(row.traceparent, record.traceparent);
        assert_eq!(row.tracestate, record.tracestate);
    }
    broker.close().await;
    env.finish().await
}

/// log-ingest may hold `prefetch` messages, each up to a dispatcher's whole batch of records, so
/// the prefetch bounds its memory and is small. A batch therefore stops gathering at half the
/// window: with a linger of ten minutes, two single-record messages (half of a prefetch of four)
/// are stored at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_holding_half_the_prefetch_window_is_stored_without_waiting_for_the_linger()
-> anyhow::Result<()> {
    let mut env = TestEnvironment::new("ingest_window").await?;
    start_log_ingest(
        &mut env,
        &[
            ("FP__LOG_INGEST__PREFETCH", "4".to_owned()),
            ("FP__LOG_INGEST__BATCH_LINGER_MS", "600000".to_owned()),
        ],
    )
    .await?;
    let broker = Broker::connect(&broker_url(), &env.namespace).await?;
    let tenant_id = existing_tenant(&env).await?;
    for _ in 0..2 {
        publish_attempt_record(&broker, &attempt_record(tenant_id)).await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while stored_attempts(&env, tenant_id).await? < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        stored_attempts(&env, tenant_id).await?,
        2,
        "two messages, half the window, still waiting for the ten-minute linger"
    );
    broker.close().await;
    env.finish().await
}

/// How many rows of `delivery_attempts` were updated, and how many of those updates were HOT,
/// as this connection's statistics say.
async fn attempt_updates(conn: &mut fp_store::PgConnection) -> anyhow::Result<(i64, i64)> {
    use diesel::sql_types::BigInt;
    use diesel_async::RunQueryDsl;

    #[derive(diesel::QueryableByName)]
    struct Updates {
        #[diesel(sql_type = BigInt)]
        updated: i64,
        #[diesel(sql_type = BigInt)]
        hot: i64,
    }
    // A backend publishes its statistics when it goes idle, at most once a second unless told.
    diesel::sql_query("SELECT pg_stat_force_next_flush()")
        .execute(conn)
        .await?;
    let updates: Updates = diesel::sql_query(
        "SELECT coalesce(sum(n_tup_upd), 0)::bigint AS updated, \
         coalesce(sum(n_tup_hot_upd), 0)::bigint AS hot \
         FROM pg_stat_user_tables WHERE relname LIKE 'delivery_attempts_%'",
    )
    .get_result(conn)
    .await?;
    Ok((updates.updated, updates.hot))
}

/// The store itself: an outcome takes its pending row's place (one row, the outcome's, written
/// over it in place), the same outcome twice in one batch is stored once, and an attempt stored
/// with its outcome keeps it when another copy comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_replaces_its_pending_row_and_a_stored_outcome_stays() -> anyhow::Result<()> {
    use fp_store::attempts::{AttemptRow, StoredRows, store_batch};

    let env = TestEnvironment::new("replace_pending").await?;
    let outcome = async {
        let tenant_id = existing_tenant(&env).await?;
        let mut conn = fp_store::connect(&env.database_url).await?;
        let interrupted = fp_contracts::INTERRUPTED_ERROR_KIND;
        let row = AttemptRow::from_owned_record;
        let delivered = attempt_record(tenant_id);
        let pending = row(v1::DeliveryAttempt {
            response_status: None,
            response_body: Vec::new(),
            r#final: false,
            error_kind: interrupted.to_owned(),
            error_message: fp_contracts::INTERRUPTED_ERROR_MESSAGE.to_owned(),
            ..delivered.clone()
        })?;
        let delivered = row(delivered)?;

        let stored = store_batch(&mut conn, &mut [], &mut [pending], interrupted).await?;
        assert_eq!(stored.pending, 1);
        let stored = store_batch(
            &mut conn,
            &mut [delivered.clone(), delivered.clone()],
            &mut [],
            interrupted,
        )
        .await?;
        assert_eq!(
            stored,
            StoredRows {
                outcomes: 1,
                pending: 0,
                dropped: 0,
                erased: 0,
            }
        );
        let rows = fp_store::attempts::newest_for_tenant(&mut conn, tenant_id, 10).await?;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].id, delivered.id);
        assert_eq!(rows[0].response_status, Some(200));
        assert_eq!(rows[0].error_kind, None);
        assert!(rows[0].is_final);
        assert_eq!(
            attempt_updates(&mut conn).await?,
            (1, 1),
            "the outcome took its pending row's place as an update that wrote no index (HOT)"
        );

        // Another outcome of the stored attempt (it cannot have two) changes nothing.
        let other = AttemptRow {
            response_status: Some(500),
            error_kind: Some("http_status".to_owned()),
            ..delivered.clone()
        };
        let stored = store_batch(&mut conn, &mut [other], &mut [], interrupted).await?;
        assert_eq!(stored.outcomes, 0);
        let rows = fp_store::attempts::newest_for_tenant(&mut conn, tenant_id, 10).await?;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].response_status, Some(200));
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}

/// A batch whose tenant an erasure holds (`FOR UPDATE`, from before it reads the attempts until
/// its marks commit) waits for it and then looks for erased events: the record, in flight during
/// the erasure and unseen by it, is stored with its payloads erased.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_behind_an_erasure_stores_its_records_erased() -> anyhow::Result<()> {
    use diesel_async::SimpleAsyncConnection;
    use fp_store::attempts::{AttemptRow, StoredRows, store_batch};

    let env = TestEnvironment::new("batch_behind_erasure").await?;
    let outcome = async {
        let tenant_id = existing_tenant(&env).await?;
        let row = AttemptRow::from_owned_record(v1::DeliveryAttempt {
            request_body: br#"{"event":"submission.created","data":{"id":1,"text_feedback":"Quince jam leaked","customer_name":"Eustachius Pinnwand"}}"#.to_vec(),
            response_body: b"Eustachius Pinnwand".to_vec(),
            ..attempt_record(tenant_id)
        })?;
        let mut erasure = fp_store::connect(&env.database_url).await?;
        erasure.batch_execute("BEGIN").await?;
        fp_store::erasure::lock_tenant(&mut erasure, tenant_id).await?;
        fp_testkit::seed::mark_erased(&mut erasure, tenant_id, &[row.event_id]).await?;

        let database_url = env.database_url.clone();
        let batch = tokio::spawn(async move {
            let mut conn = fp_store::connect(&database_url).await?;
            let stored = store_batch(
                &mut conn,
                &mut [row],
                &mut [],
                fp_contracts::INTERRUPTED_ERROR_KIND,
            )
            .await?;
            anyhow::Ok(stored)
        });
        let mut observer = fp_store::connect(&env.database_url).await?;
        fp_testkit::pipeline::lock_waiters_reach(&mut observer, 1).await?;
        erasure.batch_execute("COMMIT").await?;
        let stored = tokio::time::timeout(Duration::from_secs(30), batch).await???;
        assert_eq!(
            stored,
            StoredRows {
                outcomes: 1,
                pending: 0,
                dropped: 0,
                erased: 1,
            }
        );
        let rows = fp_store::attempts::newest_for_tenant(&mut observer, tenant_id, 10).await?;
        assert_eq!(rows.len(), 1);
        let body = String::from_utf8_lossy(&rows[0].request_body);
        assert!(
            body.contains("[erased]") && !body.contains("Quince") && !body.contains("Pinnwand"),
            "{body}"
        );
        assert_eq!(rows[0].response_body, b"");
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}
