//! `fpctl tenant delete` on the real parts: a tenant with config, keys, a dashboard user with a
//! session and a failed log-in, delivered submissions and a retry waiting in the broker is counted
//! by `--dry-run` (which deletes nothing), then deleted: no row of it is left in any table with a
//! `tenant_id` column (found in information_schema, so a table added later is checked too), nor
//! any session of its users; its key and session answer 401; its retry, arriving afterwards, is not
//! sent and leaves no row, nor does an attempt record arriving late; the other tenant is untouched
//! and still delivered to. A deletion interrupted half way is finished by running it again. And
//! writes made with a key an api still had cached after the deletion are refused and leave no row.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use fp_broker::{Broker, OutgoingMessage};
use fp_contracts::{timestamp_from, v1};
use fp_testkit::environment::{TestEnvironment, broker_url};
use fp_testkit::pipeline::{
    KEY_REVOCATION_PATIENCE, Pipeline, TenantApi, listeners_reach, metric, publish_attempt_record,
    start_api,
};
use fp_testkit::receiver::{CannedResponse, TlsReceiver};
use fp_testkit::sessions::{UserApi, create_user};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(30);
/// The retry schedule: a failed first attempt waits an hour in its delay queue, from where the
/// test takes it when it wants it to arrive.
const RETRY_DELAY: Duration = Duration::from_secs(3600);
/// Submissions with this text are answered 500 by the receiver.
const REFUSED_TEXT: &str = "the receiver refuses this one";
const PASSWORD: &str = "correct horse battery staple";
const CURRENT_SESSION: &str = "/api/v2/sessions/current";

#[derive(QueryableByName)]
struct TableName {
    #[diesel(sql_type = Text)]
    table_name: String,
}

#[derive(QueryableByName)]
struct ConstraintName {
    #[diesel(sql_type = Text)]
    constraint_name: String,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

/// Rows of one tenant in every table with a `tenant_id` column, partitions included.
async fn rows_per_table(
    env: &TestEnvironment,
    tenant_id: &str,
) -> anyhow::Result<BTreeMap<String, i64>> {
    let tenant_id: Uuid = tenant_id.parse()?;
    let mut conn = fp_store::connect(&env.database_url).await?;
    let tables = diesel::sql_query(
        "SELECT table_name::text AS table_name FROM information_schema.columns \
         WHERE table_schema = current_schema() AND column_name = 'tenant_id'",
    )
    .load::<TableName>(&mut conn)
    .await?;
    anyhow::ensure!(
        tables
            .iter()
            .any(|table| table.table_name == "delivery_attempts"),
        "information_schema lists no delivery_attempts: the query is wrong"
    );
    let mut rows = BTreeMap::new();
    for table in tables {
        let count = diesel::sql_query(format!(
            "SELECT count(*) AS count FROM \"{}\" WHERE tenant_id = $1",
            table.table_name
        ))
        .bind::<SqlUuid, _>(tenant_id)
        .get_result::<Count>(&mut conn)
        .await?;
        rows.insert(table.table_name, count.count);
    }
    Ok(rows)
}

async fn count(env: &TestEnvironment, query: &str, bind: &str) -> anyhow::Result<i64> {
    let mut conn = fp_store::connect(&env.database_url).await?;
    Ok(diesel::sql_query(query)
        .bind::<Text, _>(bind)
        .get_result::<Count>(&mut conn)
        .await?
        .count)
}

/// `fpctl tenant delete <tenant_id> <extra>`'s JSON report.
async fn delete_tenant(
    env: &TestEnvironment,
    tenant_id: &str,
    extra: &[&str],
) -> anyhow::Result<Value> {
    let mut args = vec!["tenant", "delete", tenant_id];
    args.extend(extra);
    Ok(serde_json::from_str(&env.fpctl(&args).await?)?)
}

fn rows_of(report: &Value, table: &str) -> i64 {
    report["rows"][table].as_i64().unwrap_or(-1)
}

/// A tenant configured to deliver to `path` of the receiver, with a dashboard user signed in.
struct Tenant {
    api: TenantApi,
    email: String,
    user_id: String,
    session: String,
}

async fn tenant(
    env: &TestEnvironment,
    pipeline: &Pipeline,
    users: &UserApi,
    receiver: &TlsReceiver,
    name: &str,
) -> anyhow::Result<Tenant> {
    let api = pipeline.tenant(env, name).await?;
    api.configure(&receiver.url(&format!("/{name}")), Some("a-webhook-secret"))
        .await?;
    let email = format!("admin@{name}.example");
    let user_id = create_user(env, &email, PASSWORD, Some(&api.tenant_id)).await?;
    let session = users
        .session(&email, PASSWORD, IpAddr::from([198, 51, 100, 7]))
        .await?;
    Ok(Tenant {
        api,
        email,
        user_id,
        session,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_tenant_leaves_no_row_and_its_queued_retry_is_not_sent() -> anyhow::Result<()> {
    let receiver = TlsReceiver::start(
        "127.0.0.1:0".parse()?,
        Arc::new(|request, _| {
            let refused = String::from_utf8_lossy(&request.body).contains(REFUSED_TEXT);
            CannedResponse::new(if refused { 500 } else { 200 }, "noted")
        }),
    )
    .await?;
    let mut env = TestEnvironment::new("tenant_delete").await?;
    env.trust_receiver(&receiver)?;
    env.set(
        "FP__DISPATCHER__RETRY_SCHEDULE",
        format!("{}s", RETRY_DELAY.as_secs()),
    );
    // The dispatcher hears the deletion at once (a notification at commit), so the retry meets
    // it. Its cached configs live an hour here, so nothing else could explain that.
    env.set("FP__DISPATCHER__CONFIG_CACHE_TTL_MS", "3600000");
    env.set("FP__DISPATCHER__CONFIG_CACHE_MAX_AGE_MS", "3600000");
    let pipeline = Pipeline::start(&mut env, 1).await?;
    listeners_reach(&env, &fp_store::config_changes::CHANNEL, 1).await?;
    let outcome = deletion_scenario(&env, &pipeline, &receiver).await;
    env.finish_after(outcome).await
}

async fn deletion_scenario(
    env: &TestEnvironment,
    pipeline: &Pipeline,
    receiver: &TlsReceiver,
) -> anyhow::Result<()> {
    let users = UserApi::new(pipeline.api)?;
    let doomed = tenant(env, pipeline, &users, receiver, "doomed").await?;
    let kept = tenant(env, pipeline, &users, receiver, "kept").await?;
    env.fpctl(&[
        "key",
        "create",
        "--tenant",
        &doomed.api.tenant_id,
        "--name",
        "billing",
    ])
    .await?;
    // A failed log-in is counted against the user's email (and the client's address).
    let guessed = users
        .log_in(
            &doomed.email,
            "not the password",
            IpAddr::from([203, 0, 113, 9]),
        )
        .await?;
    assert_eq!(guessed.status, 401, "{guessed:?}");

    doomed.api.submit("delivered, first", Some("Ada")).await?;
    doomed.api.submit("delivered, second", None).await?;
    doomed.api.submit(REFUSED_TEXT, Some("Grace")).await?;
    let (status, test_event) = doomed
        .api
        .send(Method::POST, "/api/v2/webhooks/test", None)
        .await?;
    assert!(status < 300, "test event refused ({status}): {test_event}");
    kept.api.submit("the kept tenant's", None).await?;
    let doomed_log = doomed
        .api
        .logs_until(PATIENCE, |entries| {
            entries
                .iter()
                .filter(|entry| entry["response_code"] == 200)
                .count()
                == 3
                && entries
                    .iter()
                    .any(|entry| entry["response_code"] == 500 && entry["final"] == false)
        })
        .await?;
    let refused = doomed_log
        .iter()
        .find(|entry| entry["response_code"] == 500)
        .context("the refused delivery is not logged")?;
    let refused_delivery = refused["delivery_id"]
        .as_str()
        .context("delivery_id")?
        .to_owned();
    kept.api
        .logs_until(PATIENCE, |entries| !entries.is_empty())
        .await?;

    let doomed_before = rows_per_table(env, &doomed.api.tenant_id).await?;
    let kept_before = rows_per_table(env, &kept.api.tenant_id).await?;
    for (table, at_least) in [
        ("api_keys", 2),
        ("users", 1),
        ("webhook_configs", 1),
        ("submissions", 3),
        ("outbox", 4),
        ("delivery_attempts", 4),
        ("rate_limit_buckets", 1),
    ] {
        let rows = doomed_before.get(table).copied().unwrap_or_default();
        assert!(
            rows >= at_least,
            "{table}: {rows} rows, expected {at_least} or more"
        );
    }

    // The dry run counts what would go and deletes nothing.
    let counted = delete_tenant(env, &doomed.api.tenant_id, &["--dry-run"]).await?;
    assert_eq!(counted["dry_run"], true, "{counted}");
    for (table, rows) in counted["rows"].as_object().context("rows")? {
        if let Some(before) = doomed_before.get(table) {
            assert_eq!(rows.as_i64(), Some(*before), "{table} in {counted}");
        }
    }
    assert_eq!(rows_of(&counted, "user_sessions"), 1, "{counted}");
    // The failed log-in's (the successful one may have left its own, at zero).
    assert!(rows_of(&counted, "login_failures") >= 1, "{counted}");
    assert_eq!(rows_of(&counted, "tenants"), 1, "{counted}");
    assert_eq!(
        rows_per_table(env, &doomed.api.tenant_id).await?,
        doomed_before
    );
    assert_eq!(users.status(&doomed.session, CURRENT_SESSION).await?, 200);

    let deleted = delete_tenant(env, &doomed.api.tenant_id, &["--batch-rows", "2"]).await?;
    assert_eq!(deleted["dry_run"], false, "{deleted}");
    assert_eq!(
        deleted["rows"], counted["rows"],
        "deleted what the dry run counted"
    );

    let doomed_after = rows_per_table(env, &doomed.api.tenant_id).await?;
    let left: Vec<_> = doomed_after
        .iter()
        .filter(|(_, rows)| **rows != 0)
        .collect();
    assert!(left.is_empty(), "rows of the deleted tenant left: {left:?}");
    assert_eq!(
        count(
            env,
            "SELECT count(*) AS count FROM tenants WHERE id = $1::uuid",
            &doomed.api.tenant_id
        )
        .await?,
        0
    );
    assert_eq!(
        count(
            env,
            "SELECT count(*) AS count FROM user_sessions WHERE user_id = $1::uuid",
            &doomed.user_id
        )
        .await?,
        0
    );
    assert_eq!(
        count(
            env,
            "SELECT count(*) AS count FROM login_failures WHERE position($1 IN key) > 0",
            &doomed.email
        )
        .await?,
        0
    );
    assert_eq!(rows_per_table(env, &kept.api.tenant_id).await?, kept_before);

    // Its credentials are refused; the other tenant's work. Its key was cached by the api, which
    // drops it when the deletion's notification arrives (fpctl deleted it in its own process);
    // until then the key is answered as live, for a tenant whose config is gone (404).
    doomed.api.refused_within(KEY_REVOCATION_PATIENCE).await?;
    let (status, answer) = doomed
        .api
        .send(Method::GET, "/api/v2/webhooks/config", None)
        .await?;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(users.status(&doomed.session, CURRENT_SESSION).await?, 401);
    let (status, answer) = kept
        .api
        .send(Method::GET, "/api/v2/webhooks/config", None)
        .await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(users.status(&kept.session, CURRENT_SESSION).await?, 200);

    // The retry arrives: it is dropped, not sent, and leaves no row.
    let sent_before = receiver.requests_to("/doomed");
    let dispatcher = pipeline.dispatchers[0];
    let handled_before = metric(dispatcher, "fp_dispatcher_messages_handled_total").await?;
    release_parked_retry(env).await?;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while metric(dispatcher, "fp_dispatcher_messages_handled_total").await? == handled_before {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the dispatcher did not handle the retry"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        receiver.requests_to("/doomed"),
        sent_before,
        "the retry was sent"
    );
    let dropped_line = env.service_logs()?.into_iter().any(|(name, log)| {
        name.starts_with("fp-dispatcher")
            && log
                .lines()
                .any(|line| line.contains("dropped, not sent") && line.contains(&refused_delivery))
    });
    assert!(dropped_line, "the dispatcher did not log the dropped retry");

    // An attempt record arriving after the deletion is dropped by log-ingest.
    publish_late_attempt_record(env, &doomed.api.tenant_id).await?;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while metric(pipeline.log_ingest, "fp_log_ingest_records_dropped_total").await? == 0 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "log-ingest did not drop the late record"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let doomed_at_last = rows_per_table(env, &doomed.api.tenant_id).await?;
    assert_eq!(
        doomed_at_last, doomed_after,
        "rows came back for the deleted tenant"
    );

    // The other tenant is still delivered to.
    let id = kept.api.submit("after the deletion", None).await?;
    receiver
        .wait_for_request(PATIENCE, |request| {
            request.target == "/kept" && request.created_submission() == Some(id)
        })
        .await?;
    kept.api
        .logs_until(PATIENCE, |entries| {
            entries
                .iter()
                .filter(|entry| entry["response_code"] == 200)
                .count()
                == 2
        })
        .await?;

    // Deleted is deleted: the id is unknown now.
    let again = env
        .fpctl_output(&["tenant", "delete", &doomed.api.tenant_id])
        .await?;
    assert!(!again.status.success());
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(said.contains("no tenant with id"), "{said}");
    Ok(())
}

/// Moves the retry job parked in the delay queue to the retry queue, as its delay running out
/// would.
async fn release_parked_retry(env: &TestEnvironment) -> anyhow::Result<()> {
    let broker = Broker::connect(&broker_url(), &env.namespace).await?;
    let delay_queue = broker.names.delay_queue(RETRY_DELAY);
    let mut parked = broker.consume(&delay_queue, "tenant-deletion-test", 1);
    let job = tokio::time::timeout(PATIENCE, parked.next())
        .await
        .with_context(|| format!("no retry job in {delay_queue}"))?
        .context("the broker closed")?;
    broker
        .publisher()
        .publish(&OutgoingMessage {
            exchange: "",
            routing_key: &broker.names.retry_queue,
            message_id: &Uuid::now_v7().to_string(),
            parent: None,
            payload: &job.data,
            headers: &[],
            expiration: None,
        })
        .await?;
    fp_broker::ack(&job).await?;
    drop(parked);
    broker.close().await;
    Ok(())
}

/// Publishes the outcome record of an attempt of the tenant, as a dispatcher finishing one after
/// the deletion would.
async fn publish_late_attempt_record(env: &TestEnvironment, tenant_id: &str) -> anyhow::Result<()> {
    let record = v1::DeliveryAttempt {
        attempt_id: Uuid::now_v7().to_string(),
        delivery_id: Uuid::now_v7().to_string(),
        event_id: Uuid::now_v7().to_string(),
        tenant_id: tenant_id.to_owned(),
        event_type: "submission.created".into(),
        url: "https://127.0.0.1/doomed".into(),
        attempt_number: 1,
        attempted_at: Some(timestamp_from(chrono::Utc::now())),
        request_body: b"{}".to_vec(),
        response_status: Some(200),
        r#final: true,
        ..v1::DeliveryAttempt::default()
    };
    let broker = Broker::connect(&broker_url(), &env.namespace).await?;
    let published = publish_attempt_record(&broker, &record).await;
    broker.close().await;
    Ok(published?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_deletion_has_cut_the_tenant_off_and_finishes_when_run_again()
-> anyhow::Result<()> {
    let mut env = TestEnvironment::new("tenant_resume").await?;
    let api = start_api(&mut env).await?;
    let outcome = resume_scenario(&env, api).await;
    env.finish_after(outcome).await
}

async fn resume_scenario(env: &TestEnvironment, api: std::net::SocketAddr) -> anyhow::Result<()> {
    let doomed = TenantApi::create(env, api, "doomed").await?;
    let tenant_id: Uuid = doomed.tenant_id.parse()?;
    let attempts: Vec<_> = (0..5)
        .map(|minutes| {
            fp_testkit::seed::attempt_row(
                tenant_id,
                chrono::Utc::now() - chrono::TimeDelta::minutes(minutes),
            )
        })
        .collect();
    let mut conn = fp_store::connect(&env.database_url).await?;
    fp_store::attempts::insert_batch(&mut conn, &attempts).await?;

    // Interrupted after its first step and one batch of attempts.
    let cut = fp_store::tenant_deletion::cut_off(&mut conn, tenant_id)
        .await?
        .context("the tenant exists")?;
    assert_eq!(cut.of("api_keys"), 1, "{cut:?}");
    let batch = fp_store::tenant_deletion::delete_attempt_batch(&mut conn, tenant_id, 2).await?;
    assert_eq!(batch, 2);
    let (status, answer) = doomed
        .send(Method::GET, "/api/v2/webhooks/config", None)
        .await?;
    assert_eq!(
        status, 401,
        "its key is refused from the first step on: {answer}"
    );

    let counted = delete_tenant(env, &doomed.tenant_id, &["--dry-run"]).await?;
    assert_eq!(rows_of(&counted, "delivery_attempts"), 3, "{counted}");
    assert_eq!(rows_of(&counted, "api_keys"), 0, "{counted}");
    assert_eq!(rows_of(&counted, "tenants"), 1, "{counted}");
    assert_eq!(counted["total"], 4, "{counted}");

    // A table with tenant rows the deletion does not know stops it before it deletes anything.
    diesel::sql_query("CREATE TABLE tenant_notes (tenant_id uuid NOT NULL, note text NOT NULL)")
        .execute(&mut conn)
        .await?;
    let refused = env
        .fpctl_output(&["tenant", "delete", &doomed.tenant_id])
        .await?;
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("tenant_notes"), "{said}");
    diesel::sql_query("DROP TABLE tenant_notes")
        .execute(&mut conn)
        .await?;

    let finished = delete_tenant(env, &doomed.tenant_id, &[]).await?;
    assert_eq!(rows_of(&finished, "delivery_attempts"), 3, "{finished}");
    assert_eq!(rows_of(&finished, "tenants"), 1, "{finished}");
    let left: Vec<_> = rows_per_table(env, &doomed.tenant_id)
        .await?
        .into_iter()
        .filter(|(_, rows)| *rows != 0)
        .collect();
    assert!(left.is_empty(), "rows left: {left:?}");

    // Only a whole UUID names a tenant.
    let prefix = &doomed.tenant_id[..8];
    let refused = env.fpctl_output(&["tenant", "delete", prefix]).await?;
    assert!(!refused.status.success());
    Ok(())
}

/// Until an api hears a deletion's notification, it still takes a key of the deleted tenant that
/// it had cached. A write made with it then names a tenant that is gone: it is refused as an
/// invalid key (401), not failed as an internal error, and leaves no row behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_with_a_key_cached_past_its_tenants_deletion_are_refused_and_leave_nothing()
-> anyhow::Result<()> {
    let receiver = TlsReceiver::start(
        "127.0.0.1:0".parse()?,
        Arc::new(|_, _| CannedResponse::new(200, "noted")),
    )
    .await?;
    let mut env = TestEnvironment::new("tenant_cached_key").await?;
    env.trust_receiver(&receiver)?;
    let api = start_api(&mut env).await?;
    listeners_reach(&env, &fp_store::key_revocations::CHANNEL, 1).await?;
    let outcome = cached_key_scenario(&env, api, &receiver).await;
    env.finish_after(outcome).await
}

async fn cached_key_scenario(
    env: &TestEnvironment,
    api: std::net::SocketAddr,
    receiver: &TlsReceiver,
) -> anyhow::Result<()> {
    let mut conn = fp_store::connect(&env.database_url).await?;
    // The api tells a deleted tenant's write from a failure by its foreign key's name: every
    // foreign key to `tenants` has a name of that form, and no other foreign key does.
    let foreign_keys = async |conn: &mut fp_store::PgConnection, to_tenants: bool| {
        diesel::sql_query(
            "SELECT conname::text AS constraint_name FROM pg_constraint \
             WHERE contype = 'f' AND (confrelid = 'tenants'::regclass) = $1",
        )
        .bind::<diesel::sql_types::Bool, _>(to_tenants)
        .load::<ConstraintName>(conn)
        .await
        .map(|names| {
            names
                .into_iter()
                .map(|name| name.constraint_name)
                .collect::<Vec<_>>()
        })
    };
    let tenant_keys = foreign_keys(&mut conn, true).await?;
    assert!(tenant_keys.len() >= 5, "{tenant_keys:?}");
    let named_as_tenant = |name: &String| name.ends_with(fp_store::TENANT_FOREIGN_KEY_SUFFIX);
    assert!(tenant_keys.iter().all(named_as_tenant), "{tenant_keys:?}");
    let other_keys = foreign_keys(&mut conn, false).await?;
    assert!(!other_keys.iter().any(named_as_tenant), "{other_keys:?}");

    let doomed = TenantApi::create(env, api, "doomed").await?;
    let url = receiver.url("/doomed");
    doomed.configure(&url, Some("a-webhook-secret")).await?;
    // The key is cached now. With the key's deletion trigger off, the api never hears the
    // deletion, as if its notification were still on the way.
    diesel::sql_query("ALTER TABLE api_keys DISABLE TRIGGER api_key_deleted")
        .execute(&mut conn)
        .await?;
    delete_tenant(env, &doomed.tenant_id, &[]).await?;
    assert_eq!(
        doomed.config_status().await?,
        404,
        "the cached key is still taken (its tenant has no config any more)"
    );

    let submission = serde_json::json!({
        "campaign_id": 1,
        "star_rating": 4,
        "text_feedback": "after the deletion",
    })
    .to_string();
    let config = serde_json::json!({"url": url, "events": ["submission.created"]}).to_string();
    for (method, path, body) in [
        (Method::POST, "/api/v2/submissions", submission.as_str()),
        (Method::PUT, "/api/v2/webhooks/config", config.as_str()),
        (
            Method::PUT,
            "/api/v2/webhooks/retention",
            r#"{"payload_days": 7}"#,
        ),
        (Method::POST, "/api/v2/api-keys", r#"{"name": "late"}"#),
    ] {
        let (status, answer) = doomed.send(method.clone(), path, Some(body)).await?;
        assert_eq!(status, 401, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["code"], "unauthorized", "{answer}");
    }
    // With no config left, a test event has nowhere to go.
    let (status, answer) = doomed
        .send(Method::POST, "/api/v2/webhooks/test", None)
        .await?;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(
        doomed.config_status().await?,
        404,
        "the key was still cached throughout, so the 401s came from the writes"
    );

    let left: Vec<_> = rows_per_table(env, &doomed.tenant_id)
        .await?
        .into_iter()
        .filter(|(_, rows)| *rows != 0)
        .collect();
    assert!(
        left.is_empty(),
        "rows written for the deleted tenant: {left:?}"
    );
    assert_eq!(
        count(
            env,
            "SELECT count(*) AS count FROM tenants WHERE id = $1::uuid",
            &doomed.tenant_id
        )
        .await?,
        0
    );
    Ok(())
}
