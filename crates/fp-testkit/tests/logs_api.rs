//! `GET /api/v2/webhooks/logs` filters and keyset paging against seeded attempts in the real
//! database, and tenant isolation under every filter.

use std::collections::HashSet;

use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};
use fp_store::attempts::AttemptRow;
use fp_testkit::environment::TestEnvironment;
use fp_testkit::pipeline::{TenantApi, start_api};

use uuid::Uuid;

const EVENT_TYPES: [&str; 2] = ["submission.created", "submission.status_changed"];
const STATUSES: [Option<i32>; 6] = [Some(200), Some(201), Some(404), Some(500), Some(503), None];

fn day(n: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 1 + n, 10, 30, 0)
        .single()
        .unwrap_or_default()
}

/// Attempts spread over event types, answers and days.
fn seeded(tenant_id: Uuid, count: u32) -> Vec<AttemptRow> {
    (0..count)
        .map(|n| AttemptRow {
            id: Uuid::now_v7(),
            delivery_id: Uuid::now_v7(),
            event_id: Uuid::now_v7(),
            tenant_id,
            event_type: EVENT_TYPES[n as usize % 2].to_owned(),
            url: "https://example.com/hook".to_owned(),
            attempt_number: 1,
            // Two attempts share each day, so paging must order by id within a timestamp too.
            attempted_at: day(n / 2),
            duration_ms: 12,
            request_headers: serde_json::json!([]),
            request_body: b"{}".to_vec(),
            response_status: STATUSES[n as usize % STATUSES.len()],
            response_headers: serde_json::json!([]),
            response_body: Vec::new(),
            response_truncated: false,
            error_kind: None,
            error_message: None,
            is_final: true,
            next_retry_at: None,
        })
        .collect()
}

async fn ids_for(api: &TenantApi, query: &str) -> anyhow::Result<Vec<String>> {
    let (status, page) = api
        .send(
            reqwest::Method::GET,
            &format!("/api/v2/webhooks/logs?limit=200&{query}"),
            None,
        )
        .await?;
    anyhow::ensure!(status == 200, "{query}: {status} {page}");
    Ok(page["data"]
        .as_array()
        .context("data")?
        .iter()
        .filter_map(|entry| entry["id"].as_str().map(str::to_owned))
        .collect())
}

/// What a filter should return, worked out here from the seed, newest first.
fn expected(rows: &[AttemptRow], keep: impl Fn(&AttemptRow) -> bool) -> Vec<String> {
    let mut kept: Vec<&AttemptRow> = rows.iter().filter(|row| keep(row)).collect();
    kept.sort_by_key(|row| std::cmp::Reverse((row.attempted_at, row.id)));
    kept.iter().map(|row| row.id.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_combine_pages_cover_everything_once_and_tenants_stay_apart() -> anyhow::Result<()>
{
    let mut env = TestEnvironment::new("logs").await?;
    let api_address = start_api(&mut env).await?;
    let alice = TenantApi::create(&env, api_address, "Alice").await?;
    let bob = TenantApi::create(&env, api_address, "Bob").await?;
    let alice_rows = seeded(Uuid::parse_str(&alice.tenant_id)?, 24);
    let bob_rows = seeded(Uuid::parse_str(&bob.tenant_id)?, 5);
    let mut conn = fp_store::connect(&env.database_url).await?;
    fp_store::attempts::insert_batch(&mut conn, &alice_rows).await?;
    fp_store::attempts::insert_batch(&mut conn, &bob_rows).await?;

    let in_range = |row: &AttemptRow| row.attempted_at >= day(3) && row.attempted_at < day(8);
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("", expected(&alice_rows, |_| true)),
        (
            "event_type=submission.created",
            expected(&alice_rows, |r| r.event_type == "submission.created"),
        ),
        (
            "status=404",
            expected(&alice_rows, |r| r.response_status == Some(404)),
        ),
        (
            "status=2xx",
            expected(&alice_rows, |r| {
                r.response_status.is_some_and(|c| (200..300).contains(&c))
            }),
        ),
        (
            "status=5xx",
            expected(&alice_rows, |r| r.response_status.is_some_and(|c| c >= 500)),
        ),
        (
            "status=none",
            expected(&alice_rows, |r| r.response_status.is_none()),
        ),
        (
            "from=2024-03-04T10:30:00Z&to=2024-03-09T10:30:00Z",
            expected(&alice_rows, in_range),
        ),
        (
            "event_type=submission.status_changed&status=5xx&from=2024-03-04T10:30:00Z&to=2024-03-09T10:30:00Z",
            expected(&alice_rows, |r| {
                r.event_type == "submission.status_changed"
                    && r.response_status.is_some_and(|c| c >= 500)
                    && in_range(r)
            }),
        ),
    ];
    let bob_ids: HashSet<String> = bob_rows.iter().map(|row| row.id.to_string()).collect();
    let alice_ids: HashSet<String> = alice_rows.iter().map(|row| row.id.to_string()).collect();
    for (query, want) in &cases {
        assert!(
            !want.is_empty(),
            "{query}: a case that selects nothing proves little"
        );
        assert_eq!(&ids_for(&alice, query).await?, want, "{query}");
        // Bob sees only his own under the same filter.
        let bobs = ids_for(&bob, query).await?;
        assert!(
            bobs.iter()
                .all(|id| bob_ids.contains(id) && !alice_ids.contains(id)),
            "{query}"
        );
    }

    // Paging with next_cursor returns every entry exactly once, in order.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/api/v2/webhooks/logs?limit=5".to_owned(),
            Some(cursor) => format!("/api/v2/webhooks/logs?limit=5&cursor={cursor}"),
        };
        let (status, page) = alice.send(reqwest::Method::GET, &path, None).await?;
        assert_eq!(status, 200, "{page}");
        let entries = page["data"].as_array().context("data")?;
        assert!(entries.len() <= 5);
        paged.extend(
            entries
                .iter()
                .filter_map(|e| e["id"].as_str().map(str::to_owned)),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged, expected(&alice_rows, |_| true));

    // Bad parameters name themselves.
    for (query, field) in [
        ("status=6xx", "status"),
        ("event_type=submission.deleted", "event_type"),
        ("from=yesterday", "from"),
        ("cursor=bm9wZQ", "cursor"),
        ("limit=0", "limit"),
    ] {
        let (status, error) = alice
            .send(
                reqwest::Method::GET,
                &format!("/api/v2/webhooks/logs?{query}"),
                None,
            )
            .await?;
        assert_eq!(status, 422, "{query}: {error}");
        assert_eq!(error["error"]["field"], field, "{query}: {error}");
    }
    env.finish().await
}
