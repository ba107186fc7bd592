//! The dashboard's Deliveries view in a real headless Chromium against the real services: one row
//! per delivery with its state, attempts and last answer ("retrying, next at ..."), each state
//! filter, the search by delivery id, event id and submission id (and a refused one), paging, a
//! delivery's page with its attempts linking to their own pages, and rows that read as cards at
//! 390 px. One delivery is made by the pipeline (a real submission, so the search by submission
//! id goes through its event); the others are seeded, for states the pipeline shows only for a
//! moment or after an hour (`tests/deliveries_api.rs` makes each state for real). Screenshots of
//! both pages, desktop and narrow, land in `target/screenshots/`.

use std::time::Duration;

use anyhow::Context;
use chrono::{SecondsFormat, TimeDelta, Utc};
use fp_store::attempts::AttemptRow;
use fp_testkit::browser::{Browser, NARROW, log_in};
use fp_testkit::dashboard::browser_test_in;
use fp_testkit::seed::attempt_row;
use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(30);
/// Delivered deliveries seeded beyond the interesting ones, so the list runs to a second page.
const OLDER_DELIVERED: usize = 50;

/// `(delivery id, state)` of each row of the list, in page order.
async fn rows(browser: &Browser) -> anyhow::Result<Vec<(String, String)>> {
    let rows = browser
        .execute(
            "return Array.from(document.querySelectorAll('#delivery-table tr.delivery')) \
               .map(function (row) { return [row.dataset.deliveryId, row.dataset.state]; });",
            vec![],
        )
        .await?;
    Ok(serde_json::from_value(rows)?)
}

/// The visible text of the list's row for `delivery_id`.
async fn row_text(browser: &Browser, delivery_id: &Uuid) -> anyhow::Result<String> {
    browser
        .text(&format!("tr[data-delivery-id=\"{delivery_id}\"]"))
        .await
}

/// Chooses `state` (empty: all) and `search`, and shows the deliveries they ask for.
async fn filter(browser: &Browser, state: &str, search: &str) -> anyhow::Result<()> {
    browser.select_labelled("State", state).await?;
    browser.fill_labelled("Search by id", search).await?;
    browser.click_to_load("Show deliveries").await
}

/// The states of the rows shown, after `filter`; fails on a refused filter.
async fn filtered(browser: &Browser, state: &str, search: &str) -> anyhow::Result<Vec<String>> {
    filter(browser, state, search).await?;
    anyhow::ensure!(
        browser.count("#delivery-filter-errors").await? == 0,
        "state {state:?}, search {search:?} refused: {}",
        browser.page_text().await?
    );
    Ok(rows(browser)
        .await?
        .into_iter()
        .map(|(_, state)| state)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deliveries_view_lists_filters_searches_and_opens_deliveries() -> anyhow::Result<()> {
    browser_test_in("deliveries_page", async |env, fixture, browser| {
        // A real delivery of a real submission.
        fixture.configure_webhook().await?;
        let submission = fixture.api.submit("Great service", None).await?;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let delivered = loop {
            let (status, page) = fixture
                .api
                .send(Method::GET, "/api/v2/webhooks/deliveries", None)
                .await?;
            anyhow::ensure!(status == 200, "deliveries answered {status}: {page}");
            if let Some(delivered) = page["data"]
                .as_array()
                .and_then(|data| data.iter().find(|entry| entry["state"] == "delivered"))
            {
                break delivered.clone();
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the submission was not delivered within {PATIENCE:?}: {page}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let real_delivery: Uuid = delivered["delivery_id"].as_str().context("id")?.parse()?;
        let real_event = delivered["event_id"].as_str().context("id")?.to_owned();

        // The other states, older than the real delivery, newest first.
        let tenant_id: Uuid = fixture.api.tenant_id.parse()?;
        let now = Utc::now();
        let ago = |minutes: i64| now - TimeDelta::minutes(minutes);
        let retrying_first = AttemptRow {
            response_status: Some(500),
            error_kind: Some("http_status".to_owned()),
            is_final: false,
            next_retry_at: Some(ago(10) + TimeDelta::seconds(5)),
            ..attempt_row(tenant_id, ago(10))
        };
        let retrying_second = AttemptRow {
            id: Uuid::now_v7(),
            attempt_number: 2,
            attempted_at: ago(5),
            next_retry_at: Some(now + TimeDelta::hours(2)),
            ..retrying_first.clone()
        };
        let failed = AttemptRow {
            response_status: Some(410),
            error_kind: Some("http_status".to_owned()),
            ..attempt_row(tenant_id, ago(20))
        };
        let blocked = AttemptRow {
            response_status: None,
            error_kind: Some("blocked".to_owned()),
            error_message: Some("the URL points to a private address".to_owned()),
            ..attempt_row(tenant_id, ago(30))
        };
        let in_flight = |minutes, manual| AttemptRow {
            response_status: None,
            error_kind: Some(fp_contracts::INTERRUPTED_ERROR_KIND.to_owned()),
            error_message: Some(fp_contracts::INTERRUPTED_ERROR_MESSAGE.to_owned()),
            is_final: false,
            manual,
            ..attempt_row(tenant_id, ago(minutes))
        };
        let manual = in_flight(40, true);
        let pending = in_flight(50, false);
        let mut seeded = vec![
            retrying_first.clone(),
            retrying_second.clone(),
            failed.clone(),
            blocked.clone(),
            manual.clone(),
            pending.clone(),
        ];
        seeded.extend((0..OLDER_DELIVERED).map(|n| {
            attempt_row(
                tenant_id,
                now - TimeDelta::days(2) - TimeDelta::minutes(n as i64),
            )
        }));
        let mut conn = fp_store::connect(&env.database_url).await?;
        fp_store::attempts::insert_batch(&mut conn, &seeded).await?;

        log_in(
            browser,
            &fixture.base,
            &fixture.tenant_email,
            &fixture.password,
        )
        .await?;
        browser.goto(&fixture.url("/webhooks/logs")).await?;
        browser.click_text("Deliveries").await?;
        browser.wait_for_path("/webhooks/deliveries").await?;

        // One row per delivery, the most recently attempted first, each in its state.
        let listed = rows(browser).await?;
        anyhow::ensure!(listed.len() == 50, "a page holds 50 deliveries: {listed:?}");
        let expected = [
            (real_delivery, "delivered"),
            (retrying_first.delivery_id, "retrying"),
            (failed.delivery_id, "failed"),
            (blocked.delivery_id, "blocked"),
            (manual.delivery_id, "manual"),
            (pending.delivery_id, "pending"),
        ]
        .map(|(id, state)| (id.to_string(), state.to_owned()));
        anyhow::ensure!(listed[..6] == expected, "{listed:?}");
        anyhow::ensure!(
            listed[6..].iter().all(|(_, state)| state == "delivered"),
            "{listed:?}"
        );
        // What each row says: the state, when a retry comes, the attempts, the last answer.
        let retrying = row_text(browser, &retrying_first.delivery_id).await?;
        anyhow::ensure!(
            retrying.contains("Retrying")
                && retrying.contains("next at")
                && retrying.contains("500")
                && retrying.contains("Your server failed while handling the request."),
            "{retrying}"
        );
        // The time shown (in the user's zone) is the retry's instant.
        let next_at = browser
            .execute(
                "return document.querySelector(arguments[0]).getAttribute('datetime');",
                vec![Value::from(format!(
                    "tr[data-delivery-id=\"{}\"] .delivery-next time",
                    retrying_first.delivery_id
                ))],
            )
            .await?;
        let planned = retrying_second
            .next_retry_at
            .map(|at| at.to_rfc3339_opts(SecondsFormat::Secs, true));
        anyhow::ensure!(
            next_at.as_str() == planned.as_deref(),
            "next at {next_at}, not at {planned:?}"
        );
        let attempts = browser
            .text(&format!(
                "tr[data-delivery-id=\"{}\"] td.number",
                retrying_first.delivery_id
            ))
            .await?;
        anyhow::ensure!(
            attempts == "2",
            "the retrying delivery made 2 attempts: {attempts}"
        );
        let gone = row_text(browser, &failed.delivery_id).await?;
        anyhow::ensure!(
            gone.contains("Failed") && gone.contains("410") && gone.contains("410 Gone"),
            "{gone}"
        );
        let refused = row_text(browser, &blocked.delivery_id).await?;
        anyhow::ensure!(
            refused.contains("Blocked") && refused.contains("private or reserved address"),
            "{refused}"
        );
        for (id, state) in [
            (manual.delivery_id, "Redelivering"),
            (pending.delivery_id, "In flight"),
        ] {
            let text = row_text(browser, &id).await?;
            anyhow::ensure!(
                text.contains(state) && text.contains("No answer yet"),
                "{text}"
            );
        }
        browser.screenshots("deliveries").await?;

        // At 390 px each row is a card: no header row, nothing wider than the screen.
        browser.resize(NARROW).await?;
        let layout = browser
            .execute(
                "var head = document.querySelector('#delivery-table thead'); \
                 var row = document.querySelector('#delivery-table tr.delivery'); \
                 return [getComputedStyle(head).display, row.getBoundingClientRect().width, \
                         document.documentElement.scrollWidth];",
                vec![],
            )
            .await?;
        browser.resize(fp_testkit::browser::DESKTOP).await?;
        let width = |index: usize| layout[index].as_f64().unwrap_or(f64::MAX);
        anyhow::ensure!(
            layout[0] == "none" && width(1) <= 390.0 && width(2) <= 390.0,
            "at 390 px the rows are not cards that fit: {layout}"
        );

        // Paging: the rest on the next page, and back.
        browser.click_to_load("Older deliveries").await?;
        let second = rows(browser).await?;
        anyhow::ensure!(second.len() == 6 + OLDER_DELIVERED - 50, "{second:?}");
        anyhow::ensure!(
            second
                .iter()
                .all(|(id, _)| !listed.iter().any(|(seen, _)| seen == id)),
            "a delivery on both pages"
        );
        browser.click_to_load("Newest deliveries").await?;
        anyhow::ensure!(rows(browser).await? == listed);

        // Each state filter shows exactly the deliveries in that state.
        for (state, count) in [
            ("retrying", 1),
            ("failed", 1),
            ("blocked", 1),
            ("manual", 1),
            ("pending", 1),
            ("delivered", 50),
        ] {
            let states = filtered(browser, state, "").await?;
            anyhow::ensure!(
                states.len() == count && states.iter().all(|shown| shown == state),
                "state {state}: {states:?}"
            );
            let query = browser.current_url().await?;
            anyhow::ensure!(query.contains(&format!("state={state}")), "{query}");
        }
        let failed_only = filtered(browser, "failed", "").await?;
        anyhow::ensure!(failed_only == ["failed"]);
        anyhow::ensure!(browser.count("#delivery-page-next").await? == 0);
        browser.screenshots("deliveries-failed").await?;

        // Search: by delivery id, event id and submission id; filters combine.
        for (search, expected) in [
            (failed.delivery_id.to_string(), failed.delivery_id),
            (
                retrying_second.event_id.to_string(),
                retrying_first.delivery_id,
            ),
            (real_event.clone(), real_delivery),
            (submission.to_string(), real_delivery),
        ] {
            filtered(browser, "", &search).await?;
            let found = rows(browser).await?;
            anyhow::ensure!(
                found.len() == 1 && found[0].0 == expected.to_string(),
                "search {search}: {found:?}"
            );
        }
        let none = filtered(browser, "failed", &submission.to_string()).await?;
        anyhow::ensure!(none.is_empty(), "{none:?}");
        anyhow::ensure!(browser.page_text().await?.contains("No deliveries match"));
        browser.screenshots("deliveries-search").await?;

        // An id that is none is refused next to the field, and nothing is listed.
        filter(browser, "", "not-an-id").await?;
        let page = browser.page_text().await?;
        anyhow::ensure!(
            browser.count("#delivery-search-error").await? == 1
                && page.contains("Enter a delivery or event id")
                && browser.count("#delivery-table").await? == 0,
            "{page}"
        );
        browser.click_to_load("Reset").await?;
        anyhow::ensure!(rows(browser).await?.len() == 50);

        // A delivery's page: its state and every attempt, each linking to its own page.
        browser
            .wait_for(&format!(
                "tr[data-delivery-id=\"{}\"] td.delivery-link a",
                retrying_first.delivery_id
            ))
            .await?
            .click()
            .await?;
        browser
            .wait_for_path(&format!(
                "/webhooks/deliveries/{}",
                retrying_first.delivery_id
            ))
            .await?;
        let facts = browser.text("#delivery-facts").await?;
        anyhow::ensure!(
            facts.contains("Retrying")
                && facts.contains(&retrying_first.delivery_id.to_string())
                && facts.contains("The last attempt failed; the next attempt is planned."),
            "{facts}"
        );
        let links = browser
            .links("#delivery-attempts td.delivery-link a")
            .await?;
        let expected_links: Vec<String> = [retrying_first.id, retrying_second.id]
            .iter()
            .map(|id| fixture.url(&format!("/webhooks/logs/{id}")))
            .collect();
        anyhow::ensure!(links == expected_links, "{links:?}");
        browser.screenshots("delivery-detail").await?;
        browser.click_text("Details").await?;
        browser
            .wait_for_path(&format!("/webhooks/logs/{}", retrying_first.id))
            .await?;
        browser
            .goto(&fixture.url("/webhooks/deliveries/not-a-delivery"))
            .await?;
        anyhow::ensure!(browser.page_text().await?.contains("Page not found"));
        Ok(())
    })
    .await
}
