//! The api's database path: the pool hands out connections without a test query per checkout yet
//! never a dead one, and the queries of every request, of the group commit and of the outbox relay
//! are prepared once per connection and reused.

use std::time::Duration;

use anyhow::Context;
use diesel::sql_types::{Integer, Text};
use diesel_async::RunQueryDsl;
use fp_store::inbound_events::{ClaimedAttempt, FirstAttemptClaim};
use fp_store::outbox::OutboxEvent;
use fp_store::partitions::CoveredDay;
use fp_store::submissions::NewSubmission;
use fp_store::{AsyncConnection, PgConnection, PgPool, StoreError};
use fp_testkit::environment::TestEnvironment;
use uuid::Uuid;

#[derive(diesel::QueryableByName)]
struct BackendPid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

async fn backend_pid(conn: &mut PgConnection) -> Result<i32, fp_store::DieselError> {
    Ok(diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<BackendPid>(conn)
        .await?
        .pid)
}

/// The pid of the connection a checkout of `pool` gives, which goes back to the pool after.
async fn pooled_backend_pid(pool: &PgPool) -> Result<i32, StoreError> {
    let mut conn = pool.get().await?;
    Ok(backend_pid(&mut conn).await?)
}

#[derive(diesel::QueryableByName)]
struct Exists {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    exists: bool,
}

/// Ends the server process of `pid` and waits until the server no longer lists it.
async fn terminate_backend(admin: &mut PgConnection, pid: i32) -> anyhow::Result<()> {
    diesel::sql_query("SELECT pg_terminate_backend($1)")
        .bind::<Integer, _>(pid)
        .execute(admin)
        .await?;
    for _ in 0..200 {
        let listed = diesel::sql_query(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1) AS exists",
        )
        .bind::<Integer, _>(pid)
        .get_result::<Exists>(admin)
        .await?
        .exists;
        if !listed {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("backend {pid} still listed 10 s after pg_terminate_backend")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_backend_was_terminated_is_never_handed_out_again() -> anyhow::Result<()>
{
    let env = TestEnvironment::new("pool_recycle").await?;
    let outcome = async {
        let pool = fp_store::pool(&env.database_url, 1)?;
        let mut admin = fp_store::connect(&env.database_url).await?;
        let mut pid = pooled_backend_pid(&pool).await?;
        // Many rounds, each on the connection the previous one replaced, since what the first
        // checkout after a kill gets depends on timing (see below).
        let mut first_checkouts_failed = 0;
        for round in 0..20 {
            terminate_backend(&mut admin, pid).await?;
            // The server has sent its FATAL and dropped the backend, but the client may not have
            // read that yet: tokio-postgres' connection task ends on it once the runtime polls the
            // socket, which can come after this checkout. A connection known to be closed is
            // replaced at recycle time (`is_closed`); one not yet known is handed out once and its
            // query fails as unreachable (a 503, retryable). Observed both ways in repeated runs.
            let first = pooled_backend_pid(&pool).await;
            match &first {
                Ok(first) => {
                    assert_ne!(*first, pid, "round {round}: the dead connection came back")
                }
                Err(error) => {
                    assert!(error.is_unreachable(), "round {round}: {error}");
                    first_checkouts_failed += 1;
                }
            }
            // Either way, that was the last of it: the next checkout works on a new connection.
            let replacement = pooled_backend_pid(&pool)
                .await
                .with_context(|| format!("round {round}: the checkout after the first"))?;
            assert_ne!(
                replacement, pid,
                "round {round}: the dead connection came back"
            );
            if let Ok(first) = first {
                assert_eq!(
                    first, replacement,
                    "round {round}: the replacement is reused"
                );
            }
            pid = replacement;
        }
        eprintln!("first checkouts after a kill that failed: {first_checkouts_failed} of 20");
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}

#[derive(diesel::QueryableByName)]
struct LastQuery {
    #[diesel(sql_type = Text)]
    query: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_sends_no_validation_query() -> anyhow::Result<()> {
    let env = TestEnvironment::new("pool_no_ping").await?;
    let outcome = async {
        let pool = fp_store::pool(&env.database_url, 1)?;
        let mut observer = fp_store::connect(&env.database_url).await?;
        // The pid query is the connection's last statement; a test query at checkout (what
        // `RecyclingMethod::Verified` sends) would replace it in pg_stat_activity.
        let pid = pooled_backend_pid(&pool).await?;
        let held = pool.get().await?;
        let pid_query = last_query(&mut observer, pid).await?;
        drop(held);
        assert!(
            pid_query.contains("pg_backend_pid()"),
            "the pooled connection ran `{pid_query}` at checkout"
        );
        for _ in 0..3 {
            drop(pool.get().await?);
        }
        assert_eq!(last_query(&mut observer, pid).await?, pid_query);
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}

/// What `pid`'s server process ran last, as another connection sees it.
async fn last_query(observer: &mut PgConnection, pid: i32) -> anyhow::Result<String> {
    Ok(
        diesel::sql_query("SELECT query FROM pg_stat_activity WHERE pid = $1")
            .bind::<Integer, _>(pid)
            .get_result::<LastQuery>(observer)
            .await?
            .query,
    )
}

#[derive(diesel::QueryableByName)]
struct PreparedStatement {
    #[diesel(sql_type = Text)]
    statement: String,
}

/// The statements prepared server-side in `conn`'s session. diesel-async keeps the statements of
/// cacheable queries prepared for the connection's life and closes the others after one use.
async fn prepared_statements(conn: &mut PgConnection) -> anyhow::Result<Vec<String>> {
    let rows: Vec<PreparedStatement> = diesel::sql_query(
        "SELECT statement FROM pg_prepared_statements \
             WHERE statement NOT LIKE '%pg_prepared_statements%' ORDER BY prepare_time",
    )
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|row| row.statement).collect())
}

/// Each `(what, how its statement begins)` is among `statements` exactly once.
fn assert_each_prepared_once(statements: &[String], expected: &[(&str, &str)]) {
    for (what, text) in expected {
        let matching = statements
            .iter()
            .filter(|statement| statement.starts_with(text))
            .count();
        assert_eq!(
            matching, 1,
            "{what} ({text}) is prepared {matching} times, not once: {statements:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hot_path_queries_are_prepared_once_per_connection() -> anyhow::Result<()> {
    let env = TestEnvironment::new("prepared").await?;
    let outcome = async {
        let pool = fp_store::pool(&env.database_url, 1)?;
        let mut conn = pool.get().await?;
        let event = |submission_id| OutboxEvent {
            event_id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            event_type: "submission.created".to_owned(),
            payload: vec![0],
            traceparent: String::new(),
            tracestate: String::new(),
            submission_id,
        };
        let tenant_id = Uuid::now_v7();
        // On a connection of its own, so that only the hot path's statements are counted below.
        let mut setup = fp_store::connect(&env.database_url).await?;
        fp_store::identity::create_tenant(&mut setup, tenant_id, "Prepared").await?;
        let submission = NewSubmission {
            tenant_id,
            campaign_id: 1,
            star_rating: 4,
            text_feedback: "fine",
            customer_name: None,
            status: "pending",
        };
        for round in 0..2u8 {
            fp_store::identity::live_key_by_hash(&mut conn, &[round; 32]).await?;
            // The group commit's batches differ in size from one to the next: one statement
            // for every size.
            let batch = vec![submission.clone(); usize::from(round) * 2 + 1];
            let reservation = fp_store::submissions::reserve(&mut conn, batch.len()).await?;
            let rows: Vec<_> = batch
                .iter()
                .zip(&reservation.ids)
                .map(|(submission, &id)| submission.row(id, reservation.at))
                .collect();
            let events: Vec<_> = rows.iter().map(|row| event(Some(row.id))).collect();
            fp_store::submissions::insert_with_events(&mut conn, &rows, &events).await?;
            // With a submission and without (a test event), alone and in a batch: one statement
            // for all.
            fp_store::outbox::insert(&mut conn, &event(Some(7))).await?;
            fp_store::outbox::insert_many(&mut conn, &[event(None), event(Some(8))]).await?;
            conn.transaction(async |conn| {
                // No grace: the rows just written are claimed at once.
                let claimed =
                    fp_store::outbox::claim_unpublished(conn, 500, Duration::ZERO).await?;
                let event_ids: Vec<Uuid> = claimed.iter().map(|event| event.event_id).collect();
                // The batch's events and the three test events.
                anyhow::ensure!(event_ids.len() == events.len() + 3, "claimed {event_ids:?}");
                fp_store::outbox::mark_published(conn, &event_ids).await?;
                Ok(())
            })
            .await?;
        }
        let statements = prepared_statements(&mut conn).await?;
        // By how each statement begins: the submissions' insert holds an outbox insert too.
        let expected = [
            ("the API key lookup", "SELECT \"api_keys\""),
            (
                "the submissions' ids",
                "SELECT nextval('submissions_id_seq')",
            ),
            (
                "the submissions with their events",
                "WITH new_submissions AS (INSERT INTO submissions",
            ),
            ("the outbox insert", "INSERT INTO outbox"),
            ("the relay's claim", "SELECT \"outbox\""),
            ("the relay's mark", "UPDATE outbox SET published_at"),
        ];
        assert_each_prepared_once(&statements, &expected);
        // Nothing else: every query above is prepared once, not once per run.
        assert_eq!(statements.len(), expected.len(), "{statements:#?}");
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}

fn claim_only(delivery_id: Uuid) -> FirstAttemptClaim {
    FirstAttemptClaim {
        delivery_id,
        pending: None,
    }
}

/// The deliveries these claims claimed.
async fn claimed_ids(
    conn: &mut PgConnection,
    claims: &[FirstAttemptClaim],
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Vec<Uuid>> {
    let claimed = fp_store::inbound_events::claim_first_attempts(
        conn,
        claims,
        now,
        &mut CoveredDay::default(),
    )
    .await?;
    Ok(claimed
        .into_iter()
        .map(|claimed| claimed.delivery_id)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_rows_and_claims_are_written_by_one_prepared_statement_each() -> anyhow::Result<()>
{
    use chrono::SubsecRound;
    use diesel::{ExpressionMethods, QueryDsl, SelectableHelper};
    use fp_store::attempts::{AttemptRow, StoredHeaders};
    use fp_store::schema::delivery_attempts;

    let env = TestEnvironment::new("prepared_inserts").await?;
    let outcome = async {
        let pool = fp_store::pool(&env.database_url, 1)?;
        let mut conn = pool.get().await?;
        let tenant_id = Uuid::now_v7();
        // PostgreSQL keeps microseconds.
        let at = chrono::Utc::now().trunc_subsecs(6);
        let delivered = fp_testkit::seed::attempt_row(tenant_id, at);
        let failed = AttemptRow {
            request_headers: StoredHeaders::of([("content-type", "application/json")]),
            response_status: None,
            response_headers: StoredHeaders::of([("retry-after", "5")]),
            response_body: b"\x00\xffbody".to_vec(),
            response_truncated: true,
            error_kind: Some("timeout".to_owned()),
            error_message: Some("no answer within 10 s".to_owned()),
            is_final: false,
            next_retry_at: Some(at + chrono::TimeDelta::seconds(30)),
            manual: true,
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
            tracestate: "fp=1".to_owned(),
            ..fp_testkit::seed::attempt_row(tenant_id, at + chrono::TimeDelta::milliseconds(1))
        };
        // Batches of three sizes, a row twice in one batch and a row stored before: each row once.
        let inserted = [
            fp_store::attempts::insert_batch(&mut conn, std::slice::from_ref(&delivered)).await?,
            fp_store::attempts::insert_batch(
                &mut conn,
                &[failed.clone(), failed.clone(), delivered.clone()],
            )
            .await?,
        ];
        assert_eq!(inserted, [1, 1]);
        let mut stored: Vec<AttemptRow> = delivery_attempts::table
            .filter(delivery_attempts::tenant_id.eq(tenant_id))
            .order(delivery_attempts::attempted_at)
            .select(AttemptRow::as_select())
            .load(&mut conn)
            .await?;
        stored.iter_mut().for_each(|row| row.id = Uuid::nil());
        let expected: Vec<AttemptRow> = [&delivered, &failed]
            .into_iter()
            .map(|row| AttemptRow {
                id: Uuid::nil(),
                ..row.clone()
            })
            .collect();
        assert_eq!(stored, expected, "rows read back differ from those written");

        // Two copies of one delivery in one batch: claimed once; claimed again later: not at all.
        // Claims with a pending row and without one share the statement.
        let first = Uuid::now_v7();
        let second = Uuid::now_v7();
        let claimed = claimed_ids(&mut conn, &[claim_only(first), claim_only(first)], at).await?;
        assert_eq!(claimed, [first]);
        let with_pending = FirstAttemptClaim {
            delivery_id: second,
            pending: Some(fp_testkit::seed::attempt_row(tenant_id, at)),
        };
        let mut claimed = claimed_ids(
            &mut conn,
            &[claim_only(first), with_pending, claim_only(Uuid::now_v7())],
            at,
        )
        .await?;
        claimed.sort_unstable();
        assert!(
            claimed.len() == 2 && claimed.contains(&second) && !claimed.contains(&first),
            "{claimed:?}"
        );

        let statements = prepared_statements(&mut conn).await?;
        assert_each_prepared_once(
            &statements,
            &[
                ("the attempts insert", "INSERT INTO delivery_attempts"),
                (
                    "the claims insert",
                    "WITH claimed AS (INSERT INTO delivery_claims",
                ),
            ],
        );
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}

/// Copies of one event reach several dispatchers, whose claim statements are in flight at once:
/// statements sharing deliveries in opposite orders must wait for each other, not deadlock (which
/// would hand every event of the losing batch back), and each delivery is claimed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_in_flight_together_that_share_deliveries_each_claim_once() -> anyhow::Result<()> {
    const STATEMENTS: usize = 8;
    const DELIVERIES: usize = 300;
    let env = TestEnvironment::new("concurrent_claims").await?;
    let outcome = async {
        let pool = fp_store::pool(&env.database_url, STATEMENTS)?;
        for round in 0..5 {
            let ids: Vec<Uuid> = (0..DELIVERIES).map(|_| Uuid::new_v4()).collect();
            let statements = (0..STATEMENTS).map(|n| {
                let pool = pool.clone();
                // Half of the statements list the deliveries in the opposite order.
                let mut ids = ids.clone();
                if n % 2 == 1 {
                    ids.reverse();
                }
                tokio::spawn(async move {
                    let mut conn = pool.get().await?;
                    let claims: Vec<FirstAttemptClaim> = ids.into_iter().map(claim_only).collect();
                    claimed_ids(&mut conn, &claims, chrono::Utc::now()).await
                })
            });
            let mut claims_per_delivery = std::collections::HashMap::new();
            for statement in futures_util::future::join_all(statements).await {
                for id in statement?.with_context(|| format!("round {round}"))? {
                    *claims_per_delivery.entry(id).or_insert(0) += 1;
                }
            }
            assert_eq!(claims_per_delivery.len(), DELIVERIES, "round {round}");
            assert!(
                claims_per_delivery.values().all(|claims| *claims == 1),
                "round {round}: a delivery claimed more than once"
            );
        }
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}

/// A first attempt parked at a cap is claimed unsent, and its copies (the parked one, and the
/// input the broker hands out again when the parking's confirm was lost) reach two dispatchers at
/// once, each having asked the log before the other's pending row was in it. Each copy takes the
/// send with its row in one statement: exactly one takes it, and only the winner's row is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_sending_one_attempt_at_once_take_its_send_once() -> anyhow::Result<()> {
    use chrono::SubsecRound;
    use diesel::{ExpressionMethods, QueryDsl};
    use fp_store::attempts::AttemptRow;
    use fp_store::schema::delivery_attempts;

    const STATEMENTS: usize = 8;
    const DELIVERIES: usize = 200;
    let env = TestEnvironment::new("concurrent_sends").await?;
    let outcome = async {
        let pool = fp_store::pool(&env.database_url, STATEMENTS)?;
        let mut conn = pool.get().await?;
        let tenant_id = Uuid::now_v7();
        fp_store::identity::create_tenant(&mut conn, tenant_id, "sends").await?;
        let at = chrono::Utc::now().trunc_subsecs(6);
        let pending = |delivery_id: Uuid, attempt_number: i32| AttemptRow {
            delivery_id,
            attempt_number,
            response_status: None,
            error_kind: Some(fp_contracts::INTERRUPTED_ERROR_KIND.to_owned()),
            error_message: Some(fp_contracts::INTERRUPTED_ERROR_MESSAGE.to_owned()),
            is_final: false,
            ..fp_testkit::seed::attempt_row(tenant_id, at)
        };
        let taken = async |conn: &mut PgConnection, rows: &[AttemptRow]| {
            fp_store::inbound_events::take_sends(conn, rows, at, &mut CoveredDay::default())
                .await
                .map(|taken| {
                    taken
                        .into_iter()
                        .map(|taken| (taken.delivery_id, taken.pending_stored))
                        .collect::<Vec<_>>()
                })
        };
        let stored_for = async |conn: &mut PgConnection, delivery_id: Uuid| {
            delivery_attempts::table
                .filter(delivery_attempts::delivery_id.eq(delivery_id))
                .count()
                .get_result::<i64>(conn)
                .await
        };

        // Parked, then taken once: the second copy of attempt 1 loses, with no row of its own.
        let parked = Uuid::now_v7();
        claimed_ids(&mut conn, &[claim_only(parked)], at).await?;
        assert_eq!(
            taken(&mut conn, &[pending(parked, 1)]).await?,
            [(parked, true)]
        );
        assert_eq!(taken(&mut conn, &[pending(parked, 1)]).await?, []);
        assert_eq!(stored_for(&mut conn, parked).await?, 1);
        // A fresh copy of the event finds it claimed.
        assert!(
            claimed_ids(&mut conn, &[claim_only(parked)], at)
                .await?
                .is_empty()
        );
        // A later attempt of the delivery (a retry's copy) is taken anew, once.
        assert_eq!(
            taken(&mut conn, &[pending(parked, 3)]).await?,
            [(parked, true)]
        );
        assert_eq!(taken(&mut conn, &[pending(parked, 3)]).await?, []);
        assert_eq!(
            taken(&mut conn, &[pending(parked, 2)]).await?,
            [],
            "an earlier attempt"
        );

        // A first attempt claimed as it was sent: its copies find the send taken.
        let sent = Uuid::now_v7();
        let claimed = fp_store::inbound_events::claim_first_attempts(
            &mut conn,
            &[FirstAttemptClaim {
                delivery_id: sent,
                pending: Some(pending(sent, 1)),
            }],
            at,
            &mut CoveredDay::default(),
        )
        .await?;
        assert_eq!(claimed.len(), 1);
        assert_eq!(taken(&mut conn, &[pending(sent, 1)]).await?, []);
        assert_eq!(stored_for(&mut conn, sent).await?, 1);

        // No claim at all (a copy of an event whose first try failed before claiming, or a claim
        // pruned): the take claims it, so a fresh copy finds it claimed. Two in one statement:
        // the first wins.
        let unclaimed = Uuid::now_v7();
        let first_copy = pending(unclaimed, 1);
        assert_eq!(
            taken(&mut conn, &[first_copy.clone(), pending(unclaimed, 1)]).await?,
            [(unclaimed, true)]
        );
        assert!(
            claimed_ids(&mut conn, &[claim_only(unclaimed)], at)
                .await?
                .is_empty()
        );
        let stored: Vec<Uuid> = delivery_attempts::table
            .filter(delivery_attempts::delivery_id.eq(unclaimed))
            .select(delivery_attempts::id)
            .load(&mut conn)
            .await?;
        assert_eq!(stored, [first_copy.id]);

        // Of a tenant that is gone: taken, its row not stored (the record goes to log-ingest).
        let orphan = AttemptRow {
            tenant_id: Uuid::now_v7(),
            ..pending(Uuid::now_v7(), 1)
        };
        assert_eq!(
            taken(&mut conn, std::slice::from_ref(&orphan)).await?,
            [(orphan.delivery_id, false)]
        );

        // A take waits for another in flight on the same claim, and then finds the send taken:
        // the first holds its transaction open until the second waits for its row.
        let raced = Uuid::now_v7();
        claimed_ids(&mut conn, &[claim_only(raced)], at).await?;
        let mut first = fp_store::connect(&env.database_url).await?;
        diesel_async::SimpleAsyncConnection::batch_execute(&mut first, "BEGIN").await?;
        assert_eq!(
            taken(&mut first, &[pending(raced, 1)]).await?,
            [(raced, true)]
        );
        let second_pool = pool.clone();
        let second_row = pending(raced, 1);
        let second = tokio::spawn(async move {
            let mut conn = second_pool.get().await?;
            anyhow::Ok(
                fp_store::inbound_events::take_sends(
                    &mut conn,
                    [&second_row],
                    at,
                    &mut CoveredDay::default(),
                )
                .await?,
            )
        });
        fp_testkit::pipeline::lock_waiters_reach(&mut conn, 1).await?;
        diesel_async::SimpleAsyncConnection::batch_execute(&mut first, "COMMIT").await?;
        let second = tokio::time::timeout(Duration::from_secs(30), second).await???;
        assert_eq!(second, [], "the waiting take found the send taken");
        assert_eq!(stored_for(&mut conn, raced).await?, 1);

        // Twins in flight together on several connections: each delivery's send taken once,
        // with one row.
        let ids: Vec<Uuid> = (0..DELIVERIES).map(|_| Uuid::new_v4()).collect();
        let parkings: Vec<FirstAttemptClaim> = ids.iter().copied().map(claim_only).collect();
        claimed_ids(&mut conn, &parkings, at).await?;
        let statements = (0..STATEMENTS).map(|_| {
            let pool = pool.clone();
            let rows: Vec<AttemptRow> = ids.iter().map(|id| pending(*id, 1)).collect();
            tokio::spawn(async move {
                let mut conn = pool.get().await?;
                anyhow::Ok(
                    fp_store::inbound_events::take_sends(
                        &mut conn,
                        &rows,
                        at,
                        &mut CoveredDay::default(),
                    )
                    .await?,
                )
            })
        });
        let mut takes = std::collections::HashMap::new();
        for statement in futures_util::future::join_all(statements).await {
            for taken in statement?? {
                assert!(taken.pending_stored, "{taken:?}");
                *takes.entry(taken.delivery_id).or_insert(0) += 1;
            }
        }
        assert_eq!(takes.len(), DELIVERIES);
        assert!(
            takes.values().all(|takes| *takes == 1),
            "a send taken twice"
        );
        let rows = delivery_attempts::table
            .filter(delivery_attempts::delivery_id.eq_any(&ids))
            .count()
            .get_result::<i64>(&mut conn)
            .await?;
        assert_eq!(
            rows,
            i64::try_from(DELIVERIES)?,
            "one pending row a delivery"
        );
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}

/// A first attempt's claim stores its pending row in the same statement, and only where it is
/// the claim that wins and where fp-log-ingest would have stored the pending record as it is: the
/// tenant exists and the event is not erased. Elsewhere the claim still holds and says the row is
/// not stored (the dispatcher then sends the pending record through the broker). The attempt's
/// outcome overwrites that row under the same rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_attempt_stores_its_rows_only_where_the_log_would_keep_them() -> anyhow::Result<()>
{
    use chrono::SubsecRound;
    use diesel::{ExpressionMethods, QueryDsl, SelectableHelper};
    use fp_store::attempts::AttemptRow;
    use fp_store::schema::delivery_attempts;

    let env = TestEnvironment::new("pending_claims").await?;
    let outcome = async {
        let pool = fp_store::pool(&env.database_url, 1)?;
        let mut conn = pool.get().await?;
        let tenant_id = Uuid::now_v7();
        fp_store::identity::create_tenant(&mut conn, tenant_id, "claims").await?;
        let at = chrono::Utc::now().trunc_subsecs(6);
        let pending = |delivery_id: Uuid| AttemptRow {
            delivery_id,
            response_status: None,
            error_kind: Some(fp_contracts::INTERRUPTED_ERROR_KIND.to_owned()),
            error_message: Some(fp_contracts::INTERRUPTED_ERROR_MESSAGE.to_owned()),
            is_final: false,
            ..fp_testkit::seed::attempt_row(tenant_id, at)
        };
        let claim = |row: &AttemptRow| FirstAttemptClaim {
            delivery_id: row.delivery_id,
            pending: Some(row.clone()),
        };
        let mut covered_day = CoveredDay::default();

        // Won: claimed with its row, which reads back as written.
        let won = pending(Uuid::now_v7());
        // Two copies in one statement: the first's row only.
        let copy_a = pending(Uuid::now_v7());
        let copy_b = pending(copy_a.delivery_id);
        // Of a tenant that does not exist (deleted): claimed, no row.
        let orphan = AttemptRow {
            tenant_id: Uuid::now_v7(),
            ..pending(Uuid::now_v7())
        };
        // Of an erased event: claimed, no row (log-ingest stores it with its payloads erased).
        let erased = pending(Uuid::now_v7());
        let mark_erased = async |conn: &mut PgConnection, event_id: Uuid| {
            fp_testkit::seed::mark_erased(conn, tenant_id, &[event_id]).await
        };
        mark_erased(&mut conn, erased.event_id).await?;
        // On a day without a partition (a year ahead): one is made for it first.
        let ahead = AttemptRow {
            attempted_at: at + chrono::TimeDelta::days(365),
            ..pending(Uuid::now_v7())
        };

        let bare = Uuid::now_v7();
        let mut claimed = fp_store::inbound_events::claim_first_attempts(
            &mut conn,
            &[
                claim(&won),
                claim(&copy_a),
                claim(&copy_b),
                claim(&orphan),
                claim(&erased),
                claim(&ahead),
                claim_only(bare),
            ],
            at,
            &mut covered_day,
        )
        .await?;
        claimed.sort_unstable_by_key(|claimed| claimed.delivery_id);
        let stored = |delivery_id, pending_stored| ClaimedAttempt {
            delivery_id,
            pending_stored,
        };
        let mut expected = vec![
            stored(won.delivery_id, true),
            stored(copy_a.delivery_id, true),
            stored(orphan.delivery_id, false),
            stored(erased.delivery_id, false),
            stored(ahead.delivery_id, true),
            stored(bare, false),
        ];
        expected.sort_unstable_by_key(|claimed| claimed.delivery_id);
        assert_eq!(claimed, expected);

        // Of a tenant an erasure holds (`FOR UPDATE`, as a deletion's last step does too): the
        // claim does not wait for it, since its snapshot would not see the marks the erasure
        // commits. Claimed, no row: its pending record goes to log-ingest, which waits and looks.
        let held = pending(Uuid::now_v7());
        let mut erasure = fp_store::connect(&env.database_url).await?;
        diesel_async::SimpleAsyncConnection::batch_execute(&mut erasure, "BEGIN").await?;
        fp_store::erasure::lock_tenant(&mut erasure, tenant_id).await?;
        let claimed = tokio::time::timeout(
            Duration::from_secs(20),
            fp_store::inbound_events::claim_first_attempts(
                &mut conn,
                &[claim(&held)],
                at,
                &mut covered_day,
            ),
        )
        .await
        .context("the claim waited for the erasure's lock on the tenant")??;
        assert_eq!(claimed, [stored(held.delivery_id, false)]);
        diesel_async::SimpleAsyncConnection::batch_execute(&mut erasure, "ROLLBACK").await?;

        let rows_of = async |conn: &mut PgConnection, ids: &[Uuid]| {
            delivery_attempts::table
                .filter(delivery_attempts::id.eq_any(ids))
                .order(delivery_attempts::attempted_at)
                .select(AttemptRow::as_select())
                .load::<AttemptRow>(conn)
                .await
        };
        let all_ids = [
            won.id, copy_a.id, copy_b.id, orphan.id, erased.id, ahead.id, held.id,
        ];
        let rows = rows_of(&mut conn, &all_ids).await?;
        let mut ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
        ids.sort_unstable();
        let mut expected_ids = vec![won.id, copy_a.id, ahead.id];
        expected_ids.sort_unstable();
        assert_eq!(ids, expected_ids, "pending rows stored");
        assert!(rows.contains(&won), "{rows:#?}");
        let ahead_partition = fp_testkit::seed::partition_of(&mut conn, ahead.id).await?;
        assert!(
            ahead_partition.is_some(),
            "the row a year ahead has a partition"
        );

        // A claim made before keeps its row from being stored: a losing copy leaves no trace.
        let late_copy = pending(won.delivery_id);
        let claimed = fp_store::inbound_events::claim_first_attempts(
            &mut conn,
            &[claim(&late_copy)],
            at,
            &mut covered_day,
        )
        .await?;
        assert_eq!(claimed, []);
        assert_eq!(rows_of(&mut conn, &[late_copy.id]).await?, []);

        // The outcomes overwrite the pending rows in one statement, each once, except where no
        // row is pending (the tenant is gone) or the event was erased since its claim: left out,
        // for the dispatcher to send through the broker to log-ingest, which drops them or stores
        // them erased.
        let outcome_of = |row: &AttemptRow| AttemptRow {
            duration_ms: 31,
            response_status: Some(200),
            response_body: b"ok".to_vec(),
            error_kind: None,
            error_message: None,
            is_final: true,
            ..row.clone()
        };
        mark_erased(&mut conn, copy_a.event_id).await?;
        let won_outcome = outcome_of(&won);
        let logged = fp_store::attempts::store_claimed_outcomes(
            &mut conn,
            &[
                won_outcome.clone(),
                won_outcome.clone(),
                outcome_of(&copy_a),
                outcome_of(&orphan),
            ],
            fp_contracts::INTERRUPTED_ERROR_KIND,
        )
        .await?;
        assert_eq!(logged, [won.id]);
        assert_eq!(
            rows_of(&mut conn, &[won.id]).await?,
            std::slice::from_ref(&won_outcome)
        );
        assert_eq!(
            rows_of(&mut conn, &[copy_a.id]).await?,
            std::slice::from_ref(&copy_a),
            "the erased event's row stays pending"
        );
        assert_eq!(rows_of(&mut conn, &[orphan.id]).await?, []);
        // An outcome stored again (or another one) leaves the first in place, and is left out:
        // log-ingest, given its record, keeps the first too.
        let second = AttemptRow {
            response_status: Some(500),
            ..won_outcome.clone()
        };
        let logged = fp_store::attempts::store_claimed_outcomes(
            &mut conn,
            &[second],
            fp_contracts::INTERRUPTED_ERROR_KIND,
        )
        .await?;
        assert_eq!(logged, Vec::<Uuid>::new());
        assert_eq!(rows_of(&mut conn, &[won.id]).await?, [won_outcome]);

        // An erasure that rewrites a pending row while its outcome's statement waits for that
        // row: the statement, whose snapshot saw no erasure, finds the row changed when it gets
        // it, and leaves the outcome out (log-ingest, given its record, stores it erased).
        let racing = pending(Uuid::now_v7());
        fp_store::inbound_events::claim_first_attempts(
            &mut conn,
            &[claim(&racing)],
            at,
            &mut covered_day,
        )
        .await?;
        let erased_body = b"{\"erased\": true}".to_vec();
        let mut erasure = fp_store::connect(&env.database_url).await?;
        diesel_async::SimpleAsyncConnection::batch_execute(&mut erasure, "BEGIN").await?;
        diesel::sql_query(
            "UPDATE delivery_attempts SET request_body = $1 WHERE id = $2 AND attempted_at = $3",
        )
        .bind::<diesel::sql_types::Bytea, _>(&erased_body)
        .bind::<diesel::sql_types::Uuid, _>(racing.id)
        .bind::<diesel::sql_types::Timestamptz, _>(racing.attempted_at)
        .execute(&mut erasure)
        .await?;
        mark_erased(&mut erasure, racing.event_id).await?;
        let mut outcome_conn = fp_store::connect(&env.database_url).await?;
        let racing_outcome = outcome_of(&racing);
        let outcome_statement = tokio::spawn(async move {
            fp_store::attempts::store_claimed_outcomes(
                &mut outcome_conn,
                &[racing_outcome],
                fp_contracts::INTERRUPTED_ERROR_KIND,
            )
            .await
        });
        fp_testkit::pipeline::lock_waiters_reach(&mut conn, 1).await?;
        diesel_async::SimpleAsyncConnection::batch_execute(&mut erasure, "COMMIT").await?;
        let logged = tokio::time::timeout(Duration::from_secs(30), outcome_statement).await???;
        assert_eq!(logged, Vec::<Uuid>::new(), "the erased row was overwritten");
        let stored = rows_of(&mut conn, &[racing.id]).await?;
        assert_eq!(
            stored
                .iter()
                .map(|row| (row.request_body.clone(), row.error_kind.clone()))
                .collect::<Vec<_>>(),
            [(
                erased_body,
                Some(fp_contracts::INTERRUPTED_ERROR_KIND.to_owned())
            )]
        );
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}

#[derive(diesel::QueryableByName)]
struct NamedStatement {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Integer)]
    parameters: i32,
}

#[derive(diesel::QueryableByName)]
struct JsonPlan {
    #[diesel(sql_type = diesel::sql_types::Json, column_name = "QUERY PLAN")]
    plan: serde_json::Value,
}

/// Row sources a plan may read again for every outer row, with no index to probe.
const RESCANNABLE: [&str; 3] = ["CTE Scan", "Function Scan", "Materialize"];

/// What, under `node` (an `EXPLAIN (VERBOSE, FORMAT JSON)` plan node), reads a `WITH` query or a
/// function's rows again for every row of another input: a nested loop with one on its inner
/// side, or a subplan over one that is not hashed (`hashed`: the names of the hashed subplans,
/// which are built once).
fn rescans_per_row(node: &serde_json::Value, hashed: &[String]) -> Vec<String> {
    let field =
        |node: &serde_json::Value, key: &str| node[key].as_str().unwrap_or_default().to_owned();
    let children = node["Plans"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut found: Vec<String> = children
        .iter()
        .flat_map(|child| rescans_per_row(child, hashed))
        .collect();
    for child in children {
        let rescannable = RESCANNABLE.contains(&field(child, "Node Type").as_str());
        let inner_of_loop = field(node, "Node Type") == "Nested Loop"
            && field(child, "Parent Relationship") == "Inner";
        if rescannable && inner_of_loop {
            found.push(format!(
                "{} nested loop over a {}",
                field(node, "Join Type"),
                field(child, "Node Type")
            ));
        }
        let subplan = field(child, "Subplan Name");
        if rescannable
            && field(child, "Parent Relationship") == "SubPlan"
            && !hashed.contains(&subplan)
        {
            found.push(format!(
                "{subplan} over a {}, not hashed",
                field(child, "Node Type")
            ));
        }
    }
    found
}

/// The names of the subplans a plan's expressions use hashed (`hashed SubPlan 4` in a filter or
/// an output: `SubPlan 4`).
fn hashed_subplans(plan: &serde_json::Value) -> Vec<String> {
    let text = plan.to_string();
    text.match_indices("hashed SubPlan ")
        .map(|(at, prefix)| {
            let digits: String = text[at + prefix.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            format!("SubPlan {digits}")
        })
        .collect()
}

/// A claim statement is prepared once per connection, and PostgreSQL soon settles on its generic
/// plan, which counts ten rows for each array parameter. At the max rate a statement carries
/// hundreds of claims, so no join of that plan may scan a `WITH` query or the arrays again for
/// each row: the two that did made the statement quadratic in its claims (`bench/README.md`,
/// "the claim statement's nested loops").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_claim_statements_plans_scan_each_input_once() -> anyhow::Result<()> {
    use chrono::SubsecRound;
    use fp_store::attempts::AttemptRow;

    let env = TestEnvironment::new("claim_plans").await?;
    let outcome = async {
        let pool = fp_store::pool(&env.database_url, 1)?;
        let mut conn = pool.get().await?;
        diesel_async::SimpleAsyncConnection::batch_execute(
            &mut conn,
            "SET plan_cache_mode = force_generic_plan",
        )
        .await?;
        let tenant_id = Uuid::now_v7();
        fp_store::identity::create_tenant(&mut conn, tenant_id, "plans").await?;
        let at = chrono::Utc::now().trunc_subsecs(6);
        let pending = || AttemptRow {
            error_kind: Some(fp_contracts::INTERRUPTED_ERROR_KIND.to_owned()),
            ..fp_testkit::seed::attempt_row(tenant_id, at)
        };
        let mut covered_day = CoveredDay::default();
        let first = pending();
        let claimed = fp_store::inbound_events::claim_first_attempts(
            &mut conn,
            &[FirstAttemptClaim {
                delivery_id: first.delivery_id,
                pending: Some(first.clone()),
            }],
            at,
            &mut covered_day,
        )
        .await?;
        assert_eq!(claimed.len(), 1, "{claimed:?}");
        let taken =
            fp_store::inbound_events::take_sends(&mut conn, &[pending()], at, &mut covered_day)
                .await?;
        assert_eq!(taken.len(), 1, "{taken:?}");

        let statements: Vec<NamedStatement> = diesel::sql_query(
            "SELECT name, cardinality(parameter_types) AS parameters FROM pg_prepared_statements \
             WHERE statement LIKE 'WITH claimed AS (INSERT INTO delivery_claims%'",
        )
        .load(&mut conn)
        .await?;
        assert_eq!(
            statements.len(),
            2,
            "the first attempts' claim statement and the sends' one are prepared"
        );
        for statement in statements {
            // A generic plan is the same whatever the values: NULLs stand in for the arrays, and
            // EXPLAIN without ANALYZE runs nothing.
            let nulls = vec!["NULL"; usize::try_from(statement.parameters)?].join(", ");
            let explained: JsonPlan = diesel::sql_query(format!(
                "EXPLAIN (VERBOSE, FORMAT JSON) EXECUTE \"{}\"({nulls})",
                statement.name
            ))
            .get_result(&mut conn)
            .await?;
            let plan = &explained.plan[0]["Plan"];
            assert!(plan.is_object(), "no plan: {:#}", explained.plan);
            let rescans = rescans_per_row(plan, &hashed_subplans(plan));
            assert!(
                rescans.is_empty(),
                "the claim statement's plan rescans per row: {rescans:?}\n{:#}",
                explained.plan
            );
        }
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}
