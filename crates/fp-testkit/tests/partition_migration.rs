//! The migration that partitions `delivery_attempts` (issue 15), run as a deployment runs it
//! (`fpctl migrate`) on a database of the previous release with rows in the table: the old table
//! becomes the first partition as it is (validated bound, indexes adopted rather than built again),
//! its rows stay readable through the same table, a copy of an old record is still recognised, new
//! days go to partitions of their own, and retention drops the old table once its bound is past.

use chrono::{DateTime, DurationRound, NaiveTime, TimeDelta, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Bool};
use diesel_async::RunQueryDsl;
use fp_store::PgConnection;
use fp_store::attempts::{self, AttemptQuery};
use fp_store::partitions::{LEGACY_PARTITION, attempt_partitions, drop_attempt_partitions_before};
use fp_testkit::environment::TestEnvironment;
use fp_testkit::seed::{attempt_row, partition_of};
use uuid::Uuid;

const PARTITIONING_MIGRATION: &str = "20261205000001";
const OLD_ROWS: i64 = 20_000;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

async fn count(conn: &mut PgConnection, sql: &str) -> anyhow::Result<i64> {
    Ok(diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .await?
        .count)
}

fn day_start(at: DateTime<Utc>) -> DateTime<Utc> {
    at.date_naive().and_time(NaiveTime::MIN).and_utc()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_with_rows_becomes_the_first_partition() -> anyhow::Result<()> {
    let env = TestEnvironment::unmigrated("partition_migration").await?;
    let outcome = async {
        let applied =
            fp_store::run_migrations_before(&env.database_url, PARTITIONING_MIGRATION).await?;
        assert!(
            applied
                .iter()
                .all(|version| version.as_str() < PARTITIONING_MIGRATION)
                && !applied.is_empty(),
            "{applied:?}"
        );
        let mut conn = fp_store::connect(&env.database_url).await?;
        // The previous release's table: 20,000 attempts of one tenant over the last 10 days.
        let tenant_id = Uuid::now_v7();
        diesel::sql_query(
            "INSERT INTO delivery_attempts (id, delivery_id, event_id, tenant_id, event_type, url, \
               attempt_number, attempted_at, duration_ms, request_headers, request_body, \
               response_status, response_headers, response_body, response_truncated, final) \
             SELECT gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), $1, \
               'submission.created', 'https://example.com/hook', 1, \
               now() - n * interval '43 seconds', 12, '[]', '{}', 200, '[]', '', false, true \
             FROM generate_series(1, $2) AS n",
        )
        .bind::<diesel::sql_types::Uuid, _>(tenant_id)
        .bind::<BigInt, _>(OLD_ROWS)
        .execute(&mut conn)
        .await?;
        // To the microsecond, as PostgreSQL keeps it.
        let five_days_ago = Utc::now() - TimeDelta::days(5);
        let known = attempt_row(
            tenant_id,
            five_days_ago
                .duration_trunc(TimeDelta::microseconds(1))
                .unwrap_or(five_days_ago),
        );
        let before = Utc::now();
        // Inserted as the previous release could (its insert_batch knows nothing of partitions).
        diesel::sql_query(
            "INSERT INTO delivery_attempts (id, delivery_id, event_id, tenant_id, event_type, url, \
               attempt_number, attempted_at, duration_ms, request_headers, request_body, \
               response_status, response_headers, response_body, response_truncated, final) \
             VALUES ($1, $2, $3, $4, 'submission.created', 'https://example.com/hook', 1, $5, 12, \
               '[]', '{}', 200, '[]', '', false, true)",
        )
        .bind::<diesel::sql_types::Uuid, _>(known.id)
        .bind::<diesel::sql_types::Uuid, _>(known.delivery_id)
        .bind::<diesel::sql_types::Uuid, _>(known.event_id)
        .bind::<diesel::sql_types::Uuid, _>(tenant_id)
        .bind::<diesel::sql_types::Timestamptz, _>(known.attempted_at)
        .execute(&mut conn)
        .await?;

        env.fpctl(&["migrate"]).await?;

        // One partitioned table; the old one is its first partition, bounded at the start of the
        // day after tomorrow (UTC) as the migration reckoned it.
        let after = Utc::now();
        let partitions = attempt_partitions(&mut conn).await?;
        // Not `first()`: diesel's RunQueryDsl::first is in scope.
        let legacy = <[_]>::first(&partitions)
            .filter(|partition| partition.name == LEGACY_PARTITION)
            .ok_or_else(|| anyhow::anyhow!("no legacy partition first: {partitions:?}"))?;
        let boundary = legacy
            .to
            .ok_or_else(|| anyhow::anyhow!("the legacy partition is unbounded"))?;
        assert_eq!(legacy.from, None);
        assert!(
            [before, after]
                .iter()
                .any(|now| boundary == day_start(*now) + TimeDelta::days(2)),
            "boundary {boundary}"
        );
        assert_eq!(
            count(
                &mut conn,
                "SELECT count(*) AS count FROM pg_class \
                 WHERE relname = 'delivery_attempts' AND relkind = 'p'"
            )
            .await?,
            1
        );
        // Attached with the bound proven beforehand, and with the old table's indexes: five
        // adopted by the partitioned table's indexes, the old primary key beside them, nothing
        // built a second time.
        #[derive(QueryableByName)]
        struct Validated {
            #[diesel(sql_type = Bool)]
            validated: bool,
        }
        let validated = diesel::sql_query(
            "SELECT convalidated AS validated FROM pg_constraint \
             WHERE conname = 'delivery_attempts_legacy_bound'",
        )
        .get_result::<Validated>(&mut conn)
        .await?;
        assert!(validated.validated);
        assert_eq!(
            count(
                &mut conn,
                "SELECT count(*) AS count FROM pg_index \
                 WHERE indrelid = 'delivery_attempts_legacy'::regclass"
            )
            .await?,
            6
        );
        assert_eq!(
            count(
                &mut conn,
                "SELECT count(*) AS count FROM pg_inherits i \
                 JOIN pg_index x ON x.indexrelid = i.inhrelid \
                 WHERE x.indrelid = 'delivery_attempts_legacy'::regclass"
            )
            .await?,
            5
        );

        // The old rows read through the same table, by id and by page.
        assert_eq!(
            count(&mut conn, "SELECT count(*) AS count FROM delivery_attempts").await?,
            OLD_ROWS + 1
        );
        let found = attempts::find(&mut conn, known.id, Some(tenant_id)).await?;
        assert_eq!(found.map(|row| row.attempted_at), Some(known.attempted_at));
        let (page, more) = attempts::page(
            &mut conn,
            &AttemptQuery {
                tenant_id: Some(tenant_id),
                limit: 50,
                ..AttemptQuery::default()
            },
        )
        .await?;
        assert_eq!(page.len(), 50);
        assert!(more);
        // A copy of an old record (a broker redelivery) still makes no second row.
        assert_eq!(
            attempts::insert_batch(&mut conn, std::slice::from_ref(&known)).await?,
            0
        );

        // Today's attempts still go to the old table; the first day past its bound to a
        // partition of its own, made for it.
        let today = attempt_row(tenant_id, Utc::now());
        let next_day = attempt_row(tenant_id, boundary + TimeDelta::hours(1));
        assert_eq!(
            attempts::insert_batch(&mut conn, &[today.clone(), next_day.clone()]).await?,
            2
        );
        assert_eq!(
            partition_of(&mut conn, today.id).await?.as_deref(),
            Some(LEGACY_PARTITION)
        );
        let next_partition = format!("delivery_attempts_p{}", boundary.format("%Y%m%d"));
        assert_eq!(
            partition_of(&mut conn, next_day.id).await?,
            Some(next_partition.clone())
        );

        // Retention keeps the old table while any of its range is within the maximum, then drops
        // it whole; the newer partition stays.
        assert_eq!(
            drop_attempt_partitions_before(&mut conn, boundary - TimeDelta::seconds(1)).await?,
            Vec::<String>::new()
        );
        assert_eq!(
            drop_attempt_partitions_before(&mut conn, boundary).await?,
            vec![LEGACY_PARTITION.to_owned()]
        );
        assert_eq!(
            count(&mut conn, "SELECT count(*) AS count FROM delivery_attempts").await?,
            1
        );
        assert_eq!(
            partition_of(&mut conn, next_day.id).await?,
            Some(next_partition)
        );
        assert_eq!(
            count(
                &mut conn,
                "SELECT count(*) AS count FROM pg_class WHERE relname = 'delivery_attempts_legacy'"
            )
            .await?,
            0,
            "dropped, not detached"
        );
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}
