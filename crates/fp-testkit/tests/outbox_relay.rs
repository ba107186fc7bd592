//! The outbox relay: what the api commits goes out through the in-memory hand-off, and the poll
//! takes only what nothing handed over, once its grace has passed; with several poll loops side by
//! side, a backlog far larger than a batch goes out completely, every event exactly once, and every
//! row is marked.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use diesel::sql_types::{BigInt, Bool, Text};
use diesel_async::RunQueryDsl;
use fp_testkit::environment::TestEnvironment;
use fp_testkit::pipeline::{
    EventsQueue, TenantApi, metric_reaches, start_api, start_api_with_health,
};
use futures_util::StreamExt;

const EVENTS: i64 = 2_000;
const PATIENCE: Duration = Duration::from_secs(60);

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

#[derive(diesel::QueryableByName)]
struct EventId {
    #[diesel(sql_type = Text)]
    event_id: String,
}

/// The message id (the event id) of the next message the test's queue holds.
async fn next_message_id(messages: &mut lapin::Consumer) -> anyhow::Result<String> {
    let message = tokio::time::timeout(PATIENCE, messages.next())
        .await?
        .context("the consumer ended")??;
    Ok(message
        .properties
        .message_id()
        .as_ref()
        .context("a message without a message id")?
        .to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relay_loops_publish_a_large_backlog_exactly_once() -> anyhow::Result<()> {
    let mut env = TestEnvironment::new("outbox_relay").await?;
    env.set("FP__API__OUTBOX_RELAY_PIPELINES", "2");
    start_api(&mut env).await?;
    let outcome = async {
        // No dispatcher runs: a queue of the test's own, bound to the events exchange beside the
        // dispatchers', holds everything the relay published.
        let events_queue = EventsQueue::bind(&env).await?;

        // Four full batches at once, committed without waking the relay: its poll finds them, and
        // each loop finding a full batch hands the next one to the other.
        let mut conn = fp_store::connect(&env.database_url).await?;
        diesel::sql_query(
            "INSERT INTO outbox (event_id, tenant_id, event_type, payload, traceparent, tracestate) \
             SELECT gen_random_uuid(), gen_random_uuid(), 'submission.created', '\\x00'::bytea, \
                    '', '' \
             FROM generate_series(1, $1)",
        )
        .bind::<BigInt, _>(EVENTS)
        .execute(&mut conn)
        .await?;
        let unpublished = async |conn: &mut fp_store::PgConnection| -> anyhow::Result<i64> {
            Ok(diesel::sql_query(
                "SELECT count(*) AS count FROM outbox WHERE published_at IS NULL",
            )
            .get_result::<Count>(conn)
            .await?
            .count)
        };
        tokio::time::timeout(PATIENCE, async {
            while unpublished(&mut conn).await? > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::Ok(())
        })
        .await
        .context("the relay did not mark every row")??;
        // Stopped, the api has no batch in flight: whatever it published is in the queue now.
        let (status, log) = env.terminate("fp-api", PATIENCE).await?;
        anyhow::ensure!(status.success(), "fp-api exited with {status}:\n{log}");

        let waiting = events_queue.waiting().await?;
        assert_eq!(i64::from(waiting), EVENTS, "messages published");
        let mut messages = events_queue.consume("outbox-relay-test").await?;
        let mut published = HashSet::new();
        for _ in 0..EVENTS {
            let message_id = next_message_id(&mut messages).await?;
            anyhow::ensure!(
                published.insert(message_id.clone()),
                "{message_id} was published twice"
            );
        }
        let events: HashSet<String> =
            diesel::sql_query("SELECT event_id::text AS event_id FROM outbox")
                .load::<EventId>(&mut conn)
                .await?
                .into_iter()
                .map(|row| row.event_id)
                .collect();
        assert_eq!(published, events, "the published events are the outbox's");
        assert_eq!(unpublished(&mut conn).await?, 0);
        events_queue.close().await.ok();
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}

#[derive(diesel::QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    event_id: String,
    /// Whether the row was published at least the grace after it was committed.
    #[diesel(sql_type = Bool)]
    published_after_grace: bool,
}

const GRACE_MS: u64 = 3_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_event_is_handed_over_and_the_poll_takes_only_what_was_not()
-> anyhow::Result<()> {
    let mut env = TestEnvironment::new("outbox_handoff").await?;
    // A poll every 100 ms: were young rows claimable, the poll would take them long before the
    // grace ends.
    env.set("FP__API__OUTBOX_POLL_INTERVAL_MS", "100");
    env.set("FP__API__OUTBOX_HANDOFF_GRACE_MS", GRACE_MS.to_string());
    let (api, health) = start_api_with_health(&mut env).await?;
    let outcome = async {
        let events_queue = EventsQueue::bind(&env).await?;
        let tenant = TenantApi::create(&env, api, "Handoff").await?;
        let mut conn = fp_store::connect(&env.database_url).await?;
        // A row no api handed over, as a crashed api leaves one: the poll's alone.
        diesel::sql_query(
            "INSERT INTO outbox (event_id, tenant_id, event_type, payload, traceparent, tracestate) \
             VALUES (gen_random_uuid(), gen_random_uuid(), 'submission.created', '\\x00'::bytea, \
                     '', '')",
        )
        .execute(&mut conn)
        .await?;
        tenant.submit("handed over", None).await?;

        let rows = async |conn: &mut fp_store::PgConnection| -> anyhow::Result<Vec<Row>> {
            Ok(diesel::sql_query(format!(
                "SELECT event_id::text AS event_id, \
                        published_at >= created_at + interval '{GRACE_MS} milliseconds' \
                          AS published_after_grace \
                 FROM outbox WHERE published_at IS NOT NULL ORDER BY id"
            ))
            .load::<Row>(conn)
            .await?)
        };
        let published = tokio::time::timeout(PATIENCE, async {
            loop {
                let published = rows(&mut conn).await?;
                if published.len() == 2 {
                    return anyhow::Ok(published);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .context("the relay did not publish both rows")??;
        let [orphan, submitted] = published.as_slice() else {
            anyhow::bail!("two rows expected");
        };
        assert!(
            orphan.published_after_grace,
            "the poll took a row younger than its grace"
        );
        // Each way published exactly the row it owns. The counters move once the api has its
        // mark's answer, which may come after this test saw the rows marked.
        for path in ["handoff", "poll"] {
            let name = format!("fp_api_outbox_published_total{{path=\"{path}\"}}");
            metric_reaches(health, &name, 1, PATIENCE).await?;
        }

        let mut messages = events_queue.consume("outbox-handoff-test").await?;
        let mut message_ids = HashSet::new();
        for _ in 0..2 {
            message_ids.insert(next_message_id(&mut messages).await?);
        }
        let expected: HashSet<String> = [orphan, submitted]
            .iter()
            .map(|row| row.event_id.clone())
            .collect();
        assert_eq!(message_ids, expected, "the published events are the outbox's");
        events_queue.close().await.ok();
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}
