//! Submissions and config lifecycle through the api: reading one and a list, paging, tenant
//! isolation, no event for a status that did not change, and deleting the config.

use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use fp_testkit::environment::TestEnvironment;
use fp_testkit::pipeline::{TenantApi, start_api};
use reqwest::Method;

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
