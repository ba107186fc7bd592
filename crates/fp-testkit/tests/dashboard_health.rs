//! The Health section of the tenant's Webhook Logs page and the page on a phone, in a real headless
//! Chromium on the real pipeline: real deliveries to an HTTPS receiver (some answered 200, then
//! some 500), the figures of the last 24 hours and 7 days as the api's log says, the endpoint
//! failing with the time it will be disabled, then disabled by the api at (not before) that time.
//! At 390 px the attempts are cards with no sideways scroll; a one-minute range is charted in bars
//! no wider than the range. Screenshots: `logs` and `logs-health` in `target/screenshots/`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, NaiveDateTime, SecondsFormat, TimeDelta, Utc};
use fp_testkit::browser::{Browser, DESKTOP, NARROW, log_in};
use fp_testkit::dashboard::{DashboardFixture, form_body};
use fp_testkit::environment::TestEnvironment;
use fp_testkit::pipeline::{TenantApi, is_interrupted};
use fp_testkit::receiver::{CannedResponse, ReceivedRequest, Responder};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(30);
/// `api.disable_failing_endpoints_after` of the api and the dashboard alike: long enough for the
/// page to be read while the endpoint is failing, short enough to see the api disable it.
const DISABLE_AFTER_SECONDS: i64 = 60;
const SUCCEEDING: usize = 6;
const FAILING: usize = 4;

/// `/fail` answers 500, every other path 200.
fn answers_by_path() -> Responder {
    Arc::new(|request: &ReceivedRequest, _: usize| {
        if request.target == "/fail" {
            CannedResponse::new(500, "down")
        } else {
            CannedResponse::new(200, "ok")
        }
    })
}

/// PostgreSQL's `percentile_cont(fraction)`: linear interpolation between the closest ranks.
fn percentile(durations: &[i64], fraction: f64) -> f64 {
    let mut sorted = durations.to_vec();
    sorted.sort_unstable();
    let position = fraction * (sorted.len() - 1) as f64;
    let lower = position.floor() as usize;
    let upper = (lower + 1).min(sorted.len() - 1);
    sorted[lower] as f64 + (position - lower as f64) * (sorted[upper] - sorted[lower]) as f64
}

/// Sends `count` submissions and waits until the log holds `total` settled attempts.
async fn deliver(tenant: &TenantApi, count: usize, total: usize) -> anyhow::Result<Vec<Value>> {
    for i in 0..count {
        tenant.submit(&format!("feedback {i}"), None).await?;
    }
    let entries = tenant
        .logs_until(PATIENCE, |entries| {
            entries
                .iter()
                .filter(|entry| !is_interrupted(entry))
                .count()
                >= total
        })
        .await?;
    let settled = entries
        .iter()
        .filter(|entry| !is_interrupted(entry))
        .count();
    anyhow::ensure!(
        settled == total && entries.len() == total,
        "expected {total} settled attempts, the log has: {entries:?}"
    );
    Ok(entries)
}

/// The tenant's config as the api says, polled until `done` holds.
async fn config_until(
    tenant: &TenantApi,
    timeout: Duration,
    mut between: impl AsyncFnMut() -> anyhow::Result<()>,
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (status, config) = tenant
            .send(reqwest::Method::GET, "/api/v2/webhooks/config", None)
            .await?;
        anyhow::ensure!(status == 200, "config answered {status}: {config}");
        if done(&config) {
            return Ok(config);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the config did not change as expected within {timeout:?}: {config}"
        );
        between().await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn time_of(config: &Value, field: &str) -> anyhow::Result<DateTime<Utc>> {
    let text = config[field]
        .as_str()
        .with_context(|| format!("no {field} in {config}"))?;
    Ok(DateTime::parse_from_rfc3339(text)?.with_timezone(&Utc))
}

/// As a page's `<time datetime>` writes an instant.
fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The `datetime` of the first `<time>` in the element matching `css`.
async fn datetime_in(browser: &Browser, css: &str) -> anyhow::Result<String> {
    let value = browser
        .execute(
            "var element = document.querySelector(arguments[0] + ' time'); \
             return element ? element.getAttribute('datetime') : null;",
            vec![Value::from(css)],
        )
        .await?;
    match value.as_str() {
        Some(datetime) => Ok(datetime.to_owned()),
        None => anyhow::bail!("no time in {css}: {}", browser.page_text().await?),
    }
}

/// How the list is laid out at the current width.
async fn layout(browser: &Browser) -> anyhow::Result<Value> {
    browser
        .execute(
            "var style = function (element, pseudo) { return getComputedStyle(element, pseudo); }; \
             var table = document.getElementById('log-table'); \
             var rows = Array.from(table.querySelectorAll('tbody tr.attempt')); \
             var first = rows[0].cells[0]; \
             return { \
               header: style(table.tHead).display, \
               rows: rows.map(function (row) { return style(row).display; }), \
               rowsInside: rows.every(function (row) { \
                 var box = row.getBoundingClientRect(); \
                 return box.left >= 0 && box.right <= window.innerWidth; }), \
               firstLabel: style(first, '::before').content, \
               scrollWidth: document.documentElement.scrollWidth, \
               innerWidth: window.innerWidth, \
               chart: style(document.getElementById('deliveries-chart')).display, \
               caption: document.getElementById('deliveries-chart-caption').innerText, \
               totals: document.getElementById('deliveries-chart-totals').innerText \
             };",
            vec![],
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_logs_page_shows_the_endpoints_health_and_fits_a_phone() -> anyhow::Result<()> {
    let mut env = TestEnvironment::new("dashhealth").await?;
    // One attempt per event within the test, health reports at once, config changes seen soon.
    env.set("FP__DISPATCHER__RETRY_SCHEDULE", "1h");
    env.set("FP__DISPATCHER__HEALTH_REPORT_INTERVAL_MS", "200");
    env.set("FP__DISPATCHER__CONFIG_CACHE_TTL_MS", "200");
    env.set(
        "FP__API__DISABLE_FAILING_ENDPOINTS_AFTER",
        format!("{DISABLE_AFTER_SECONDS}s"),
    );
    let outcome = async {
        let fixture = DashboardFixture::start_answering(&mut env, answers_by_path()).await?;
        let browser = Browser::start().await?;
        let tested = run(&fixture, &browser).await;
        tested.and(browser.close().await)
    }
    .await;
    env.finish_after(outcome).await
}

async fn run(fixture: &DashboardFixture, browser: &Browser) -> anyhow::Result<()> {
    let tenant = &fixture.api;
    log_in(
        browser,
        &fixture.base,
        &fixture.tenant_email,
        &fixture.password,
    )
    .await?;

    // No config yet: the page says so and where to set one up.
    browser.goto(&fixture.url("/webhooks/logs")).await?;
    let state = browser.text("#endpoint-state").await?;
    anyhow::ensure!(state.contains("No webhook endpoint is set up"), "{state}");

    // Real deliveries: some answered 200, then (the endpoint changed) some 500.
    tenant.configure(&fixture.receiver.url("/ok"), None).await?;
    deliver(tenant, SUCCEEDING, SUCCEEDING).await?;
    tenant
        .configure(&fixture.receiver.url("/fail"), None)
        .await?;
    // The dispatchers' config cache has the new URL before the next events: at once when they
    // hear the change, within its 200 ms TTL if one does not listen yet.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let entries = deliver(tenant, FAILING, SUCCEEDING + FAILING).await?;
    let config = config_until(
        tenant,
        PATIENCE,
        async || Ok(()),
        |config| config["failing_since"].is_string(),
    )
    .await?;
    let failing_since = time_of(&config, "failing_since")?;
    let disable_at = failing_since + TimeDelta::seconds(DISABLE_AFTER_SECONDS);

    // What the page must say, from what was sent and what the api logged.
    let succeeded = entries
        .iter()
        .filter(|entry| entry["response_code"] == 200)
        .count();
    anyhow::ensure!(succeeded == SUCCEEDING, "{entries:?}");
    let rate = format!("{:.1} %", SUCCEEDING as f64 * 100.0 / entries.len() as f64);
    let durations: Vec<i64> = entries
        .iter()
        .map(|entry| entry["duration_ms"].as_i64().context("duration_ms"))
        .collect::<anyhow::Result<_>>()?;
    let p50 = format!("{} ms", percentile(&durations, 0.5).round() as i64);
    let p95 = format!("{} ms", percentile(&durations, 0.95).round() as i64);

    browser.goto(&fixture.url("/webhooks/logs")).await?;
    for period in ["#health-day", "#health-week"] {
        let figure = async |class: &str| browser.text(&format!("{period} .{class}")).await;
        anyhow::ensure!(
            figure("health-attempts").await? == entries.len().to_string(),
            "{period}: {}",
            browser.text(period).await?
        );
        anyhow::ensure!(
            figure("health-success-rate").await? == rate,
            "{period}: {rate}"
        );
        anyhow::ensure!(figure("health-p50").await? == p50, "{period}: {p50}");
        anyhow::ensure!(figure("health-p95").await? == p95, "{period}: {p95}");
    }
    // Failing since the api says, and disabled at that plus the limit unless a delivery succeeds.
    let state = browser
        .execute(
            "return document.getElementById('endpoint-state').dataset.state;",
            vec![],
        )
        .await?;
    anyhow::ensure!(
        state == "failing",
        "{state}: {}",
        browser.text("#endpoint-state").await?
    );
    anyhow::ensure!(datetime_in(browser, "#endpoint-failing-since").await? == iso(failing_since));
    anyhow::ensure!(datetime_in(browser, "#endpoint-disable-at").await? == iso(disable_at));
    let warning = browser.text("#endpoint-disable-at").await?;
    anyhow::ensure!(
        warning.contains("FeedbackPulse will disable the endpoint at")
            || warning.contains("at its next failed delivery"),
        "{warning}"
    );

    // Desktop: a table with its header, the chart drawn.
    let desktop = layout(browser).await?;
    anyhow::ensure!(desktop["header"] != "none", "{desktop}");
    anyhow::ensure!(
        desktop["rows"].as_array().is_some_and(
            |rows| rows.len() == entries.len() && rows.iter().all(|d| d == "table-row")
        ),
        "{desktop}"
    );
    anyhow::ensure!(desktop["chart"] != "none", "{desktop}");
    // A phone: each attempt a labelled card, no header, nothing wider than the screen, the chart
    // replaced by its title and totals.
    browser.resize(NARROW).await?;
    let phone = layout(browser).await?;
    browser.resize(DESKTOP).await?;
    anyhow::ensure!(phone["innerWidth"] == NARROW.0, "{phone}");
    anyhow::ensure!(phone["header"] == "none", "{phone}");
    anyhow::ensure!(
        phone["rows"]
            .as_array()
            .is_some_and(|rows| rows.len() == entries.len() && rows.iter().all(|d| d == "block")),
        "{phone}"
    );
    anyhow::ensure!(phone["rowsInside"] == true, "{phone}");
    anyhow::ensure!(
        phone["firstLabel"]
            .as_str()
            .is_some_and(|label| label.contains("Event type")),
        "{phone}"
    );
    anyhow::ensure!(
        phone["scrollWidth"].as_u64() <= phone["innerWidth"].as_u64(),
        "sideways scroll: {phone}"
    );
    anyhow::ensure!(phone["chart"] == "none", "{phone}");
    let totals = phone["totals"].as_str().unwrap_or_default();
    anyhow::ensure!(
        totals.contains(&format!("succeeded ({SUCCEEDING})"))
            && totals.contains(&format!("failed ({FAILING})")),
        "{phone}"
    );
    browser.screenshots("logs-health").await?;

    // A one-minute range, in the page's own times: bars of 10 seconds, titled by what they count.
    let shown = browser.text("#log-table tr.attempt time").await?;
    let minute = shown.get(..16).context("a time as YYYY-MM-DD HH:MM...")?;
    let from = NaiveDateTime::parse_from_str(minute, "%Y-%m-%d %H:%M")?;
    let to = (from + TimeDelta::minutes(1))
        .format("%Y-%m-%d %H:%M")
        .to_string();
    let query = form_body(&[("from", minute), ("to", &to)]);
    browser
        .goto(&fixture.url(&format!("/webhooks/logs?{query}")))
        .await?;
    let chart = layout(browser).await?;
    anyhow::ensure!(chart["caption"] == "Attempts per 10 seconds", "{chart}");
    let bars = browser.count("#deliveries-chart .bar").await?;
    anyhow::ensure!(
        (1..=6).contains(&bars),
        "{bars} bars in a minute of 10-second bars"
    );
    // Scrolled to the chart and the cards, which the sections above push below a phone's fold.
    browser
        .goto(&fixture.url(&format!("/webhooks/logs?{query}#deliveries-chart-caption")))
        .await?;
    browser.screenshots("logs").await?;

    // More failures once the limit has passed: the api disables the endpoint, not before the time
    // the page gave, and the page says so and where to turn it back on.
    let now = Utc::now();
    if now < disable_at {
        tokio::time::sleep((disable_at - now).to_std()?).await;
    }
    let disabled = config_until(
        tenant,
        PATIENCE,
        async || tenant.submit("still failing?", None).await.map(drop),
        |config| config["enabled"] == false,
    )
    .await?;
    let disabled_at = time_of(&disabled, "disabled_at")?;
    anyhow::ensure!(disabled_at >= disable_at, "{disabled}");
    browser.goto(&fixture.url("/webhooks/logs")).await?;
    anyhow::ensure!(datetime_in(browser, "#endpoint-disabled-at").await? == iso(disabled_at));
    let state = browser.text("#endpoint-state").await?;
    anyhow::ensure!(
        state.contains("Disabled by FeedbackPulse")
            && state.contains("every delivery failed since"),
        "{state}"
    );
    anyhow::ensure!(!state.contains("/api/v2"), "{state}");
    let links = browser.links("#endpoint-state a").await?;
    anyhow::ensure!(
        links
            .iter()
            .any(|link| link.ends_with("/settings/integrations")),
        "{links:?}"
    );
    Ok(())
}
