//! Outbox pruning: published rows go once their grace period is over, batch after batch through
//! their own index, and an unpublished row never goes, however old. The api's maintenance loop
//! prunes on its own and counts it on `/metrics`; `fpctl maintenance run` says what it did; and a
//! run finds the step's advisory lock held by another runner and leaves the work to it. A
//! delivery is still found by its submission id once its event's outbox row is gone, and
//! `submission_events` rows go only once their events' attempts can no longer exist.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use diesel::sql_types::{BigInt, Bool, Nullable, Timestamptz};
use diesel_async::RunQueryDsl;
use fp_store::PgConnection;
use fp_store::advisory_lock::MaintenanceLock;
use fp_store::attempts::AttemptRow;
use fp_store::deliveries::{DeliveryQuery, DeliverySearch};
use fp_store::maintenance;
use fp_store::outbox::{OutboxEvent, PruneBatches};
use fp_testkit::environment::TestEnvironment;
use fp_testkit::pipeline::{TenantApi, metric, start_api_with_health};
use fp_testkit::seed::attempt_row;
use uuid::Uuid;

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

/// Adds `count` outbox rows committed at `created_at` and published at `published_at` (`None`:
/// not yet).
async fn seed_outbox(
    conn: &mut PgConnection,
    count: i64,
    created_at: DateTime<Utc>,
    published_at: Option<DateTime<Utc>>,
) -> anyhow::Result<()> {
    diesel::sql_query(
        "INSERT INTO outbox (event_id, tenant_id, event_type, payload, traceparent, tracestate, \
                             created_at, published_at) \
         SELECT gen_random_uuid(), gen_random_uuid(), 'submission.created', '\\x00'::bytea, '', '', \
                $2, $3 \
         FROM generate_series(1, $1)",
    )
    .bind::<BigInt, _>(count)
    .bind::<Timestamptz, _>(created_at)
    .bind::<Nullable<Timestamptz>, _>(published_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Outbox rows by whether they are published and whether they were published (or, unpublished,
/// committed) before `before`.
async fn outbox_rows(
    conn: &mut PgConnection,
    published: bool,
    before: DateTime<Utc>,
) -> anyhow::Result<(i64, i64)> {
    let count = async |conn: &mut PgConnection, older: bool| -> anyhow::Result<i64> {
        Ok(diesel::sql_query(
            "SELECT count(*) AS count FROM outbox \
             WHERE (published_at IS NOT NULL) = $1 \
               AND (coalesce(published_at, created_at) < $2) = $3",
        )
        .bind::<Bool, _>(published)
        .bind::<Timestamptz, _>(before)
        .bind::<Bool, _>(older)
        .get_result::<Count>(conn)
        .await?
        .count)
    };
    Ok((count(conn, true).await?, count(conn, false).await?))
}

const GRACE: TimeDelta = TimeDelta::hours(24);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_removes_published_rows_past_the_grace_and_never_an_unpublished_one()
-> anyhow::Result<()> {
    let env = TestEnvironment::new("outbox_prune").await?;
    let outcome = async {
        let mut conn = fp_store::connect(&env.database_url).await?;
        let now = Utc::now();
        let cutoff = now - GRACE;
        let three_days_ago = now - TimeDelta::days(3);
        seed_outbox(&mut conn, 2_500, three_days_ago, Some(three_days_ago)).await?;
        // Committed long ago and never published (the broker was away for days): the relay
        // still has to send them.
        seed_outbox(&mut conn, 30, three_days_ago, None).await?;
        let an_hour_ago = now - TimeDelta::hours(1);
        seed_outbox(&mut conn, 20_000, an_hour_ago, Some(an_hour_ago)).await?;
        seed_outbox(&mut conn, 5, now, None).await?;
        diesel::sql_query("ANALYZE outbox")
            .execute(&mut conn)
            .await?;

        // A batch walks the published rows' own index and deletes what it found by primary
        // key: it never reads the table or the rows it keeps.
        let plan = fp_store::outbox::explain_prune(&mut conn, cutoff, 1_000).await?;
        let text = plan.join("\n");
        anyhow::ensure!(
            text.contains("Index Scan using outbox_published")
                && text.contains("outbox_pkey")
                && !text.contains("Seq Scan"),
            "a pruning batch is not a walk of outbox_published:\n{text}"
        );

        // Batches far smaller than the rows to prune: the run goes on until none is left.
        let batches = PruneBatches {
            size: 400,
            pause: Duration::ZERO,
        };
        let report = maintenance::prune_outbox(&mut conn, now, GRACE, batches).await;
        assert_eq!(
            report.outcome.as_ref().ok(),
            Some(&Some(2_500)),
            "{report:?}"
        );
        assert_eq!(outbox_rows(&mut conn, true, cutoff).await?, (0, 20_000));
        assert_eq!(outbox_rows(&mut conn, false, cutoff).await?, (30, 5));

        // Even with no grace at all, only published rows go.
        let report = maintenance::prune_outbox(&mut conn, now, TimeDelta::zero(), batches).await;
        assert_eq!(
            report.outcome.as_ref().ok(),
            Some(&Some(20_000)),
            "{report:?}"
        );
        assert_eq!(outbox_rows(&mut conn, true, now).await?, (0, 0));
        assert_eq!(outbox_rows(&mut conn, false, cutoff).await?, (30, 5));
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}

/// Adds `count` `submission_events` rows of events created at `created_at`.
async fn seed_submission_events(
    conn: &mut PgConnection,
    count: i64,
    created_at: DateTime<Utc>,
) -> anyhow::Result<()> {
    diesel::sql_query(
        "INSERT INTO submission_events (event_id, tenant_id, submission_id, created_at) \
         SELECT gen_random_uuid(), gen_random_uuid(), n, $2 FROM generate_series(1, $1) AS n",
    )
    .bind::<BigInt, _>(count)
    .bind::<Timestamptz, _>(created_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// `submission_events` rows of events created before `before`, and from `before` on.
async fn submission_event_rows(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
) -> anyhow::Result<(i64, i64)> {
    let count = async |conn: &mut PgConnection, older: bool| -> anyhow::Result<i64> {
        Ok(diesel::sql_query(
            "SELECT count(*) AS count FROM submission_events WHERE (created_at < $1) = $2",
        )
        .bind::<Timestamptz, _>(before)
        .bind::<Bool, _>(older)
        .get_result::<Count>(conn)
        .await?
        .count)
    };
    Ok((count(conn, true).await?, count(conn, false).await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submission_events_go_once_their_events_attempts_cannot_exist_any_more()
-> anyhow::Result<()> {
    let env = TestEnvironment::new("subm_events_prune").await?;
    let outcome = async {
        let mut conn = fp_store::connect(&env.database_url).await?;
        let now = Utc::now();
        // The default settings: 30 days of attempts after a retry horizon of 9 days, and a day.
        let retention = TimeDelta::days(40);
        let cutoff = now - retention;
        seed_submission_events(&mut conn, 2_500, now - TimeDelta::days(41)).await?;
        // Their last retries may have been made lately: their attempts may still be there.
        seed_submission_events(&mut conn, 300, now - TimeDelta::days(39)).await?;
        seed_submission_events(&mut conn, 20_000, now - TimeDelta::hours(1)).await?;
        // An old event redelivered by hand lately: its new attempt lives another max_days, and
        // an erasure must still find it by its submission.
        let redelivered_event = Uuid::now_v7();
        diesel::sql_query(
            "INSERT INTO submission_events (event_id, tenant_id, submission_id, created_at) \
             VALUES ($1, gen_random_uuid(), 7, $2)",
        )
        .bind::<diesel::sql_types::Uuid, _>(redelivered_event)
        .bind::<Timestamptz, _>(now - TimeDelta::days(45))
        .execute(&mut conn)
        .await?;
        let redelivery = AttemptRow {
            event_id: redelivered_event,
            manual: true,
            ..attempt_row(Uuid::now_v7(), now - TimeDelta::days(2))
        };
        fp_store::attempts::insert_batch(&mut conn, std::slice::from_ref(&redelivery)).await?;
        diesel::sql_query("ANALYZE submission_events")
            .execute(&mut conn)
            .await?;

        // A batch walks the events' age index, looks each event's attempts up by their event
        // index and deletes what it found by primary key: it never reads a whole table.
        let plan =
            fp_store::erasure::explain_submission_events_prune(&mut conn, cutoff, 1_000).await?;
        let text = plan.join("\n");
        anyhow::ensure!(
            text.contains("Index Scan using submission_events_created")
                && text.contains("submission_events_pkey")
                && text.contains("Index Cond: (event_id = e.event_id)")
                && !text.contains("Seq Scan"),
            "a pruning batch is not a walk of submission_events_created:\n{text}"
        );

        // Batches far smaller than the rows to prune: the run goes on until none is left.
        let batches = PruneBatches {
            size: 400,
            pause: Duration::ZERO,
        };
        let report = maintenance::prune_submission_events(&mut conn, now, retention, batches).await;
        assert_eq!(
            report.outcome.as_ref().ok(),
            Some(&Some(2_500)),
            "{report:?}"
        );
        assert_eq!(submission_event_rows(&mut conn, cutoff).await?, (1, 20_300));

        // fpctl computes the same retention from the settings.
        seed_submission_events(&mut conn, 120, now - TimeDelta::days(41)).await?;
        let output = env.fpctl(&["maintenance", "run"]).await?;
        assert!(
            output.contains("submission_events_prune: done, 120 rows removed"),
            "fpctl did not say what it pruned:\n{output}"
        );
        assert_eq!(submission_event_rows(&mut conn, cutoff).await?, (1, 20_300));
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_is_still_found_by_its_submission_once_the_outbox_row_is_gone()
-> anyhow::Result<()> {
    let env = TestEnvironment::new("outbox_search").await?;
    let outcome = async {
        let mut conn = fp_store::connect(&env.database_url).await?;
        let tenant_id = Uuid::now_v7();
        let event_id = Uuid::now_v7();
        let submission_id = 42;
        fp_store::outbox::insert(
            &mut conn,
            &OutboxEvent {
                event_id,
                tenant_id,
                event_type: "submission.created".to_owned(),
                payload: vec![0],
                traceparent: String::new(),
                tracestate: String::new(),
                submission_id: Some(submission_id),
            },
        )
        .await?;
        diesel::sql_query("UPDATE outbox SET published_at = now() - interval '2 days'")
            .execute(&mut conn)
            .await?;
        let attempt = AttemptRow {
            event_id,
            ..attempt_row(tenant_id, Utc::now() - TimeDelta::days(2))
        };
        fp_store::attempts::insert_batch(&mut conn, std::slice::from_ref(&attempt)).await?;

        let report =
            maintenance::prune_outbox(&mut conn, Utc::now(), GRACE, PruneBatches::STANDARD).await;
        assert_eq!(report.outcome.as_ref().ok(), Some(&Some(1)), "{report:?}");
        let query = DeliveryQuery {
            search: Some(DeliverySearch::Submission(submission_id)),
            ..DeliveryQuery::of_tenant(tenant_id, 10)
        };
        let (found, _) =
            fp_store::deliveries::page(&mut conn, &query, fp_contracts::INTERRUPTED_ERROR_KIND)
                .await?;
        let found: Vec<Uuid> = found.iter().map(|delivery| delivery.delivery_id).collect();
        assert_eq!(found, vec![attempt.delivery_id]);
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_leaves_the_work_to_the_runner_holding_the_lock() -> anyhow::Result<()> {
    let env = TestEnvironment::new("outbox_lock").await?;
    let outcome = async {
        let mut runner = fp_store::connect(&env.database_url).await?;
        let mut other = fp_store::connect(&env.database_url).await?;
        let now = Utc::now();
        let old = now - TimeDelta::days(2);
        seed_outbox(&mut runner, 300, old, Some(old)).await?;
        let batches = PruneBatches {
            size: 100,
            pause: Duration::ZERO,
        };

        // Another replica is pruning: it holds the step's lock in its own session.
        diesel::sql_query("SELECT pg_advisory_lock($1)")
            .bind::<BigInt, _>(MaintenanceLock::OutboxPruning.key())
            .execute(&mut other)
            .await?;
        let report = maintenance::prune_outbox(&mut runner, now, GRACE, batches).await;
        assert_eq!(report.outcome.as_ref().ok(), Some(&None), "{report:?}");
        let output = env.fpctl(&["maintenance", "run"]).await?;
        assert!(
            output.contains("outbox_prune: skipped"),
            "fpctl did not say it skipped the step:\n{output}"
        );
        assert_eq!(outbox_rows(&mut runner, true, now).await?.0, 300);

        // Once it is done, the next run does the work.
        diesel::sql_query("SELECT pg_advisory_unlock($1)")
            .bind::<BigInt, _>(MaintenanceLock::OutboxPruning.key())
            .execute(&mut other)
            .await?;
        let report = maintenance::prune_outbox(&mut runner, now, GRACE, batches).await;
        assert_eq!(report.outcome.as_ref().ok(), Some(&Some(300)), "{report:?}");
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fpctl_maintenance_run_says_what_each_step_did() -> anyhow::Result<()> {
    let env = TestEnvironment::new("maint_cli").await?;
    let outcome = async {
        let mut conn = fp_store::connect(&env.database_url).await?;
        let now = Utc::now();
        let old = now - TimeDelta::days(2);
        seed_outbox(&mut conn, 120, old, Some(old)).await?;
        seed_outbox(&mut conn, 7, old, None).await?;

        let output = env.fpctl(&["maintenance", "run"]).await?;
        assert!(
            output.contains("outbox_prune: done, 120 rows removed"),
            "fpctl did not say what it pruned:\n{output}"
        );
        assert_eq!(outbox_rows(&mut conn, true, now).await?.0, 0);
        assert_eq!(outbox_rows(&mut conn, false, now).await?.0, 7);

        // A step that fails is reported, and so is the run: a non-zero exit.
        diesel::sql_query("ALTER TABLE outbox RENAME TO outbox_away")
            .execute(&mut conn)
            .await?;
        let failed = env.fpctl_output(&["maintenance", "run"]).await?;
        diesel::sql_query("ALTER TABLE outbox_away RENAME TO outbox")
            .execute(&mut conn)
            .await?;
        let printed = String::from_utf8_lossy(&failed.stdout);
        assert!(
            !failed.status.success(),
            "a failed step exited 0:\n{printed}"
        );
        assert!(
            printed.contains("outbox_prune: failed"),
            "fpctl did not say the step failed:\n{printed}"
        );
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_prunes_its_outbox_on_its_own_and_counts_it() -> anyhow::Result<()> {
    let mut env = TestEnvironment::new("api_maint").await?;
    env.set("FP__RETENTION__OUTBOX_GRACE_HOURS", "1");
    env.set("FP__RETENTION__MAINTENANCE_INTERVAL", "1s");
    let outcome = async {
        let mut conn = fp_store::connect(&env.database_url).await?;
        let two_hours_ago = Utc::now() - TimeDelta::hours(2);
        seed_outbox(&mut conn, 250, two_hours_ago, Some(two_hours_ago)).await?;

        // Its first run, at start, prunes what was left from before.
        let (api, health) = start_api_with_health(&mut env).await?;
        let tenant = TenantApi::create(&env, api, "Pruned").await?;
        tenant.submit("kept: published a moment ago", None).await?;
        wait_for_pruned_rows(&mut conn, &health, 250).await?;

        // Later runs prune what has aged since.
        seed_outbox(&mut conn, 40, two_hours_ago, Some(two_hours_ago)).await?;
        wait_for_pruned_rows(&mut conn, &health, 290).await?;
        // The submission's event, published a moment ago (or about to be), stays.
        let left: Count = diesel::sql_query("SELECT count(*) AS count FROM outbox")
            .get_result(&mut conn)
            .await?;
        assert_eq!(left.count, 1);
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}

/// Waits until no row published over an hour ago is left and the api's `/metrics` counts
/// `removed` rows pruned in all (no timing is asserted: the deadline only ends a hung test).
async fn wait_for_pruned_rows(
    conn: &mut PgConnection,
    health: &std::net::SocketAddr,
    removed: u64,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (old, _) = outbox_rows(conn, true, Utc::now() - TimeDelta::hours(1)).await?;
        let counted = metric(*health, "fp_maintenance_rows_removed_total").await?;
        if old == 0 && counted == removed {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the api left {old} old published rows and counts {counted} pruned, not {removed}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
