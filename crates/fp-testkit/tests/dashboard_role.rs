//! The dashboard's database role (`database.readonly_role`, granted by `fpctl migrate`) reads the
//! columns the dashboard renders and nothing else: no key or password hash, no webhook secret, no
//! submission or event payload, no session, throttling or rate-limit state. A deployment whose
//! role could read every table (as `fpctl migrate` granted before) is narrowed by its next migrate.

use std::collections::BTreeSet;

use anyhow::Context;
use chrono::{Duration, SubsecRound, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Bool, Text};
use diesel_async::RunQueryDsl;
use fp_store::attempts::{self, AttemptFilter, AttemptQuery, AttemptRow};
use fp_store::deliveries::{self, DeliveryQuery, DeliverySearch};
use fp_store::webhook_config::{self, WebhookConfigRow};
use fp_testkit::environment::TestEnvironment;
use fp_testkit::seed::attempt_row;
use serde_json::Value;
use uuid::Uuid;

const DASHBOARD_ROLE: &str = "fp_dashboard";

#[derive(QueryableByName, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct TableColumn {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
}

#[derive(QueryableByName)]
struct Granted {
    #[diesel(sql_type = Bool)]
    granted: bool,
}

/// Every column of the schema the role may SELECT, through a table-wide grant or its own.
async fn readable_columns(
    conn: &mut fp_store::PgConnection,
) -> anyhow::Result<BTreeSet<TableColumn>> {
    Ok(diesel::sql_query(
        "SELECT table_name::text AS table_name, column_name::text AS column_name \
         FROM information_schema.columns WHERE table_schema = 'public' \
         AND has_column_privilege($1, format('%I.%I', table_schema, table_name), column_name, 'SELECT')",
    )
    .bind::<Text, _>(DASHBOARD_ROLE)
    .load::<TableColumn>(conn)
    .await?
    .into_iter()
    .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_role_reads_only_what_the_dashboard_renders() -> anyhow::Result<()> {
    let env = TestEnvironment::new("readrole").await?;
    let tenant: Value = serde_json::from_str(&env.fpctl(&["tenant", "create", "Alice"]).await?)?;
    let tenant_id: Uuid = tenant["tenant_id"].as_str().context("tenant_id")?.parse()?;
    env.fpctl(&[
        "user",
        "create",
        "--email",
        "admin@alice.example",
        "--password",
        "correct horse battery",
        "--tenant",
        &tenant_id.to_string(),
    ])
    .await?;
    let attempt = AttemptRow {
        response_status: Some(500),
        is_final: false,
        // Microseconds, as PostgreSQL stores them, so the row reads back equal.
        ..attempt_row(
            tenant_id,
            (Utc::now() - Duration::minutes(1)).trunc_subsecs(6),
        )
    };
    let mut app = fp_store::connect(&env.database_url).await?;
    attempts::insert_batch(&mut app, std::slice::from_ref(&attempt)).await?;
    let (event_id, delivery_id) = (attempt.event_id, attempt.delivery_id);

    // A deployment migrated by an earlier version: the role reads every table, secrets included.
    diesel::sql_query(format!(
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {DASHBOARD_ROLE}"
    ))
    .execute(&mut app)
    .await?;
    let readonly_url = env
        .var("FP__DATABASE__READONLY_URL")
        .context("the environment sets the dashboard's URL")?;
    let mut dashboard = fp_store::connect(readonly_url).await?;
    diesel::sql_query("SELECT key_hash FROM api_keys")
        .execute(&mut dashboard)
        .await
        .context("the old grant opens the key hashes")?;
    // Its next migrate narrows it; a second one changes nothing.
    env.fpctl(&["migrate"]).await?;
    let after_first = readable_columns(&mut app).await?;
    env.fpctl(&["migrate"]).await?;
    assert_eq!(readable_columns(&mut app).await?, after_first);

    // Exactly the columns the dashboard queries: every attempt column but when it was ingested,
    // the endpoint's health (not its URL, events or secrets), tenant names, the schema version.
    let every_attempt_column: Vec<TableColumn> = diesel::sql_query(
        "SELECT table_name::text AS table_name, column_name::text AS column_name \
         FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name = 'delivery_attempts'",
    )
    .load(&mut app)
    .await?;
    let mut expected: BTreeSet<TableColumn> = every_attempt_column
        .into_iter()
        .filter(|column| column.column_name != "ingested_at")
        .collect();
    for (table_name, column_name) in [
        ("webhook_configs", "tenant_id"),
        ("webhook_configs", "enabled"),
        ("webhook_configs", "last_success_at"),
        ("webhook_configs", "failing_since"),
        ("webhook_configs", "disabled_at"),
        ("webhook_configs", "disabled_reason"),
        ("tenants", "id"),
        ("tenants", "name"),
        ("__diesel_schema_migrations", "version"),
        // A bulk recovery's progress page (every column: no secret in there).
        ("recoveries", "id"),
        ("recoveries", "tenant_id"),
        ("recoveries", "range_from"),
        ("recoveries", "range_to"),
        ("recoveries", "requested_at"),
        ("recoveries", "delivery_ids"),
        ("recoveries", "skipped_format_changed"),
        ("recoveries", "more"),
        // Which events are about which submission: the deliveries view's search.
        ("submission_events", "event_id"),
        ("submission_events", "tenant_id"),
        ("submission_events", "submission_id"),
    ] {
        expected.insert(TableColumn {
            table_name: table_name.to_owned(),
            column_name: column_name.to_owned(),
        });
    }
    assert_eq!(after_first, expected);
    // SELECT only: nothing to write anywhere.
    let writable: Granted = diesel::sql_query(
        "SELECT coalesce(bool_or(has_table_privilege($1, format('%I.%I', schemaname, tablename), \
         'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')), false) AS granted \
         FROM pg_tables WHERE schemaname = 'public'",
    )
    .bind::<Text, _>(DASHBOARD_ROLE)
    .get_result(&mut app)
    .await?;
    assert!(!writable.granted);

    // Secrets are refused by the server, and so is every table the dashboard does not read.
    for statement in [
        "SELECT key_hash FROM api_keys",
        "SELECT password_hash FROM users",
        "SELECT secret_sealed FROM webhook_configs",
        "SELECT previous_secret_sealed FROM webhook_configs",
        "SELECT url FROM webhook_configs",
        "SELECT events FROM webhook_configs",
        "SELECT ingested_at FROM delivery_attempts",
        "SELECT created_at FROM tenants",
        "SELECT count(*) FROM api_keys",
        "SELECT count(*) FROM users",
        "SELECT count(*) FROM submissions",
        "SELECT payload FROM outbox",
        "SELECT count(*) FROM outbox",
        "SELECT count(*) FROM user_sessions",
        "SELECT count(*) FROM login_failures",
        "SELECT count(*) FROM rate_limit_buckets",
    ] {
        let error = diesel::sql_query(statement)
            .execute(&mut dashboard)
            .await
            .err()
            .with_context(|| format!("the dashboard's role may run `{statement}`"))?;
        assert!(
            error.to_string().contains("permission denied"),
            "{statement}: {error}"
        );
    }

    // What the dashboard runs still works: log pages, a delivery's timeline, the chart and the
    // statistics, the endpoint's health, tenant names, the schema check.
    let filter = AttemptFilter {
        tenant_id: None,
        event_type: None,
        status: None,
        from: Utc::now() - Duration::hours(1),
        to: Utc::now(),
    };
    let query = AttemptQuery {
        limit: 10,
        ..AttemptQuery::default()
    };
    let (rows, more) = attempts::page(&mut dashboard, &query).await?;
    assert_eq!((rows, more), (vec![attempt.clone()], false));
    assert_eq!(
        attempts::find(&mut dashboard, attempt.id, Some(tenant_id)).await?,
        Some(attempt.clone())
    );
    assert_eq!(
        attempts::of_delivery(&mut dashboard, tenant_id, attempt.delivery_id).await?,
        vec![attempt]
    );
    let counts = attempts::counts_per_bucket(&mut dashboard, &filter, 3600).await?;
    assert_eq!(counts.iter().map(|bucket| bucket.failed).sum::<i64>(), 1);
    assert_eq!(
        attempts::summary(&mut dashboard, &filter).await?.attempts,
        1
    );
    let url = "https://hooks.alice.example/feedbackpulse";
    webhook_config::upsert(
        &mut app,
        &WebhookConfigRow {
            tenant_id,
            url: url.to_owned(),
            events: vec!["submission.created".to_owned()],
            secret_sealed: None,
            previous_secret_sealed: None,
            previous_secret_expires_at: None,
            enabled: true,
            updated_at: Utc::now(),
        },
    )
    .await?;
    let failing_since = (Utc::now() - Duration::minutes(5)).trunc_subsecs(6);
    webhook_config::record_failure(
        &mut app,
        tenant_id,
        url,
        failing_since,
        failing_since - Duration::days(5),
    )
    .await?;
    let health = webhook_config::health(&mut dashboard, tenant_id)
        .await?
        .context("the dashboard reads Alice's endpoint health")?;
    assert_eq!(
        (health.enabled, health.failing_since, health.disabled_at),
        (true, Some(failing_since), None)
    );
    let failing = attempts::most_failing_tenants(&mut dashboard, &filter, 10).await?;
    assert_eq!(
        failing
            .iter()
            .map(|tenant| (tenant.tenant_id, tenant.name.as_str(), tenant.failures))
            .collect::<Vec<_>>(),
        vec![(tenant_id, "Alice", 1)]
    );
    assert_eq!(
        attempts::tenant_names(&mut dashboard, &[tenant_id]).await?,
        vec![(tenant_id, "Alice".to_owned())]
    );
    // The deliveries view, searched by the submission the attempt's event is about.
    fp_store::outbox::insert(
        &mut app,
        &fp_store::outbox::OutboxEvent {
            event_id,
            tenant_id,
            event_type: "submission.created".to_owned(),
            payload: b"secret feedback".to_vec(),
            traceparent: String::new(),
            tracestate: String::new(),
            submission_id: Some(7),
        },
    )
    .await?;
    let query = DeliveryQuery {
        search: Some(DeliverySearch::Submission(7)),
        ..DeliveryQuery::of_tenant(tenant_id, 10)
    };
    let (found, _) = deliveries::page(&mut dashboard, &query, "interrupted").await?;
    assert_eq!(
        found.iter().map(|row| row.delivery_id).collect::<Vec<_>>(),
        vec![delivery_id]
    );
    // A recovery's progress page: the recovery, and the manual attempts of its deliveries.
    let recovery = fp_store::recoveries::RecoveryRow {
        id: uuid::Uuid::now_v7(),
        tenant_id,
        range_from: Utc::now() - Duration::days(1),
        range_to: Utc::now(),
        requested_at: (Utc::now() - Duration::hours(1)).trunc_subsecs(6),
        delivery_ids: vec![delivery_id],
        skipped_format_changed: 0,
        more: false,
    };
    fp_store::recoveries::insert(&mut app, &recovery).await?;
    let found = fp_store::recoveries::find(&mut dashboard, tenant_id, recovery.id)
        .await?
        .context("the dashboard reads Alice's recovery")?;
    // The attempt (a failure a minute ago, not manual) is no outcome of the recovery.
    assert_eq!(
        fp_store::recoveries::progress(&mut dashboard, &found, "interrupted").await?,
        fp_store::recoveries::RecoveryProgress {
            delivered: 0,
            failed: 0,
            pending: 1
        }
    );
    fp_store::ensure_migrated(&fp_store::pool(readonly_url, 1)?).await?;
    env.finish().await
}
