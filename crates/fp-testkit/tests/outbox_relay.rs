//! The outbox relay with several loops side by side: a backlog far larger than a batch goes out
//! completely, every event exactly once, and every row is marked.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use fp_testkit::environment::TestEnvironment;
use fp_testkit::pipeline::{EventsQueue, start_api};
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
            let message = tokio::time::timeout(PATIENCE, messages.next())
                .await?
                .context("the consumer ended")??;
            let message_id = message
                .properties
                .message_id()
                .as_ref()
                .context("a message without a message id")?
                .to_string();
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
