//! The whole path on the real parts: api, dispatcher, log-ingest and dashboard as separate
//! processes, real PostgreSQL and RabbitMQ, and an HTTPS receiver with a private certificate that
//! the dispatcher trusts through configuration and reaches through the loopback allow-list.

use std::time::Duration;

use anyhow::Context;
use fp_testkit::environment::TestEnvironment;
use fp_testkit::pipeline::{Pipeline, TenantApi, metric, start_api, start_dashboard};
use fp_testkit::receiver::{ReceivedRequest, TlsReceiver, always_ok};
use serde_json::{Value, json};

/// HMAC-SHA256 computed here with ring directly, not with the product's signing code.
fn expected_signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    format!(
        "sha256={}",
        hex::encode(ring::hmac::sign(&key, body).as_ref())
    )
}

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .map(|object| object.keys().map(String::as_str).collect())
        .unwrap_or_default();
    keys.sort_unstable();
    keys
}

fn assert_product_page_shape(request: &ReceivedRequest, event: &str, data: &Value) {
    let body: Value = serde_json::from_slice(&request.body).expect("the body is JSON");
    assert_eq!(keys(&body), ["data", "event", "timestamp"]);
    assert_eq!(body["event"], event);
    let timestamp = body["timestamp"].as_str().expect("timestamp is a string");
    // The product page's form: 2024-03-15T10:30:00Z.
    assert_eq!(timestamp.len(), 20, "{timestamp}");
    assert!(
        timestamp.ends_with('Z') && timestamp.as_bytes()[10] == b'T',
        "{timestamp}"
    );
    assert_eq!(&body["data"], data);
    assert_eq!(request.method, "POST");
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("x-feedbackpulse-event"), Some(event));
    let delivery = request
        .header("x-feedbackpulse-delivery")
        .expect("delivery id header");
    assert!(uuid::Uuid::parse_str(delivery).is_ok(), "{delivery}");
    assert_eq!(request.header("webhook-id"), Some(delivery));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submission_events_reach_an_https_receiver_signed_and_are_logged() -> anyhow::Result<()> {
    let mut env = TestEnvironment::new("e2e").await?;
    let receiver = TlsReceiver::start("127.0.0.1:0".parse()?, always_ok()).await?;
    env.trust_receiver(&receiver)?;

    let pipeline = Pipeline::start(&mut env, 1).await?;
    let (dashboard_address, _) = start_dashboard(&mut env, pipeline.api).await?;
    let api = pipeline.tenant(&env, "Acme GmbH").await?;
    let tenant_id = api.tenant_id.clone();

    let secret = "your_shared_secret";
    let hook_url = receiver.url("/webhooks/feedbackpulse");
    let (status, config) = api
        .send(
            reqwest::Method::PUT,
            "/api/v2/webhooks/config",
            Some(&json!({"url": hook_url, "events": ["submission.created", "submission.status_changed"], "secret": secret}).to_string()),
        )
        .await?;
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["secret_set"], true);
    assert!(
        !config.to_string().contains(secret),
        "the secret must never be returned"
    );
    let (_, fetched) = api
        .send(reqwest::Method::GET, "/api/v2/webhooks/config", None)
        .await?;
    assert_eq!(fetched["url"], hook_url);
    assert!(!fetched.to_string().contains(secret));
    // At rest the secret is sealed: no plaintext column, and the sealed bytes do not contain it.
    let (sealed, plaintext_column) = stored_secret(&env, &tenant_id).await?;
    assert!(
        !plaintext_column,
        "webhook_configs must have no plaintext secret column"
    );
    let sealed = sealed.context("the secret must be stored sealed")?;
    assert!(sealed.len() > secret.len());
    assert!(
        !sealed
            .windows(secret.len())
            .any(|window| window == secret.as_bytes()),
        "the stored secret must not contain the plaintext"
    );

    let (status, created) = api
        .send(
            reqwest::Method::POST,
            "/api/v2/submissions",
            Some(r#"{"campaign_id": 1, "star_rating": 5, "text_feedback": "Love this product!", "customer_name": "Jane Doe"}"#),
        )
        .await?;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "pending");
    let id = created["id"].as_i64().context("id")?;

    let (status, changed) = api
        .send(
            reqwest::Method::PATCH,
            &format!("/api/v2/submissions/{id}"),
            Some(r#"{"status": "approved"}"#),
        )
        .await?;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["status"], "approved");

    let requests = receiver.wait_for(2, Duration::from_secs(30)).await?;
    assert_eq!(requests.len(), 2);
    let data = |status: &str| json!({"id": id, "campaign_id": 1, "star_rating": 5, "text_feedback": "Love this product!", "customer_name": "Jane Doe", "status": status});
    let created_request = requests
        .iter()
        .find(|request| request.header("x-feedbackpulse-event") == Some("submission.created"))
        .context("no submission.created delivery")?;
    let changed_request = requests
        .iter()
        .find(|request| {
            request.header("x-feedbackpulse-event") == Some("submission.status_changed")
        })
        .context("no submission.status_changed delivery")?;
    assert_product_page_shape(created_request, "submission.created", &data("pending"));
    let mut changed_data = data("approved");
    changed_data["previous_status"] = json!("pending");
    assert_product_page_shape(changed_request, "submission.status_changed", &changed_data);
    for request in &requests {
        assert_eq!(request.target, "/webhooks/feedbackpulse");
        assert_eq!(
            request.header("x-feedbackpulse-signature"),
            Some(expected_signature(secret, &request.body).as_str())
        );
        let timestamp = request
            .header("webhook-timestamp")
            .context("webhook-timestamp")?;
        assert!(timestamp.parse::<i64>().is_ok(), "{timestamp}");
        assert!(
            request
                .header("webhook-signature")
                .is_some_and(|value| value.starts_with("v1,"))
        );
    }

    // Both attempts, as the tenant reads them back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let entries = loop {
        let (status, page) = api
            .send(reqwest::Method::GET, "/api/v2/webhooks/logs", None)
            .await?;
        assert_eq!(status, 200, "{page}");
        let entries = page["data"].as_array().cloned().unwrap_or_default();
        // An attempt shows as `interrupted` from just before its request until its outcome is
        // logged: wait for both outcomes.
        let settled = entries
            .iter()
            .all(|entry| entry["error"]["kind"] != "interrupted");
        if (entries.len() >= 2 && settled) || tokio::time::Instant::now() > deadline {
            break entries;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(entries.len(), 2, "{entries:?}");
    // Newest first. The dispatcher handles its inputs concurrently, so the two events, recorded
    // a moment apart, may be attempted in either order: each entry is matched to its request by
    // its type.
    let attempted_at = |entry: &serde_json::Value| {
        entry["timestamp"]
            .as_str()
            .and_then(|text| chrono::DateTime::parse_from_rfc3339(text).ok())
            .context("an entry without a timestamp")
    };
    assert!(
        attempted_at(&entries[0])? >= attempted_at(&entries[1])?,
        "not newest first: {entries:?}"
    );
    let mut types: Vec<&str> = entries
        .iter()
        .filter_map(|entry| entry["event_type"].as_str())
        .collect();
    types.sort_unstable();
    assert_eq!(types, ["submission.created", "submission.status_changed"]);
    for entry in &entries {
        let request = if entry["event_type"] == "submission.created" {
            created_request
        } else {
            changed_request
        };
        assert_eq!(entry["url"], hook_url);
        assert_eq!(entry["response_code"], 200);
        assert_eq!(entry["response_body"], "ok");
        assert_eq!(
            entry["payload"].as_str().map(str::as_bytes),
            Some(request.body.as_slice())
        );
        assert_eq!(
            entry["delivery_id"].as_str(),
            request.header("x-feedbackpulse-delivery")
        );
        assert!(entry["timestamp"].as_str().is_some());
        assert!(entry["error"].is_null(), "{entry}");
        // The headers the dispatcher logged with the attempt are those the endpoint got.
        let id = entry["id"].as_str().context("an entry without an id")?;
        let (status, detail) = api
            .send(
                reqwest::Method::GET,
                &format!("/api/v2/webhooks/logs/{id}"),
                None,
            )
            .await?;
        assert_eq!(status, 200, "{detail}");
        let logged: Vec<(String, String)> = detail["request_headers"]
            .as_array()
            .context("no request headers")?
            .iter()
            .map(|header| {
                (
                    header["name"].as_str().unwrap_or_default().to_lowercase(),
                    header["value"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        for name in [
            "content-type",
            "x-feedbackpulse-event",
            "x-feedbackpulse-delivery",
            "x-feedbackpulse-signature",
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
        ] {
            let value = logged
                .iter()
                .find(|(logged_name, _)| logged_name == name)
                .map(|(_, value)| value.as_str());
            assert_eq!(value, request.header(name), "{name}: {detail}");
        }
    }

    // The dashboard shows the same deliveries to the tenant's user.
    env.fpctl(&[
        "user",
        "create",
        "--email",
        "admin@acme.example",
        "--password",
        "correct horse battery",
        "--tenant",
        &tenant_id,
    ])
    .await?;
    let browser = reqwest::Client::builder()
        .no_proxy()
        .cookie_store(true)
        .build()?;
    let dashboard = format!("http://{dashboard_address}");
    let form = browser
        .get(format!("{dashboard}/login"))
        .send()
        .await?
        .text()
        .await?;
    let csrf_token =
        hidden_field(&form, "csrf_token").context("the log-in form has a CSRF token")?;
    let login = browser
        .post(format!("{dashboard}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "email=admin%40acme.example&password=correct+horse+battery&csrf_token={csrf_token}"
        ))
        .send()
        .await?;
    assert!(
        login.status().is_success(),
        "log-in answered {}",
        login.status()
    );
    let page = browser
        .get(format!("{dashboard}/webhooks/logs"))
        .send()
        .await?
        .text()
        .await?;
    assert!(page.contains("submission.status_changed"), "{page}");
    assert!(page.contains("submission.created"));
    // Tera escapes `/` too, as OWASP recommends for HTML text.
    assert!(page.contains(&hook_url.replace('/', "&#x2F;")), "{page}");

    env.finish().await
}

/// `dispatcher.worker_threads` sizes a dispatcher's runtime: one thread unless set, and a dispatcher
/// given more delivers as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_runs_on_the_worker_threads_it_is_given() -> anyhow::Result<()> {
    let mut env = TestEnvironment::new("e2e-threads").await?;
    let receiver = TlsReceiver::start("127.0.0.1:0".parse()?, always_ok()).await?;
    env.trust_receiver(&receiver)?;
    let mut pipeline = Pipeline::start(&mut env, 1).await?;
    let outcome = async {
        let default_health = pipeline.dispatchers[0];
        assert_eq!(
            metric(default_health, "fp_dispatcher_worker_threads").await?,
            1
        );
        env.kill("fp-dispatcher").await?;
        env.set("FP__DISPATCHER__WORKER_THREADS", "3");
        let health = pipeline.start_dispatcher(&mut env).await?;
        assert_eq!(metric(health, "fp_dispatcher_worker_threads").await?, 3);

        let api = pipeline.tenant(&env, "Threads Ltd").await?;
        api.configure(&receiver.url("/hook"), None).await?;
        api.submit("delivered by a dispatcher of three threads", None)
            .await?;
        let requests = receiver.wait_for(1, Duration::from_secs(30)).await?;
        assert_eq!(
            requests[0].header("x-feedbackpulse-event"),
            Some("submission.created")
        );
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_writes_nothing() -> anyhow::Result<()> {
    let mut env = TestEnvironment::new("badinput").await?;
    let api_address = start_api(&mut env).await?;
    let api = TenantApi::create(&env, api_address, "Acme").await?;
    let post = reqwest::Method::POST;
    let put = reqwest::Method::PUT;
    let cases: Vec<(reqwest::Method, &str, &str, u16, Option<&str>)> = vec![
        (
            post.clone(),
            "/api/v2/submissions",
            r#"{"campaign_id": 1,"#,
            400,
            None,
        ),
        (
            post.clone(),
            "/api/v2/submissions",
            "not json at all",
            400,
            None,
        ),
        (
            post.clone(),
            "/api/v2/submissions",
            r#"{"campaign_id": 1, "star_rating": "five", "text_feedback": "x"}"#,
            422,
            Some("star_rating"),
        ),
        (
            post.clone(),
            "/api/v2/submissions",
            r#"{"campaign_id": 1, "text_feedback": "x"}"#,
            422,
            Some("star_rating"),
        ),
        (
            post.clone(),
            "/api/v2/submissions",
            r#"{"campaign_id": 1, "star_rating": 9, "text_feedback": "x"}"#,
            422,
            Some("star_rating"),
        ),
        (
            post.clone(),
            "/api/v2/submissions",
            r#"{"campaign_id": 1, "star_rating": 3, "text_feedback": "x", "colour": "red"}"#,
            422,
            Some("colour"),
        ),
        (
            put.clone(),
            "/api/v2/webhooks/config",
            r#"{"url": "http://example.com/hook", "events": ["submission.created"]}"#,
            422,
            Some("url"),
        ),
        (
            put.clone(),
            "/api/v2/webhooks/config",
            r#"{"url": "https://10.0.0.1/hook", "events": ["submission.created"]}"#,
            422,
            Some("url"),
        ),
        (
            put.clone(),
            "/api/v2/webhooks/config",
            r#"{"url": "https://example.com/hook", "events": ["submission.deleted"]}"#,
            422,
            Some("events[0]"),
        ),
        (
            put.clone(),
            "/api/v2/webhooks/config",
            r#"{"url": "https://example.com/hook", "events": []}"#,
            422,
            Some("events"),
        ),
        (
            put.clone(),
            "/api/v2/webhooks/config",
            r#"{"url": "https://example.com/hook", "events": "submission.created"}"#,
            422,
            Some("events"),
        ),
        (
            put.clone(),
            "/api/v2/webhooks/config",
            r#"{"url": "https://example.com/hook", "events": ["submission.created"], "secret": "short"}"#,
            422,
            Some("secret"),
        ),
    ];
    for (method, path, body, expected_status, expected_field) in cases {
        let (status, error) = api.send(method, path, Some(body)).await?;
        assert_eq!(status, expected_status, "{path} {body}: {error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{error}"
        );
        assert_eq!(
            error["error"]["field"].as_str(),
            expected_field,
            "{body}: {error}"
        );
    }
    let (status, error) = api
        .send(
            reqwest::Method::PATCH,
            "/api/v2/submissions/999999",
            Some(r#"{"status": "approved"}"#),
        )
        .await?;
    assert_eq!(status, 404, "{error}");

    // An unknown key, and no key at all.
    let stranger = TenantApi {
        key: "fpk_0000000000000000000000000000000000000000000000000000000000000000".to_owned(),
        ..api
    };
    let (status, error) = stranger
        .send(
            reqwest::Method::POST,
            "/api/v2/submissions",
            Some(r#"{"campaign_id": 1, "star_rating": 5, "text_feedback": "x"}"#),
        )
        .await?;
    assert_eq!(status, 401, "{error}");
    assert_eq!(error["error"]["code"], "unauthorized");
    let anonymous = stranger
        .http
        .get(format!("{}/api/v2/webhooks/logs", stranger.base))
        .send()
        .await?;
    assert_eq!(anonymous.status().as_u16(), 401);

    // Nothing of the above was written: no config, no submission, no event.
    let rows = count_rows(&env, &["submissions", "outbox", "webhook_configs"]).await?;
    assert_eq!(rows, vec![0, 0, 0]);

    env.finish().await
}

/// The value of `<input type="hidden" name="NAME" value="...">` in a page.
fn hidden_field(page: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker)? + marker.len();
    let end = page[start..].find('"')? + start;
    Some(page[start..end].to_owned())
}

async fn count_rows(env: &TestEnvironment, tables: &[&str]) -> anyhow::Result<Vec<i64>> {
    use diesel::QueryableByName;
    use diesel_async::RunQueryDsl;

    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        count: i64,
    }
    let mut conn = fp_store::connect(&env.database_url).await?;
    let mut counts = Vec::new();
    for table in tables {
        let row: Count = diesel::sql_query(format!("SELECT count(*) AS count FROM {table}"))
            .get_result(&mut conn)
            .await?;
        counts.push(row.count);
    }
    Ok(counts)
}

/// The tenant's stored (sealed) secret, and whether `webhook_configs` still has a plaintext column.
async fn stored_secret(
    env: &TestEnvironment,
    tenant_id: &str,
) -> anyhow::Result<(Option<Vec<u8>>, bool)> {
    use diesel::QueryableByName;
    use diesel_async::RunQueryDsl;

    #[derive(QueryableByName)]
    struct Stored {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Bytea>)]
        secret_sealed: Option<Vec<u8>>,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        plaintext_column: bool,
    }
    let mut conn = fp_store::connect(&env.database_url).await?;
    let row: Stored = diesel::sql_query(
        "SELECT secret_sealed, EXISTS (SELECT 1 FROM information_schema.columns \
           WHERE table_name = 'webhook_configs' AND column_name = 'secret') AS plaintext_column \
         FROM webhook_configs WHERE tenant_id = $1::uuid",
    )
    .bind::<diesel::sql_types::Text, _>(tenant_id)
    .get_result(&mut conn)
    .await?;
    Ok((row.secret_sealed, row.plaintext_column))
}
