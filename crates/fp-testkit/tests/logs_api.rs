//! `GET /api/v2/webhooks/logs` filters and keyset paging against seeded attempts in the real
//! database, and tenant isolation under every filter.

use std::collections::HashSet;

use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};
use fp_store::attempts::{AttemptRow, StoredHeaders};
use fp_testkit::environment::TestEnvironment;
use fp_testkit::pipeline::{TenantApi, start_api};
use fp_testkit::seed::attempt_row;

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
            event_type: EVENT_TYPES[n as usize % 2].to_owned(),
            response_status: STATUSES[n as usize % STATUSES.len()],
            // Two attempts share each day, so paging must order by id within a timestamp too.
            ..attempt_row(tenant_id, day(n / 2))
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

/// Three attempts of one delivery (500, timeout, 200), with headers as the dispatcher stores them.
fn one_delivery(tenant_id: Uuid) -> Vec<AttemptRow> {
    let delivery_id = Uuid::now_v7();
    let event_id = Uuid::now_v7();
    [
        (Some(500), None),
        (None, Some("timeout")),
        (Some(200), None),
    ]
    .into_iter()
    .enumerate()
    .map(|(index, (status, error_kind))| AttemptRow {
        delivery_id,
        event_id,
        attempt_number: index as i32 + 1,
        duration_ms: 30,
        request_headers: StoredHeaders::of([
            ("Content-Type", "application/json"),
            ("X-FeedbackPulse-Delivery", &delivery_id.to_string()),
        ]),
        request_body: br#"{"event":"submission.created"}"#.to_vec(),
        response_status: status,
        response_headers: StoredHeaders::of([(
            "x-receiver",
            format!("attempt {}", index + 1).as_str(),
        )]),
        response_body: b"ok".to_vec(),
        error_kind: error_kind.map(str::to_owned),
        error_message: error_kind.map(|_| "no answer within 15 s".to_owned()),
        is_final: index == 2,
        ..attempt_row(tenant_id, day(20 + index as u32))
    })
    .collect()
}

fn data_ids(page: &serde_json::Value) -> Vec<String> {
    page["data"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter_map(|entry| entry["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn details_show_headers_and_the_whole_delivery_and_admins_see_every_tenant()
-> anyhow::Result<()> {
    let mut env = TestEnvironment::new("logdetail").await?;
    let api_address = start_api(&mut env).await?;
    let alice = TenantApi::create(&env, api_address, "Alice").await?;
    let bob = TenantApi::create(&env, api_address, "Bob").await?;
    let alice_delivery = one_delivery(Uuid::parse_str(&alice.tenant_id)?);
    let bob_rows = seeded(Uuid::parse_str(&bob.tenant_id)?, 4);
    let mut conn = fp_store::connect(&env.database_url).await?;
    fp_store::attempts::insert_batch(&mut conn, &alice_delivery).await?;
    fp_store::attempts::insert_batch(&mut conn, &bob_rows).await?;

    // A detail: the middle attempt, with its headers and all three attempts in order.
    let middle = &alice_delivery[1];
    let (status, detail) = alice
        .send(
            reqwest::Method::GET,
            &format!("/api/v2/webhooks/logs/{}", middle.id),
            None,
        )
        .await?;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["id"], middle.id.to_string());
    assert_eq!(detail["error"]["kind"], "timeout");
    assert_eq!(
        detail["request_headers"][1]["name"],
        "X-FeedbackPulse-Delivery"
    );
    assert_eq!(
        detail["request_headers"][1]["value"],
        middle.delivery_id.to_string()
    );
    assert_eq!(detail["response_headers"][0]["value"], "attempt 2");
    let attempts = detail["attempts"].as_array().context("attempts")?;
    let numbers: Vec<_> = attempts
        .iter()
        .map(|a| a["attempt_number"].clone())
        .collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert_eq!(attempts[0]["response_code"], 500);
    assert_eq!(attempts[2]["response_code"], 200);

    // Another tenant's entry, a random id and a non-id are all simply not found.
    for path in [
        format!("/api/v2/webhooks/logs/{}", middle.id),
        format!("/api/v2/webhooks/logs/{}", Uuid::now_v7()),
        "/api/v2/webhooks/logs/not-an-id".to_owned(),
    ] {
        let (status, error) = bob.send(reqwest::Method::GET, &path, None).await?;
        assert_eq!(status, 404, "{path}: {error}");
        assert_eq!(error["error"]["code"], "not_found");
    }

    // Roles: a tenant key may not use the admin routes; a superadmin key only those.
    let (status, error) = alice
        .send(reqwest::Method::GET, "/api/v2/admin/webhooks/logs", None)
        .await?;
    assert_eq!(status, 403, "{error}");
    assert_eq!(error["error"]["code"], "forbidden");
    let created: serde_json::Value = serde_json::from_str(
        &env.fpctl(&["key", "create", "--superadmin", "--name", "ops"])
            .await?,
    )?;
    let admin = TenantApi {
        key: created["api_key"].as_str().context("api_key")?.to_owned(),
        tenant_id: String::new(),
        base: alice.base.clone(),
        http: alice.http.clone(),
    };
    let (status, error) = admin
        .send(reqwest::Method::GET, "/api/v2/webhooks/logs", None)
        .await?;
    assert_eq!(status, 403, "{error}");

    // The admin view: both tenants, newest first, each entry naming its tenant.
    let (status, page) = admin
        .send(
            reqwest::Method::GET,
            "/api/v2/admin/webhooks/logs?limit=200",
            None,
        )
        .await?;
    assert_eq!(status, 200, "{page}");
    let mut everyone: Vec<&AttemptRow> = alice_delivery.iter().chain(&bob_rows).collect();
    everyone.sort_by_key(|row| std::cmp::Reverse((row.attempted_at, row.id)));
    let want: Vec<String> = everyone.iter().map(|row| row.id.to_string()).collect();
    assert_eq!(data_ids(&page), want);
    assert_eq!(page["data"][0]["tenant_id"], alice.tenant_id);

    // Filtered to one tenant, with the tenants' filters, paged by cursor.
    let (status, page) = admin
        .send(
            reqwest::Method::GET,
            &format!(
                "/api/v2/admin/webhooks/logs?tenant_id={}&limit=2",
                bob.tenant_id
            ),
            None,
        )
        .await?;
    assert_eq!(status, 200, "{page}");
    let mut bob_seen = data_ids(&page);
    let cursor = page["next_cursor"].as_str().context("a second page")?;
    let (_, page) = admin
        .send(
            reqwest::Method::GET,
            &format!(
                "/api/v2/admin/webhooks/logs?tenant_id={}&limit=2&cursor={cursor}",
                bob.tenant_id
            ),
            None,
        )
        .await?;
    bob_seen.extend(data_ids(&page));
    assert_eq!(bob_seen, expected(&bob_rows, |_| true));
    let (_, page) = admin
        .send(
            reqwest::Method::GET,
            &format!(
                "/api/v2/admin/webhooks/logs?tenant_id={}&status=5xx",
                alice.tenant_id
            ),
            None,
        )
        .await?;
    assert_eq!(data_ids(&page), [alice_delivery[0].id.to_string()]);
    let (status, error) = admin
        .send(
            reqwest::Method::GET,
            "/api/v2/admin/webhooks/logs?tenant_id=alice",
            None,
        )
        .await?;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"]["field"], "tenant_id");

    // The admin detail of Alice's entry names her.
    let (status, detail) = admin
        .send(
            reqwest::Method::GET,
            &format!("/api/v2/admin/webhooks/logs/{}", middle.id),
            None,
        )
        .await?;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["tenant_id"], alice.tenant_id);
    assert_eq!(detail["attempts"].as_array().map(Vec::len), Some(3));
    env.finish().await
}
