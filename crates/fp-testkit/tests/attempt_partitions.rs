//! The partitions of `delivery_attempts` (issue 15): made ahead of time, whole UTC days, across a
//! day boundary driven by the test's clock, by one runner at a time (the maintenance step's
//! advisory lock); retention drops exactly the partitions wholly older than the maximum, their rows
//! with them, and keeps every other row.

use std::num::NonZeroU32;

use chrono::{DateTime, TimeZone, Utc};
use diesel_async::RunQueryDsl;
use fp_store::PgConnection;
use fp_store::advisory_lock::MaintenanceLock;
use fp_store::attempts::{self, AttemptRow};
use fp_store::maintenance;
use fp_store::partitions::{
    ATTEMPT_PARTITION_FILLFACTOR, AttemptPartition, PartitionPolicy, attempt_partitions,
};
use fp_testkit::environment::TestEnvironment;
use fp_testkit::seed::{attempt_row, partition_of};
use uuid::Uuid;

fn at(month: u32, day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, month, day, hour, minute, 0)
        .single()
        .unwrap_or_default()
}

fn days(count: u32) -> NonZeroU32 {
    NonZeroU32::new(count).unwrap_or(NonZeroU32::MIN)
}

fn names(days: &[&str]) -> Vec<String> {
    days.iter()
        .map(|day| format!("delivery_attempts_p{day}"))
        .collect()
}

async fn partition(conn: &mut PgConnection, name: &str) -> anyhow::Result<AttemptPartition> {
    attempt_partitions(conn)
        .await?
        .into_iter()
        .find(|partition| partition.name == name)
        .ok_or_else(|| anyhow::anyhow!("no partition {name}"))
}

/// The storage parameters of a table (`fillfactor=70`, ...).
async fn storage_options(conn: &mut PgConnection, table: &str) -> anyhow::Result<Vec<String>> {
    #[derive(diesel::QueryableByName)]
    struct Options {
        #[diesel(sql_type = diesel::sql_types::Array<diesel::sql_types::Text>)]
        options: Vec<String>,
    }
    let row: Options = diesel::sql_query(
        "SELECT coalesce(reloptions, '{}') AS options FROM pg_class WHERE relname = $1",
    )
    .bind::<diesel::sql_types::Text, _>(table)
    .get_result(conn)
    .await?;
    Ok(row.options)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_made_ahead_across_midnight() -> anyhow::Result<()> {
    let env = TestEnvironment::new("partitions_ahead").await?;
    let outcome = async {
        let mut conn = fp_store::connect(&env.database_url).await?;
        let daily = PartitionPolicy {
            partition_days: days(1),
            days_ahead: 2,
            max_days: days(30),
        };
        let before_midnight = at(3, 10, 23, 59);
        assert_eq!(
            daily.create_ahead(&mut conn, before_midnight).await?,
            names(&["20300310", "20300311", "20300312"])
        );
        assert_eq!(
            daily.create_ahead(&mut conn, before_midnight).await?,
            Vec::<String>::new(),
            "a second run makes nothing"
        );
        // Two minutes later the clock has passed midnight: one more day comes into the window.
        assert_eq!(
            daily.create_ahead(&mut conn, at(3, 11, 0, 1)).await?,
            names(&["20300313"])
        );
        let made = partition(&mut conn, "delivery_attempts_p20300313").await?;
        assert_eq!(
            (made.from, made.to),
            (Some(at(3, 13, 0, 0)), Some(at(3, 14, 0, 0)))
        );
        // Its pages keep room for the outcomes that replace pending rows in place.
        assert_eq!(
            storage_options(&mut conn, "delivery_attempts_p20300313").await?,
            vec![format!("fillfactor={ATTEMPT_PARTITION_FILLFACTOR}")]
        );
        // The last minute of the new day goes to its partition, made before any insert needed it.
        let row = attempt_row(Uuid::now_v7(), at(3, 13, 23, 59));
        assert_eq!(
            attempts::insert_batch(&mut conn, std::slice::from_ref(&row)).await?,
            1
        );
        assert_eq!(
            partition_of(&mut conn, row.id).await?.as_deref(),
            Some("delivery_attempts_p20300313")
        );

        // Longer partitions start at the first day without one and stop short of the next one.
        daily.create_ahead(&mut conn, at(3, 16, 12, 0)).await?;
        let three_days = PartitionPolicy {
            partition_days: days(3),
            days_ahead: 7,
            ..daily
        };
        assert_eq!(
            three_days.create_ahead(&mut conn, at(3, 12, 8, 0)).await?,
            names(&["20300314", "20300319"])
        );
        let shortened = partition(&mut conn, "delivery_attempts_p20300314").await?;
        assert_eq!(
            (shortened.from, shortened.to),
            (Some(at(3, 14, 0, 0)), Some(at(3, 16, 0, 0)))
        );
        let whole = partition(&mut conn, "delivery_attempts_p20300319").await?;
        assert_eq!(
            (whole.from, whole.to),
            (Some(at(3, 19, 0, 0)), Some(at(3, 22, 0, 0)))
        );
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_runner_at_a_time_makes_the_partitions() -> anyhow::Result<()> {
    let env = TestEnvironment::new("partitions_lock").await?;
    let outcome = async {
        let mut conn = fp_store::connect(&env.database_url).await?;
        let mut other_replica = fp_store::connect(&env.database_url).await?;
        let policy = PartitionPolicy {
            partition_days: days(1),
            days_ahead: 1,
            max_days: days(30),
        };
        let now = at(6, 1, 12, 0);
        diesel::sql_query("SELECT pg_advisory_lock($1)")
            .bind::<diesel::sql_types::BigInt, _>(MaintenanceLock::AttemptPartitions.key())
            .execute(&mut other_replica)
            .await?;
        let report = maintenance::create_partitions(&mut conn, now, policy).await;
        assert!(
            matches!(report.outcome, Ok(None)),
            "skipped while another runner holds the lock: {report:?}"
        );
        assert!(
            attempt_partitions(&mut conn)
                .await?
                .iter()
                .all(|partition| !partition.name.starts_with("delivery_attempts_p2030")),
            "nothing made while skipped"
        );
        diesel::sql_query("SELECT pg_advisory_unlock($1)")
            .bind::<diesel::sql_types::BigInt, _>(MaintenanceLock::AttemptPartitions.key())
            .execute(&mut other_replica)
            .await?;
        let report = maintenance::create_partitions(&mut conn, now, policy).await;
        assert!(matches!(report.outcome, Ok(Some(2))), "{report:?}");
        // The lock was let go after the step: the other replica takes it at once.
        let report = maintenance::drop_partitions(&mut other_replica, now, policy).await;
        assert!(matches!(report.outcome, Ok(Some(0))), "{report:?}");
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_exactly_the_partitions_past_the_maximum() -> anyhow::Result<()> {
    let env = TestEnvironment::new("partitions_retention").await?;
    let outcome = async {
        let mut conn = fp_store::connect(&env.database_url).await?;
        let tenant_id = Uuid::now_v7();
        // Two attempts a day from May 14 to May 20; their partitions are made as they are inserted.
        let rows: Vec<(u32, AttemptRow)> = (14..=20)
            .flat_map(|day| [6, 18].map(|hour| (day, attempt_row(tenant_id, at(5, day, hour, 0)))))
            .collect();
        let only_rows: Vec<AttemptRow> = rows.iter().map(|(_, row)| row.clone()).collect();
        assert_eq!(attempts::insert_batch(&mut conn, &only_rows).await?, 14);

        // Three days before May 20 noon is May 17 noon: the partitions of May 14 to 16 end by then;
        // May 17's does not, so it stays whole, its 06:00 attempt included.
        let policy = PartitionPolicy {
            partition_days: days(1),
            days_ahead: 0,
            max_days: days(3),
        };
        let now = at(5, 20, 12, 0);
        assert_eq!(policy.cutoff(now), at(5, 17, 12, 0));
        assert_eq!(
            policy.drop_expired(&mut conn, now).await?,
            names(&["20300514", "20300515", "20300516"])
        );
        for (day, row) in &rows {
            let stored = attempts::find(&mut conn, row.id, Some(tenant_id)).await?;
            assert_eq!(
                stored.is_some(),
                *day >= 17,
                "the attempt of May {day} at {}",
                row.attempted_at
            );
        }
        let remaining: Vec<String> = attempt_partitions(&mut conn)
            .await?
            .into_iter()
            .map(|partition| partition.name)
            .collect();
        assert_eq!(
            remaining,
            names(&["20300517", "20300518", "20300519", "20300520"])
        );
        assert_eq!(
            policy.drop_expired(&mut conn, now).await?,
            Vec::<String>::new(),
            "a second run drops nothing"
        );
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}
