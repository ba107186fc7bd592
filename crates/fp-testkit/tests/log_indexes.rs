//! The log pages stay index scans as the attempt table grows: with 40,000 attempts over 80
//! tenants, PostgreSQL plans every page (tenant and admin, first and deep, with any filter) as a
//! walk of an index in page order, and a delivery's attempts through their own index. So do the
//! deliveries view's pages (one row per delivery), and its search goes to the delivery's or the
//! event's rows through their indexes.
//!
//! The table is partitioned by day (the 40,000 attempts span 28 days, so 28 partitions): a page is
//! an (ordered or merged) append of each partition's copy of the index, walked in page order, never
//! a scan of a whole partition or a sort.

use std::collections::HashSet;

use chrono::{Duration, TimeZone, Utc};
use diesel::QueryableByName;
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

/// The plan's nodes (`Limit`, `Merge Append`, `Index Scan using … on …`), without their detail
/// lines (`Sort Key: …`, `Index Cond: …`) or costs.
fn plan_nodes(plan: &str) -> Vec<&str> {
    plan.lines()
        .filter_map(|line| {
            let (node, _) = line.split_once("  (cost=")?;
            Some(node.trim_start().trim_start_matches("->").trim())
        })
        .collect()
}

/// The index each index scan of the plan reads (`Index Scan using X on …`, `Index Only Scan
/// using X on …`, `Bitmap Index Scan on X`).
fn scanned_indexes<'a>(nodes: &[&'a str]) -> Vec<&'a str> {
    nodes
        .iter()
        .filter_map(|node| {
            let index = if let Some(bitmap) = node.strip_prefix("Bitmap Index Scan on ") {
                bitmap
            } else if node.starts_with("Index Scan") || node.starts_with("Index Only Scan") {
                node.split(" using ").nth(1)?
            } else {
                return None;
            };
            index.split(' ').next()
        })
        .collect()
}

/// The partitioned index `parent` and its copy on every partition.
async fn index_family(
    conn: &mut fp_store::PgConnection,
    parent: &str,
) -> anyhow::Result<HashSet<String>> {
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    let children: Vec<Name> = diesel::sql_query(
        "SELECT c.relname::text AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = $1::regclass",
    )
    .bind::<diesel::sql_types::Text, _>(parent)
    .load(conn)
    .await?;
    anyhow::ensure!(!children.is_empty(), "{parent} is on no partition");
    Ok(children
        .into_iter()
        .map(|child| child.name)
        .chain([parent.to_owned()])
        .collect())
}

/// No node reads a whole table or partition, or sorts: `Merge Append` merges index walks that
/// are already in order, so its `Sort Key` line is not a sort.
fn assert_no_scan_or_sort(name: &str, plan: &str) {
    let nodes = plan_nodes(plan);
    assert!(!nodes.is_empty(), "{name}: no plan:\n{plan}");
    for node in &nodes {
        assert!(
            !node.starts_with("Seq Scan")
                && !node.starts_with("Bitmap Heap Scan")
                && !node.contains("Sort"),
            "{name}: {node}:\n{plan}"
        );
    }
}

/// The plan walks `family` (one partitioned index), and only it: every index scan is of one of its
/// copies, there is at least one, and nothing else reads the table or sorts.
fn assert_walks_only(name: &str, plan: &str, family: &HashSet<String>) {
    assert_no_scan_or_sort(name, plan);
    let scanned = scanned_indexes(&plan_nodes(plan));
    assert!(
        !scanned.is_empty() && scanned.iter().all(|index| family.contains(*index)),
        "{name}: expected only walks of {family:?}:\n{plan}"
    );
}

/// The plan walks some copy of `family`'s index (among others).
fn assert_walks(name: &str, plan: &str, family: &HashSet<String>) {
    assert!(
        scanned_indexes(&plan_nodes(plan))
            .iter()
            .any(|index| family.contains(*index)),
        "{name}: expected a walk of one of {family:?}:\n{plan}"
    );
}

#[test]
fn the_plan_reader_tells_nodes_from_their_details() {
    let plan = "Limit  (cost=0.29..9.12 rows=51 width=1)\n\
                  ->  Merge Append  (cost=0.29..9.12 rows=51 width=1)\n\
                        Sort Key: delivery_attempts.attempted_at DESC, delivery_attempts.id DESC\n\
                        ->  Index Scan using p1_tenant_id_attempted_at_id_idx on p1 delivery_attempts_1  (cost=0.29..9.12 rows=51 width=1)\n\
                              Index Cond: (tenant_id = 'x'::uuid)\n\
                        ->  Sort  (cost=0.29..9.12 rows=51 width=1)\n\
                              ->  Seq Scan on p2 delivery_attempts_2  (cost=0.29..9.12 rows=51 width=1)";
    let nodes = plan_nodes(plan);
    assert_eq!(
        nodes,
        [
            "Limit",
            "Merge Append",
            "Index Scan using p1_tenant_id_attempted_at_id_idx on p1 delivery_attempts_1",
            "Sort",
            "Seq Scan on p2 delivery_attempts_2"
        ]
    );
    assert_eq!(
        scanned_indexes(&nodes),
        ["p1_tenant_id_attempted_at_id_idx"]
    );
    let family: HashSet<String> = ["p1_tenant_id_attempted_at_id_idx".to_owned()].into();
    let caught = std::panic::catch_unwind(|| assert_walks_only("sorted", plan, &family));
    assert!(
        caught.is_err(),
        "a Sort over a Seq Scan must fail the check"
    );
    let merged_walks = plan.lines().take(5).collect::<Vec<_>>().join("\n");
    assert_walks_only("merged walks", &merged_walks, &family);
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
    let partitions = fp_store::partitions::attempt_partitions(&mut conn).await?;
    assert_eq!(partitions.len(), 28, "one partition a day: {partitions:?}");
    let tenant_time = index_family(&mut conn, "delivery_attempts_tenant_time").await?;
    let time = index_family(&mut conn, "delivery_attempts_time").await?;
    let delivery = index_family(&mut conn, "delivery_attempts_delivery").await?;
    let event = index_family(&mut conn, "delivery_attempts_event").await?;
    for (name, query, index) in cases {
        let plan = fp_store::attempts::explain_page(&mut conn, &query)
            .await?
            .join("\n");
        println!("{name}:\n{plan}\n");
        let family = if index == "delivery_attempts_time" {
            &time
        } else {
            &tenant_time
        };
        assert_walks_only(name, &plan, family);
    }
    let plan = fp_store::attempts::explain_of_delivery(&mut conn, tenants[3], Uuid::now_v7())
        .await?
        .join("\n");
    assert_walks("of_delivery", &plan, &delivery);
    assert!(
        plan_nodes(&plan)
            .iter()
            .all(|node| !node.starts_with("Seq Scan")),
        "{plan}"
    );

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
        assert!(
            plan_nodes(&plan)
                .iter()
                .all(|node| !node.starts_with("Seq Scan")),
            "{name}:\n{plan}"
        );
        assert_walks(name, &plan, &delivery);
        if in_page_order {
            assert_no_scan_or_sort(name, &plan);
            assert_walks(name, &plan, &tenant_time);
        } else {
            assert_walks(name, &plan, &event);
        }
    }
    env.finish().await
}
