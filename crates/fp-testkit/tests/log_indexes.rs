//! The log pages stay index scans as the attempt table grows: with 40,000 attempts over 80
//! tenants, PostgreSQL plans every page (tenant and admin, first and deep, with any filter) as a
//! walk of an index in page order, and a delivery's attempts through their own index. So do the
//! deliveries view's pages (one row per delivery), and its search goes to the delivery's or the
//! event's rows through their indexes.

use chrono::{Duration, TimeZone, Utc};
use diesel_async::RunQueryDsl;
use fp_domain::delivery_state::DeliveryState;
use fp_store::attempts::{AttemptQuery, AttemptRow, StatusFilter};
use fp_store::deliveries::{DeliveryQuery, DeliverySearch};
use fp_testkit::environment::TestEnvironment;
use fp_testkit::seed::attempt_row;
use uuid::Uuid;

const TENANTS: usize = 80;
const ROWS_PER_TENANT: usize = 500;

fn rows_of(tenant_id: Uuid, tenant_index: usize) -> Vec<AttemptRow> {
    let start = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default();
    (0..ROWS_PER_TENANT)
        .map(|n| AttemptRow {
            event_type: if n % 3 == 0 {
                "submission.status_changed"
            } else {
                "submission.created"
            }
            .to_owned(),
            response_status: [Some(200), Some(500), None][n % 3],
            ..attempt_row(
                tenant_id,
                start + Duration::minutes((n * TENANTS + tenant_index) as i64),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_page_is_an_index_scan() -> anyhow::Result<()> {
    let env = TestEnvironment::new("indexes").await?;
    let mut conn = fp_store::connect(&env.database_url).await?;
    let tenants: Vec<Uuid> = (0..TENANTS).map(|_| Uuid::now_v7()).collect();
    for (index, tenant_id) in tenants.iter().enumerate() {
        fp_store::attempts::insert_batch(&mut conn, &rows_of(*tenant_id, index)).await?;
    }
    diesel::sql_query("ANALYZE delivery_attempts")
        .execute(&mut conn)
        .await?;

    let tenant = Some(tenants[7]);
    let deep = Some((
        Utc.with_ymd_and_hms(2026, 1, 20, 0, 0, 0)
            .single()
            .unwrap_or_default(),
        Uuid::max(),
    ));
    let cases = [
        (
            "tenant, first page",
            AttemptQuery {
                tenant_id: tenant,
                limit: 50,
                ..Default::default()
            },
            "delivery_attempts_tenant_time",
        ),
        (
            "tenant, deep page",
            AttemptQuery {
                tenant_id: tenant,
                after: deep,
                limit: 50,
                ..Default::default()
            },
            "delivery_attempts_tenant_time",
        ),
        (
            "tenant, every filter",
            AttemptQuery {
                tenant_id: tenant,
                event_type: Some("submission.created".to_owned()),
                status: Some(StatusFilter::Class(5)),
                from: Some(
                    Utc.with_ymd_and_hms(2026, 1, 3, 0, 0, 0)
                        .single()
                        .unwrap_or_default(),
                ),
                to: Some(
                    Utc.with_ymd_and_hms(2026, 1, 25, 0, 0, 0)
                        .single()
                        .unwrap_or_default(),
                ),
                after: deep,
                limit: 50,
            },
            "delivery_attempts_tenant_time",
        ),
        (
            "tenant, no answer",
            AttemptQuery {
                tenant_id: tenant,
                status: Some(StatusFilter::NoResponse),
                limit: 50,
                ..Default::default()
            },
            "delivery_attempts_tenant_time",
        ),
        (
            "admin, first page",
            AttemptQuery {
                limit: 50,
                ..Default::default()
            },
            "delivery_attempts_time",
        ),
        (
            "admin, deep page, filtered",
            AttemptQuery {
                status: Some(StatusFilter::Exact(500)),
                after: deep,
                limit: 50,
                ..Default::default()
            },
            "delivery_attempts_time",
        ),
    ];
    for (name, query, index) in cases {
        let plan = fp_store::attempts::explain_page(&mut conn, &query)
            .await?
            .join("\n");
        assert!(
            plan.contains(&format!("Index Scan using {index} on delivery_attempts")),
            "{name}: expected an index scan of {index}:\n{plan}"
        );
        assert!(
            !plan.contains("Seq Scan") && !plan.contains("Sort"),
            "{name}:\n{plan}"
        );
        println!("{name}:\n{plan}\n");
    }
    let plan = fp_store::attempts::explain_of_delivery(&mut conn, tenants[3], Uuid::now_v7())
        .await?
        .join("\n");
    assert!(plan.contains("delivery_attempts_delivery"), "{plan}");
    assert!(!plan.contains("Seq Scan"), "{plan}");

    // The deliveries view walks the same index in page order, each row's delivery looked up
    // through its own index; a search goes straight to the delivery's or the event's rows.
    let first = DeliveryQuery::of_tenant(tenants[7], 50);
    let cases = [
        ("deliveries, first page", first.clone(), true),
        (
            "deliveries, deep page",
            DeliveryQuery {
                after: deep,
                ..first.clone()
            },
            true,
        ),
        (
            "deliveries, failed",
            DeliveryQuery {
                state: Some(DeliveryState::Failed),
                ..first.clone()
            },
            true,
        ),
        (
            "deliveries, searched",
            DeliveryQuery {
                search: Some(DeliverySearch::Id(Uuid::now_v7())),
                ..first
            },
            false,
        ),
    ];
    for (name, query, in_page_order) in cases {
        let plan = fp_store::deliveries::explain_page(&mut conn, &query, "interrupted")
            .await?
            .join("\n");
        println!("{name}:\n{plan}\n");
        assert!(!plan.contains("Seq Scan"), "{name}:\n{plan}");
        assert!(
            plan.contains("delivery_attempts_delivery"),
            "{name}:\n{plan}"
        );
        if in_page_order {
            assert!(
                plan.contains(
                    "Index Scan using delivery_attempts_tenant_time on delivery_attempts"
                ) && !plan.contains("Sort"),
                "{name}: expected a walk of delivery_attempts_tenant_time:\n{plan}"
            );
        } else {
            assert!(plan.contains("delivery_attempts_event"), "{name}:\n{plan}");
        }
    }
    env.finish().await
}
