//! Submissions and config lifecycle through the api: reading one and a list, paging, tenant
//! isolation, no event for a status that did not change, and deleting the config. New
//! submissions are committed in batches: a batch insert keeps its input's order, and many
//! concurrent submissions each get their own row and exactly one event.

use std::collections::BTreeSet;

use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use fp_store::outbox::OutboxEvent;
use fp_store::submissions::{NewSubmission, SubmissionRow};
use fp_testkit::environment::TestEnvironment;
use fp_testkit::pipeline::{TenantApi, metric, start_api, start_api_with_health};
use futures_util::future::try_join_all;
use reqwest::Method;
use uuid::Uuid;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    count: i64,
}

async fn outbox_rows(env: &TestEnvironment) -> anyhow::Result<i64> {
    let mut conn = fp_store::connect(&env.database_url).await?;
    let row: Count = diesel::sql_query("SELECT count(*) AS count FROM outbox")
        .get_result(&mut conn)
        .await?;
    Ok(row.count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_are_read_paged_and_kept_to_their_tenant() -> anyhow::Result<()> {
    let mut env = TestEnvironment::new("subs").await?;
    let api_address = start_api(&mut env).await?;
    let alice = TenantApi::create(&env, api_address, "Alice").await?;
    let bob = TenantApi::create(&env, api_address, "Bob").await?;

    let mut ids = Vec::new();
    for n in 0..7 {
        ids.push(alice.submit(&format!("feedback {n}"), Some("Jane")).await?);
    }
    let (status, one) = alice
        .send(
            Method::GET,
            &format!("/api/v2/submissions/{}", ids[2]),
            None,
        )
        .await?;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["text_feedback"], "feedback 2");
    assert_eq!(one["status"], "pending");

    // Pages of 3 return all seven, newest first, each once.
    let mut paged = Vec::new();
    let mut path = "/api/v2/submissions?limit=3".to_owned();
    loop {
        let (status, page) = alice.send(Method::GET, &path, None).await?;
        assert_eq!(status, 200, "{page}");
        paged.extend(
            page["data"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["id"].as_i64()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v2/submissions?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(paged, newest_first);

    // Bob can neither see nor change Alice's submissions, and cannot tell they exist.
    for (method, body) in [
        (Method::GET, None),
        (Method::PATCH, Some(r#"{"status": "approved"}"#)),
    ] {
        let (status, error) = bob
            .send(method, &format!("/api/v2/submissions/{}", ids[0]), body)
            .await?;
        assert_eq!(status, 404, "{error}");
    }
    let (_, bobs) = bob.send(Method::GET, "/api/v2/submissions", None).await?;
    assert_eq!(bobs["data"].as_array().map(Vec::len), Some(0), "{bobs}");

    // A change announces itself once; setting the same status again announces nothing.
    assert_eq!(outbox_rows(&env).await?, 7);
    let path = format!("/api/v2/submissions/{}", ids[0]);
    let (status, _) = alice
        .send(Method::PATCH, &path, Some(r#"{"status": "approved"}"#))
        .await?;
    assert_eq!(status, 200);
    let (status, same) = alice
        .send(Method::PATCH, &path, Some(r#"{"status": "approved"}"#))
        .await?;
    assert_eq!(status, 200);
    assert_eq!(same["status"], "approved");
    assert_eq!(outbox_rows(&env).await?, 8);

    // Deleting the config: 204, then it is gone, and a second delete is a 404.
    alice.configure("https://93.184.216.34/hook", None).await?;
    let response = alice
        .http
        .delete(format!("{}/api/v2/webhooks/config", alice.base))
        .bearer_auth(&alice.key)
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 204);
    let (status, _) = alice
        .send(Method::GET, "/api/v2/webhooks/config", None)
        .await?;
    assert_eq!(status, 404);
    let (status, _) = alice
        .send(Method::DELETE, "/api/v2/webhooks/config", None)
        .await?;
    assert_eq!(status, 404);

    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_stored_with_ids_in_input_order_and_its_events_or_not_at_all()
-> anyhow::Result<()> {
    let env = TestEnvironment::new("subs_batch").await?;
    let outcome = async {
        let mut conn = fp_store::connect(&env.database_url).await?;
        let tenant_id = Uuid::new_v4();
        fp_store::identity::create_tenant(&mut conn, tenant_id, "Batch").await?;
        let texts: Vec<String> = (0..50).map(|n| format!("feedback {n}")).collect();
        let new: Vec<NewSubmission<'_>> = texts
            .iter()
            .enumerate()
            .map(|(n, text)| NewSubmission {
                tenant_id,
                campaign_id: 1,
                star_rating: 3,
                text_feedback: text,
                customer_name: (n % 3 == 0).then_some("Ann"),
                status: "pending",
            })
            .collect();
        let reservation = fp_store::submissions::reserve(&mut conn, new.len()).await?;
        assert!(
            reservation.ids.windows(2).all(|pair| pair[0] < pair[1]),
            "ids not ascending: {:?}",
            reservation.ids
        );
        let rows: Vec<SubmissionRow> = new
            .iter()
            .zip(&reservation.ids)
            .map(|(submission, &id)| submission.row(id, reservation.at))
            .collect();
        let events: Vec<OutboxEvent> = rows.iter().map(event_of).collect();
        fp_store::submissions::insert_with_events(&mut conn, &rows, &events).await?;
        // Read back as stored, in id order: the input's order, each with its event.
        let (mut stored, _) =
            fp_store::submissions::newest(&mut conn, tenant_id, None, 100).await?;
        stored.reverse();
        assert_eq!(stored, rows);
        assert_eq!(
            events_per_submission(&mut conn).await?,
            rows.iter().map(|row| (row.id, 1)).collect::<Vec<_>>()
        );

        // A batch whose event cannot be stored (its id is taken) leaves no submission behind.
        let reservation = fp_store::submissions::reserve(&mut conn, 1).await?;
        let doomed = new[0].row(reservation.ids[0], reservation.at);
        let taken_id = OutboxEvent {
            event_id: events[0].event_id,
            ..event_of(&doomed)
        };
        let refused = fp_store::submissions::insert_with_events(
            &mut conn,
            std::slice::from_ref(&doomed),
            &[taken_id],
        )
        .await;
        assert!(refused.is_err(), "an event with a taken id was stored");
        assert_eq!(
            fp_store::submissions::find(&mut conn, tenant_id, doomed.id).await?,
            None,
            "the submission was stored without its event"
        );
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}

/// An outbox row announcing `row` (its payload is not read here).
fn event_of(row: &SubmissionRow) -> OutboxEvent {
    OutboxEvent {
        event_id: Uuid::now_v7(),
        tenant_id: row.tenant_id,
        event_type: "submission.created".to_owned(),
        payload: vec![1],
        traceparent: String::new(),
        tracestate: String::new(),
        submission_id: Some(row.id),
    }
}

/// `(submission id, outbox rows naming it)` for every submission, in id order.
async fn events_per_submission(
    conn: &mut fp_store::PgConnection,
) -> anyhow::Result<Vec<(i64, i64)>> {
    let rows: Vec<EventsOf> = diesel::sql_query(
        "SELECT s.id AS submission_id, count(o.id) AS events \
         FROM submissions s LEFT JOIN outbox o ON o.submission_id = s.id \
         GROUP BY s.id ORDER BY s.id",
    )
    .load(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.submission_id, row.events))
        .collect())
}

#[derive(QueryableByName)]
struct EventsOf {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    submission_id: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    events: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submissions_each_get_a_row_and_one_event() -> anyhow::Result<()> {
    let mut env = TestEnvironment::new("subs_concurrent").await?;
    let outcome = async {
        let (api_address, health) = start_api_with_health(&mut env).await?;
        let alice = TenantApi::create(&env, api_address, "Alice").await?;
        let ids = try_join_all((0..100).map(|n| {
            let alice = &alice;
            async move { alice.submit(&format!("at once {n}"), None).await }
        }))
        .await?;
        let distinct: BTreeSet<i64> = ids.iter().copied().collect();
        assert_eq!(distinct.len(), ids.len(), "{ids:?}");

        let mut conn = fp_store::connect(&env.database_url).await?;
        let events: Vec<EventsOf> = diesel::sql_query(
            "SELECT submission_id, count(*) AS events FROM outbox \
             WHERE event_type = 'submission.created' AND tenant_id = $1 \
             GROUP BY submission_id",
        )
        .bind::<diesel::sql_types::Uuid, _>(alice.tenant_id.parse::<Uuid>()?)
        .load(&mut conn)
        .await?;
        assert!(
            events.iter().all(|of| of.events == 1),
            "a submission has more than one event"
        );
        let announced: BTreeSet<i64> = events.iter().map(|of| of.submission_id).collect();
        assert_eq!(announced, distinct);
        // Every one was committed by a writer, in however many batches.
        assert_eq!(
            metric(health, "fp_api_submission_batch_size_sum").await?,
            100
        );
        eprintln!(
            "100 submissions in {} batches",
            metric(health, "fp_api_submission_batch_size_count").await?
        );
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}
