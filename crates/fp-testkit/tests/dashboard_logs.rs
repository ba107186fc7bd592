//! The dashboard's Webhook Logs pages over HTTP, on the real services: filters, keyset paging,
//! the detail page, redelivery through the api to a real receiver, the superadmin's platform view
//! and its summary, German texts. Attempts are seeded straight into the database for exact
//! counts; the redelivery uses a delivery the pipeline really made.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use fp_store::attempts::{AttemptRow, StoredHeaders};
use fp_testkit::dashboard::{DashboardFixture, hidden_field_after, html_escaped, http_session};
use fp_testkit::environment::TestEnvironment;
use fp_testkit::seed::attempt_row;
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(30);

/// What the seed holds, to compare the pages with.
struct Seeded {
    rows: Vec<AttemptRow>,
    acme: Uuid,
    bravo: Uuid,
    /// The middle attempt of a delivery with three attempts (Acme).
    timeline_attempt: Uuid,
    /// An attempt older than the default range (Acme).
    old_attempt: AttemptRow,
}

fn seed(acme: Uuid, bravo: Uuid, now: DateTime<Utc>) -> Seeded {
    let base = (now - TimeDelta::days(2))
        .duration_trunc(TimeDelta::minutes(1))
        .unwrap_or(now);
    let at = |minutes: i64| base + TimeDelta::minutes(minutes);
    let row = |tenant, minutes, event: &str, status: Option<i32>, duration_ms| AttemptRow {
        event_type: event.to_owned(),
        response_status: status,
        duration_ms,
        ..attempt_row(tenant, at(minutes))
    };
    let mut rows = Vec::new();
    for i in 0..60 {
        rows.push(row(acme, i, "submission.created", Some(200), 10 + i));
    }
    for i in 0..10 {
        rows.push(row(
            acme,
            60 + i,
            "submission.status_changed",
            Some(404),
            100 + 3 * i,
        ));
    }
    for i in 0..5 {
        rows.push(row(acme, 70 + i, "webhook.test", Some(503), 1000 + i));
    }
    for i in 0..5 {
        rows.push(AttemptRow {
            error_kind: Some("timeout".to_owned()),
            error_message: Some("no response within 15000 ms".to_owned()),
            ..row(acme, 75 + i, "submission.created", None, 15_000)
        });
    }
    // One delivery, three attempts: two 500s, then a 200.
    let delivery = attempt_row(acme, at(80));
    for (n, status) in [(1, 500), (2, 500), (3, 200)] {
        rows.push(AttemptRow {
            delivery_id: delivery.delivery_id,
            event_id: delivery.event_id,
            attempt_number: n,
            is_final: n == 3,
            response_status: Some(status),
            duration_ms: 30 + 10 * i64::from(n),
            request_headers: StoredHeaders::of([
                ("content-type", "application/json"),
                ("x-feedbackpulse-event", "submission.created"),
            ]),
            request_body: br#"{"event":"submission.created","data":{"text_feedback":"<script>alert(1)</script>"}}"#
                .to_vec(),
            response_headers: StoredHeaders::of([("x-served-by", "receiver-7")]),
            response_body: format!("answer {n}").into_bytes(),
            ..attempt_row(acme, at(79 + i64::from(n)))
        });
    }
    let timeline_attempt = rows[rows.len() - 2].id;
    for i in 0..20 {
        rows.push(AttemptRow {
            attempted_at: at(i) + TimeDelta::seconds(30),
            ..row(bravo, i, "submission.created", Some(500), 200 + 7 * i)
        });
    }
    let old_attempt = attempt_row(acme, now - TimeDelta::days(10));
    Seeded {
        rows,
        acme,
        bravo,
        timeline_attempt,
        old_attempt,
    }
}

/// PostgreSQL's `percentile_cont(0.95)`: linear interpolation between the closest ranks.
fn p95(durations: &[i64]) -> f64 {
    let mut sorted = durations.to_vec();
    sorted.sort_unstable();
    let position = 0.95 * (sorted.len() - 1) as f64;
    let lower = position.floor() as usize;
    let upper = (lower + 1).min(sorted.len() - 1);
    let fraction = position - lower as f64;
    sorted[lower] as f64 + fraction * (sorted[upper] - sorted[lower]) as f64
}

async fn get(client: &reqwest::Client, url: &str) -> anyhow::Result<(u16, String)> {
    let response = client.get(url).send().await?;
    Ok((response.status().as_u16(), response.text().await?))
}

/// Undoes tera's escaping of an attribute value.
fn unescape(text: &str) -> String {
    text.replace("&#x2F;", "/")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The ids of the table's rows, in page order.
fn listed_ids(page: &str) -> Vec<String> {
    page.split("data-attempt-id=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next().map(str::to_owned))
        .collect()
}

/// The href of the link with `id`, unescaped.
fn link(page: &str, id: &str) -> Option<String> {
    let end = page.find(&format!("\" id=\"{id}\""))?;
    let start = page[..end].rfind("href=\"")? + "href=\"".len();
    Some(unescape(&page[start..end]))
}

/// Every entry of a filtered list, following its paging links; checks that each page's links
/// keep `must_keep` (the filters).
async fn walk(
    client: &reqwest::Client,
    base: &str,
    first: &str,
    must_keep: &str,
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut next = Some(first.to_owned());
    let mut pages = 0;
    while let Some(path) = next {
        let (status, page) = get(client, &format!("{base}{path}")).await?;
        anyhow::ensure!(status == 200, "{path} answered {status}: {page}");
        ids.extend(listed_ids(&page));
        next = link(&page, "page-next");
        if let Some(next) = &next {
            anyhow::ensure!(next.contains(must_keep), "{next} lost {must_keep}");
            anyhow::ensure!(next.contains("cursor="), "{next}");
        }
        if pages > 0 {
            let newest = link(&page, "page-first").context("a later page links to the first")?;
            anyhow::ensure!(newest.contains(must_keep) && !newest.contains("cursor="));
        }
        pages += 1;
        anyhow::ensure!(pages < 10, "paging does not end");
    }
    Ok(ids)
}

fn assert_each_once(ids: &[String], expected: &[Uuid], what: &str) {
    let mut listed: Vec<&str> = ids.iter().map(String::as_str).collect();
    listed.sort_unstable();
    let before = listed.len();
    listed.dedup();
    assert_eq!(listed.len(), before, "{what}: an entry was listed twice");
    let mut expected: Vec<String> = expected.iter().map(Uuid::to_string).collect();
    expected.sort_unstable();
    assert_eq!(listed, expected, "{what}");
}

fn ids_where(rows: &[AttemptRow], tenant: Uuid, keep: impl Fn(&AttemptRow) -> bool) -> Vec<Uuid> {
    rows.iter()
        .filter(|row| row.tenant_id == tenant && keep(row))
        .map(|row| row.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_pages_filter_page_show_details_redeliver_and_summarise() -> anyhow::Result<()> {
    let mut env = TestEnvironment::new("dashlogs").await?;
    // The dispatcher sees a saved config at once: the redelivery after a move goes to the new URL.
    env.set("FP__DISPATCHER__CONFIG_CACHE_TTL_MS", "1");
    let outcome = run(&mut env).await;
    env.finish_after(outcome).await
}

async fn run(env: &mut TestEnvironment) -> anyhow::Result<()> {
    let fixture = DashboardFixture::start(env).await?;
    let base = fixture.base.clone();
    let bravo_api = fixture.pipeline.tenant(env, "Bravo & <Sons>").await?;
    let seeded = seed(
        fixture.api.tenant_id.parse()?,
        bravo_api.tenant_id.parse()?,
        Utc::now(),
    );
    let mut conn = fp_store::connect(&env.database_url).await?;
    let mut all_rows = seeded.rows.clone();
    all_rows.push(seeded.old_attempt.clone());
    fp_store::attempts::insert_batch(&mut conn, &all_rows).await?;
    let rows = &seeded.rows;
    let acme = seeded.acme;

    let tenant = http_session(&base, &fixture.tenant_email, &fixture.password, "en").await?;

    // Filters, each walked through its pages: every match once, the filters kept in the links.
    let in_default_range = ids_where(rows, acme, |_| true);
    assert_eq!(in_default_range.len(), 83);
    let everything = walk(&tenant, &base, "/webhooks/logs", "/webhooks/logs").await?;
    assert_each_once(&everything, &in_default_range, "no filter");
    let status = |code: i32| move |row: &AttemptRow| row.response_status == Some(code);
    for (query, expected) in [
        (
            "status=2xx",
            ids_where(rows, acme, |row| {
                row.response_status.is_some_and(|s| (200..300).contains(&s))
            }),
        ),
        ("status=404", ids_where(rows, acme, status(404))),
        (
            "status=5xx",
            ids_where(rows, acme, |row| {
                row.response_status.is_some_and(|s| s >= 500)
            }),
        ),
        (
            "status=none",
            ids_where(rows, acme, |row| row.response_status.is_none()),
        ),
        (
            "event_type=webhook.test",
            ids_where(rows, acme, |row| row.event_type == "webhook.test"),
        ),
        (
            "event_type=submission.created&status=2XX",
            ids_where(rows, acme, |row| {
                row.event_type == "submission.created" && row.response_status == Some(200)
            }),
        ),
    ] {
        let listed = walk(&tenant, &base, &format!("/webhooks/logs?{query}"), query).await?;
        assert_each_once(&listed, &expected, query);
    }
    assert_eq!(
        ids_where(rows, acme, |row| row.response_status == Some(200)).len(),
        61,
        "the 2xx filter spans two pages"
    );
    let old_day = seeded
        .old_attempt
        .attempted_at
        .format("%Y-%m-%d")
        .to_string();
    let range = format!("from={old_day}&to={old_day}");
    let listed = walk(&tenant, &base, &format!("/webhooks/logs?{range}"), &range).await?;
    assert_each_once(&listed, &[seeded.old_attempt.id], "a day long ago");

    // The chart counts the filtered range.
    let (_, page) = get(&tenant, &format!("{base}/webhooks/logs")).await?;
    assert!(page.contains(r#"id="deliveries-chart""#), "{page}");
    assert!(page.contains(r#"role="img""#));
    assert!(
        page.contains("Attempts per 3 hours: 61 succeeded, 22 failed"),
        "{page}"
    );
    assert!(page.contains("the last 7 days are shown"), "{page}");
    assert!(page.contains(r#"<label for="filter-status">"#));
    let (_, page) = get(&tenant, &format!("{base}/webhooks/logs?status=404")).await?;
    assert!(
        page.contains("Attempts per 3 hours: 0 succeeded, 10 failed"),
        "{page}"
    );
    assert!(page.contains(r#"value="404""#), "the form keeps the filter");

    // Bad input: a message next to the field, not a 500.
    let (code, page) = get(
        &tenant,
        &format!("{base}/webhooks/logs?from=yesterday&status=6xx"),
    )
    .await?;
    assert_eq!(code, 400);
    assert!(page.contains(r#"id="filter-from-error""#), "{page}");
    assert!(
        page.contains("Enter a date as YYYY-MM-DD or YYYY-MM-DD HH:MM."),
        "{page}"
    );
    assert!(page.contains(r#"id="filter-status-error""#), "{page}");
    assert!(page.contains(r#"value="yesterday""#), "{page}");
    let (code, _) = get(&tenant, &format!("{base}/webhooks/logs?cursor=nonsense")).await?;
    assert_eq!(code, 400);

    // The detail page: pretty payload (escaped), headers, the delivery's timeline.
    let detail_path = format!("/webhooks/logs/{}", seeded.timeline_attempt);
    let (code, page) = get(&tenant, &format!("{base}{detail_path}")).await?;
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains("{\n  &quot;event&quot;: &quot;submission.created&quot;,\n  &quot;data&quot;: {\n    &quot;text_feedback&quot;: &quot;&lt;script&gt;alert(1)&lt;&#x2F;script&gt;&quot;"),
        "{page}"
    );
    assert!(!page.contains("<script>"));
    assert!(page.contains("x-feedbackpulse-event"));
    assert!(page.contains("x-served-by") && page.contains("answer 2"));
    let timeline = &page[page.find(r#"id="delivery-timeline""#).context("timeline")?..];
    let timeline = &timeline[..timeline.find("</ol>").context("timeline end")?];
    assert_eq!(timeline.matches("<li").count(), 3, "{timeline}");
    assert!(timeline.contains(r#"aria-current="step""#));
    assert!(page.contains(r#"id="redeliver""#));
    // Another tenant's attempt is not found, like a missing one.
    let bravo_attempt = ids_where(rows, seeded.bravo, |_| true)[0];
    for id in [
        bravo_attempt.to_string(),
        Uuid::now_v7().to_string(),
        "nope".to_owned(),
    ] {
        let (code, _) = get(&tenant, &format!("{base}/webhooks/logs/{id}")).await?;
        assert_eq!(code, 404, "{id}");
    }

    // Redeliver needs the form's token.
    let redeliver_path = format!("{detail_path}/redeliver");
    for body in ["", "csrf_token=", "csrf_token=00ff"] {
        let answer = tenant
            .post(format!("{base}{redeliver_path}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await?;
        assert_eq!(answer.status().as_u16(), 403, "{body:?}");
    }

    // A real delivery, redelivered through the form: the api queues it, the receiver gets it again.
    fixture.configure_webhook().await?;
    fixture.api.submit("redeliver me", Some("Jane")).await?;
    let entries = fixture
        .api
        .logs_until(PATIENCE, |entries| {
            entries
                .iter()
                .any(|entry| entry["url"] == fixture.receiver_url.as_str())
        })
        .await?;
    let real = entries
        .iter()
        .find(|entry| entry["url"] == fixture.receiver_url.as_str())
        .and_then(|entry| entry["id"].as_str())
        .context("the pipeline logged the delivery")?
        .to_owned();
    let real_path = format!("/webhooks/logs/{real}");
    let (_, page) = get(&tenant, &format!("{base}{real_path}")).await?;
    let token = hidden_field_after(&page, "<form class=\"redeliver\"", "csrf_token")
        .context("the redeliver form has a token")?;
    let answer = tenant
        .post(format!("{base}{real_path}/redeliver"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf_token={token}"))
        .send()
        .await?;
    assert_eq!(answer.status().as_u16(), 200);
    assert!(
        answer
            .url()
            .as_str()
            .ends_with(&format!("{real_path}?redelivered=2")),
        "{}",
        answer.url()
    );
    let page = answer.text().await?;
    assert!(page.contains("Redelivery queued as attempt 2"), "{page}");
    fixture.receiver.wait_for(2, PATIENCE).await?;

    // The endpoint moved: the redelivery goes to the URL the config names now, and the delivery's
    // page says where each attempt went. (Once the first redelivery is logged, so this one is
    // numbered after it.)
    fixture
        .api
        .logs_until(PATIENCE, |entries| {
            entries.iter().any(|entry| entry["manual"] == true)
        })
        .await?;
    let moved_url = fixture
        .api
        .configure(&fixture.receiver.url("/moved"), None)
        .await?["url"]
        .as_str()
        .context("the moved url")?
        .to_owned();
    let answer = tenant
        .post(format!("{base}{real_path}/redeliver"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf_token={token}"))
        .send()
        .await?;
    assert_eq!(answer.status().as_u16(), 200);
    assert!(
        answer.url().as_str().ends_with("?redelivered=3"),
        "{}",
        answer.url()
    );
    let moved = fixture.receiver.wait_for(3, PATIENCE).await?;
    assert_eq!(moved[2].target, "/moved");
    fixture
        .api
        .logs_until(PATIENCE, |entries| {
            entries
                .iter()
                .any(|entry| entry["url"] == moved_url.as_str())
        })
        .await?;
    let (_, page) = get(&tenant, &format!("{base}{real_path}")).await?;
    let timeline = &page[page.find(r#"id="delivery-timeline""#).context("timeline")?..];
    let timeline = &timeline[..timeline.find("</ol>").context("timeline end")?];
    let went_to = |url: &str| {
        timeline
            .matches(&format!(
                r#"to <span class="url">{}</span>"#,
                html_escaped(url)
            ))
            .count()
    };
    assert_eq!(
        (went_to(&fixture.receiver_url), went_to(&moved_url)),
        (2, 1),
        "{timeline}"
    );

    // A payload made for another kind of endpoint (here Slack's) does not go to this one: the api
    // refuses, and the page says why.
    let slack = AttemptRow {
        url: "https://hooks.slack.com/services/T0/B0/SlackT0ken".to_owned(),
        response_status: Some(500),
        ..attempt_row(acme, Utc::now())
    };
    fp_store::attempts::insert_batch(&mut conn, std::slice::from_ref(&slack)).await?;
    let answer = tenant
        .post(format!("{base}/webhooks/logs/{}/redeliver", slack.id))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf_token={token}"))
        .send()
        .await?;
    assert_eq!(answer.status().as_u16(), 409);
    let page = answer.text().await?;
    assert!(page.contains("The delivery was not sent again:"), "{page}");
    assert!(page.contains("another kind of endpoint"), "{page}");

    // The platform view is the superadmin's alone.
    let (code, page) = get(&tenant, &format!("{base}/admin/webhook-logs")).await?;
    assert_eq!(code, 403, "{page}");
    assert!(page.contains("Not allowed"));
    let admin = http_session(&base, &fixture.superadmin_email, &fixture.password, "en").await?;
    let (code, _) = get(&admin, &format!("{base}/webhooks/logs")).await?;
    assert_eq!(code, 403);

    // Summary and both tenants over a range that holds only the seed.
    let from = seeded
        .rows
        .iter()
        .map(|row| row.attempted_at)
        .min()
        .context("rows")?;
    let to = seeded
        .rows
        .iter()
        .map(|row| row.attempted_at)
        .max()
        .context("rows")?
        + TimeDelta::minutes(1);
    let range = format!(
        "from={}&to={}",
        from.format("%Y-%m-%dT%H:%M"),
        to.format("%Y-%m-%dT%H:%M")
    );
    let (code, page) = get(&admin, &format!("{base}/admin/webhook-logs?{range}")).await?;
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains("Acme GmbH") && page.contains("Bravo &amp; &lt;Sons&gt;"),
        "{page}"
    );
    let succeeded = rows
        .iter()
        .filter(|row| row.response_status == Some(200))
        .count();
    assert!(
        page.contains(&format!(r#"id="summary-attempts">{}<"#, rows.len())),
        "{page}"
    );
    let rate = format!("{:.1}", succeeded as f64 * 100.0 / rows.len() as f64);
    assert!(
        page.contains(&format!(r#"id="summary-success-rate">{rate} %<"#)),
        "{rate}: {page}"
    );
    let durations: Vec<i64> = rows.iter().map(|row| row.duration_ms).collect();
    let p95 = p95(&durations).round() as i64;
    assert!(
        page.contains(&format!(r#"id="summary-p95">{p95} ms<"#)),
        "{p95}: {page}"
    );
    // Bravo has 20 failures, Acme 22: Acme first.
    let most_failing = &page[page.find("most-failing-tenants").context("most failing")?..];
    let acme_at = most_failing.find("Acme GmbH").context("Acme listed")?;
    let bravo_at = most_failing.find("Bravo").context("Bravo listed")?;
    assert!(acme_at < bravo_at);
    assert!(most_failing.contains(">22</span>") && most_failing.contains(">20</span>"));
    let all = walk(
        &admin,
        &base,
        &format!("/admin/webhook-logs?{range}"),
        &range.replace(':', "%3A"),
    )
    .await?;
    assert_each_once(
        &all,
        &rows.iter().map(|row| row.id).collect::<Vec<_>>(),
        "all tenants",
    );

    // Filtered by one tenant: only its rows, and the summary is its own.
    let only_bravo = format!("{range}&tenant={}", seeded.bravo);
    let listed = walk(
        &admin,
        &base,
        &format!("/admin/webhook-logs?{only_bravo}"),
        &only_bravo.replace(':', "%3A"),
    )
    .await?;
    assert_each_once(
        &listed,
        &ids_where(rows, seeded.bravo, |_| true),
        "Bravo only",
    );
    let (_, page) = get(&admin, &format!("{base}/admin/webhook-logs?{only_bravo}")).await?;
    assert!(
        page.contains(r#"id="summary-success-rate">0.0 %<"#),
        "{page}"
    );
    assert!(!page.contains("Acme GmbH"), "{page}");
    let (code, page) = get(&admin, &format!("{base}/admin/webhook-logs?tenant=acme")).await?;
    assert_eq!(code, 400);
    assert!(page.contains(r#"id="filter-tenant-error""#), "{page}");

    // The superadmin sees any tenant's attempt, but cannot redeliver.
    let (code, page) = get(
        &admin,
        &format!("{base}/admin/webhook-logs/{}", seeded.timeline_attempt),
    )
    .await?;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("Acme GmbH") && page.contains("text_feedback"));
    assert!(!page.contains(r#"id="redeliver""#), "{page}");
    let (code, _) = get(
        &admin,
        &format!("{base}/admin/webhook-logs/{}", Uuid::now_v7()),
    )
    .await?;
    assert_eq!(code, 404);

    // German.
    let german = http_session(
        &base,
        &fixture.tenant_email,
        &fixture.password,
        "de-DE,de;q=0.9",
    )
    .await?;
    let (_, page) = get(&german, &format!("{base}/webhooks/logs?status=404")).await?;
    assert!(page.contains(r#"<html lang="de">"#), "{page}");
    for text in [
        "<h1>Webhook Logs</h1>",
        "Ereignistyp",
        "Filter anwenden",
        "Versuche pro",
        "Antwortcode",
    ] {
        assert!(page.contains(text), "{text}: {page}");
    }
    assert!(!page.contains("Apply filters"));
    let (_, page) = get(&german, &format!("{base}{detail_path}")).await?;
    assert!(page.contains("Erneut senden") && page.contains("Alle Versuche dieser Zustellung"));

    Ok(())
}
