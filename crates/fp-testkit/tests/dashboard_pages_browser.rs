//! The dashboard's page flows of issue #5 in a real headless Chromium against the real services:
//! a tenant saves its webhook config on Einstellungen > Integrations, sends a test event, finds it
//! in the Webhook Logs, filters them (event type, status code, date range), opens a delivery and
//! redelivers it, switches to German, and is refused the admin page; a superadmin sees two
//! tenants' deliveries and filters by one. Everything the tests check is done through the pages
//! (labelled fields, buttons, links); the api only makes traffic. Screenshots of each page, desktop
//! and narrow, land in `target/screenshots/`.

use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{TimeDelta, Utc};
use fp_testkit::browser::{Browser, log_in};
use fp_testkit::dashboard::{DashboardFixture, browser_test, browser_test_in};
use fp_testkit::pipeline::TenantApi;
use serde_json::{Value, json};

/// How long a delivery may take to reach the receiver and the log.
const PATIENCE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(300);
const SECRET: &str = "dashboard-secret-1";
/// A URL the api's SSRF policy refuses (the cloud metadata address).
const BLOCKED_URL: &str = "https://169.254.169.254/latest";

/// The log table as shown: one map of column heading to cell text per row (empty when the page
/// shows no table).
async fn table_rows(browser: &Browser) -> anyhow::Result<Vec<serde_json::Map<String, Value>>> {
    let rows = browser
        .execute(
            "var table = document.getElementById('log-table'); \
             if (!table) { return []; } \
             var heads = Array.from(table.tHead.rows[0].cells).map(function (c) { \
               return c.innerText.trim(); }); \
             return Array.from(table.tBodies[0].rows).map(function (row) { \
               var cells = {}; \
               Array.from(row.cells).forEach(function (cell, i) { \
                 cells[heads[i] || ('column ' + i)] = cell.innerText.trim(); }); \
               return cells; });",
            vec![],
        )
        .await?;
    Ok(rows
        .as_array()
        .context("the table script returns a list")?
        .iter()
        .filter_map(|row| row.as_object().cloned())
        .collect())
}

/// The text of column `column` in every row of the log table.
async fn column(browser: &Browser, column: &str) -> anyhow::Result<Vec<String>> {
    table_rows(browser)
        .await?
        .iter()
        .map(|row| {
            row.get(column)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .with_context(|| format!("no column {column:?} in {row:?}"))
        })
        .collect()
}

/// The query of the current URL, decoded into pairs.
async fn query_pairs(browser: &Browser) -> anyhow::Result<Vec<(String, String)>> {
    let pairs = browser
        .execute(
            "return Array.from(new URLSearchParams(window.location.search).entries());",
            vec![],
        )
        .await?;
    Ok(serde_json::from_value(pairs)?)
}

/// Checks that the current URL's query holds each of `expected` (the filters, bookmarkable).
/// Waits up to 10 s: after a form's POST and its redirect, WebDriver can report the new URL while
/// the page's scripts still see the old document.
async fn assert_query_holds(browser: &Browser, expected: &[(&str, &str)]) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let pairs = query_pairs(browser).await?;
        let missing = expected
            .iter()
            .find(|(name, value)| !pairs.iter().any(|(n, v)| n == name && v == value));
        match missing {
            None => return Ok(()),
            Some((name, value)) if tokio::time::Instant::now() > deadline => anyhow::bail!(
                "the address does not hold {name}={value}: {}",
                browser.current_url().await?
            ),
            Some(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}

/// Clicks the element matching `css` and waits for the page it leads to.
async fn click_css(browser: &Browser, css: &str) -> anyhow::Result<()> {
    let element = browser.wait_for(css).await?;
    element
        .click()
        .await
        .with_context(|| format!("clicking {css} failed"))?;
    browser.wait_loaded().await
}

/// The value of the form field matching `css`.
async fn field_value(browser: &Browser, css: &str) -> anyhow::Result<String> {
    let element = browser.wait_for(css).await?;
    Ok(element.prop("value").await?.unwrap_or_default())
}

/// Reloads the current page until `done` holds for its visible text; fails after [`PATIENCE`]
/// with what the page showed last.
async fn reload_until(
    browser: &Browser,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> anyhow::Result<String> {
    let url = browser.current_url().await?;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = browser.page_text().await?;
        if done(&text) {
            return Ok(text);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{what}: not shown on {url} within {PATIENCE:?}; the page says:\n{text}");
        }
        tokio::time::sleep(POLL).await;
        browser.goto(&url).await?;
    }
}

/// Waits until the tenant's log holds at least `count` entries (set-up through the api).
async fn wait_logged(api: &TenantApi, count: usize) -> anyhow::Result<Vec<Value>> {
    let entries = api
        .logs_until(PATIENCE, |entries| entries.len() >= count)
        .await?;
    anyhow::ensure!(
        entries.len() >= count,
        "{} of {count} deliveries logged within {PATIENCE:?}: {entries:?}",
        entries.len()
    );
    Ok(entries)
}

/// Applies the filter form as it is filled and checks the page took it (no field errors).
async fn apply_filters(browser: &Browser) -> anyhow::Result<()> {
    browser.click_to_load("Apply filters").await?;
    anyhow::ensure!(
        browser.count("#filter-errors").await? == 0,
        "the filters were refused: {}",
        browser.page_text().await?
    );
    Ok(())
}

/// Resets the filter form through its link and checks every field is empty again.
async fn reset_filters(browser: &Browser, list_path: &str) -> anyhow::Result<()> {
    browser.click_to_load("Reset").await?;
    browser.wait_for_path(list_path).await?;
    anyhow::ensure!(query_pairs(browser).await?.is_empty());
    for field in [
        "#filter-event-type",
        "#filter-status",
        "#filter-from",
        "#filter-to",
    ] {
        let value = field_value(browser, field).await?;
        anyhow::ensure!(value.is_empty(), "{field} holds {value:?} after Reset");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_sets_up_its_webhook_tests_it_and_works_with_its_logs() -> anyhow::Result<()> {
    browser_test("pages_tenant", async |fixture, browser| {
        integrations_flow(fixture, browser).await?;
        logs_flow(fixture, browser).await?;
        let (detail, delivery_id) = detail_and_redeliver(fixture, browser).await?;
        german(browser, &detail).await?;

        // The platform view is not the tenant's: the 403 page, in the layout.
        browser.goto(&fixture.url("/admin/webhook-logs")).await?;
        browser.wait_for_path("/admin/webhook-logs").await?;
        let page = browser.page_text().await?;
        anyhow::ensure!(
            page.contains("Not allowed") && page.contains("Your account may not open this page."),
            "the tenant is not refused the admin page: {page}"
        );
        anyhow::ensure!(
            browser.count("#log-table").await? == 0 && !page.contains(&delivery_id),
            "the admin page shows deliveries to a tenant: {page}"
        );
        // Still signed in on the refusal: the header keeps the user's navigation and log-out.
        anyhow::ensure!(
            page.contains(&fixture.tenant_email) && page.contains("Log out"),
            "the 403 page lost the signed-in header: {page}"
        );
        browser.screenshots("admin-forbidden").await
    })
    .await
}

/// Einstellungen > Integrations: empty, saved, a blocked URL refused, a test event delivered,
/// and the Webhook Logs link to the test event's entry.
async fn integrations_flow(fixture: &DashboardFixture, browser: &Browser) -> anyhow::Result<()> {
    log_in(
        browser,
        &fixture.base,
        &fixture.tenant_email,
        &fixture.password,
    )
    .await?;
    browser.click_text("Settings > Integrations").await?;
    browser.wait_for_path("/settings/integrations").await?;
    browser.wait_for("#no-config").await?;
    let page = browser.page_text().await?;
    anyhow::ensure!(
        page.contains("No webhook is set up yet"),
        "no empty state: {page}"
    );
    browser.screenshots("integrations-empty").await?;

    // Save URL, events and a secret through the form.
    browser
        .fill_labelled("Webhook URL", &fixture.receiver_url)
        .await?;
    browser.set_checkbox("submission.created", true).await?;
    browser
        .set_checkbox("submission.status_changed", true)
        .await?;
    browser.set_checkbox("Enabled", true).await?;
    browser
        .fill_labelled("Secret for HMAC signature verification (optional)", SECRET)
        .await?;
    browser.click_to_load("Save").await?;
    browser.wait_for_path("/settings/integrations").await?;
    anyhow::ensure!(
        browser.text("#saved").await? == "Saved.",
        "no confirmation: {}",
        browser.page_text().await?
    );
    anyhow::ensure!(browser.text("#secret-state").await? == "A secret is set.");
    anyhow::ensure!(browser.text("#config-state").await? == "Enabled");
    anyhow::ensure!(browser.count("#no-config").await? == 0);
    anyhow::ensure!(field_value(browser, "#url").await? == fixture.receiver_url);
    anyhow::ensure!(
        field_value(browser, "#secret").await?.is_empty(),
        "the secret is shown again"
    );
    let html = browser
        .execute("return document.documentElement.outerHTML;", vec![])
        .await?;
    anyhow::ensure!(
        !html.as_str().unwrap_or_default().contains(SECRET),
        "the page holds the secret"
    );
    // What the page saved is what the api now has.
    let (status, config) = fixture
        .api
        .send(reqwest::Method::GET, "/api/v2/webhooks/config", None)
        .await?;
    anyhow::ensure!(status == 200, "{config}");
    anyhow::ensure!(config["url"] == fixture.receiver_url.as_str(), "{config}");
    anyhow::ensure!(
        config["events"] == json!(["submission.created", "submission.status_changed"]),
        "{config}"
    );
    anyhow::ensure!(config["secret_set"] == true, "{config}");
    browser.screenshots("integrations-saved").await?;

    // A URL the SSRF policy blocks: the reason next to the field, the input kept, nothing saved.
    browser.fill_labelled("Webhook URL", BLOCKED_URL).await?;
    browser.click_to_load("Save").await?;
    let reason = browser.text("#url-error").await?;
    anyhow::ensure!(!reason.trim().is_empty(), "an empty reason");
    let beside = browser
        .execute(
            "var error = document.getElementById('url-error'); \
             var field = document.getElementById('url'); \
             return error.parentElement === field.parentElement \
               && field.getAttribute('aria-invalid') === 'true' \
               && field.getAttribute('aria-describedby').split(' ').indexOf('url-error') >= 0;",
            vec![],
        )
        .await?;
    anyhow::ensure!(
        beside == true,
        "the reason {reason:?} is not tied to the URL field"
    );
    anyhow::ensure!(field_value(browser, "#url").await? == BLOCKED_URL);
    anyhow::ensure!(browser.count("#saved").await? == 0);
    let form_error = browser.text("#form-error").await?;
    anyhow::ensure!(
        form_error.contains("The settings were not saved."),
        "{form_error}"
    );
    let (_, unchanged) = fixture
        .api
        .send(reqwest::Method::GET, "/api/v2/webhooks/config", None)
        .await?;
    anyhow::ensure!(
        unchanged == config,
        "the blocked URL changed the config: {unchanged}"
    );
    eprintln!("the blocked URL is refused with: {reason}");
    browser.screenshots("integrations-rejected").await?;

    // The test event, through the real pipeline to the saved URL.
    browser.click_to_load("Send test event").await?;
    browser.wait_for_path("/settings/integrations").await?;
    let test_query = query_pairs(browser).await?;
    let delivery_id = test_query
        .iter()
        .find(|(name, _)| name == "test")
        .map(|(_, value)| value.clone())
        .with_context(|| format!("no ?test= after sending: {test_query:?}"))?;
    browser.wait_for("#test-outcome").await?;
    reload_until(browser, "the delivered test event", |text| {
        text.contains("Test event delivered.")
    })
    .await?;
    let outcome = browser.text("#test-outcome").await?;
    anyhow::ensure!(outcome.contains(&delivery_id), "{outcome}");
    anyhow::ensure!(
        browser.text("#test-response-code").await? == "200",
        "{outcome}"
    );
    let requests = fixture.receiver.wait_for(1, PATIENCE).await?;
    let test_request = requests
        .iter()
        .find(|request| request.header("x-feedbackpulse-event") == Some("webhook.test"))
        .context("the receiver got no webhook.test")?;
    anyhow::ensure!(
        test_request.header("x-feedbackpulse-delivery") == Some(delivery_id.as_str()),
        "{test_request:?}"
    );
    anyhow::ensure!(
        test_request.header("x-feedbackpulse-signature").is_some(),
        "the saved secret does not sign: {test_request:?}"
    );
    browser.screenshots("integrations-test-event").await?;

    // The page's link to the Webhook Logs, where the test event is listed.
    click_css(browser, "#webhook-logs-link").await?;
    browser.wait_for_path("/webhooks/logs").await?;
    let events = column(browser, "Event type").await?;
    let codes = column(browser, "Response code").await?;
    anyhow::ensure!(
        events == ["webhook.test"] && codes == ["200"],
        "the list shows {events:?} / {codes:?}"
    );
    anyhow::ensure!(
        browser
            .text("#log-table")
            .await?
            .contains(&fixture.receiver_url),
        "the URL is not listed"
    );
    browser.wait_for("#deliveries-chart").await?;
    browser.screenshots("webhook-logs").await
}

/// The filters of the tenant's list, each applied through the form and kept in the address.
async fn logs_flow(fixture: &DashboardFixture, browser: &Browser) -> anyhow::Result<()> {
    // Two submissions: their deliveries are the second event type in the list.
    fixture.api.submit("Great service", Some("Jane")).await?;
    fixture.api.submit("Could be faster", Some("Joe")).await?;
    wait_logged(&fixture.api, 3).await?;
    browser.goto(&fixture.url("/webhooks/logs")).await?;
    let mut all = column(browser, "Event type").await?;
    all.sort();
    anyhow::ensure!(
        all == ["submission.created", "submission.created", "webhook.test"],
        "{all:?}"
    );

    // By event type.
    browser
        .select_labelled("Event type", "webhook.test")
        .await?;
    apply_filters(browser).await?;
    anyhow::ensure!(column(browser, "Event type").await? == ["webhook.test"]);
    assert_query_holds(browser, &[("event_type", "webhook.test")]).await?;
    browser
        .select_labelled("Event type", "submission.created")
        .await?;
    apply_filters(browser).await?;
    anyhow::ensure!(
        column(browser, "Event type").await? == ["submission.created", "submission.created"]
    );
    assert_query_holds(browser, &[("event_type", "submission.created")]).await?;
    reset_filters(browser, "/webhooks/logs").await?;

    // By status code: a class that matches all, a code that matches none.
    browser.fill_labelled("Status code", "2xx").await?;
    apply_filters(browser).await?;
    let codes = column(browser, "Response code").await?;
    anyhow::ensure!(codes == ["200", "200", "200"], "{codes:?}");
    assert_query_holds(browser, &[("status", "2xx")]).await?;
    browser.fill_labelled("Status code", "404").await?;
    apply_filters(browser).await?;
    assert_query_holds(browser, &[("status", "404")]).await?;
    anyhow::ensure!(browser.count("#log-table").await? == 0);
    anyhow::ensure!(browser.text("#log-empty").await? == "No deliveries match");
    reset_filters(browser, "/webhooks/logs").await?;

    // By date range: one long ago (empty), one that includes today.
    browser.fill_labelled("From (UTC)", "2001-01-01").await?;
    browser.fill_labelled("To (UTC)", "2001-01-31").await?;
    apply_filters(browser).await?;
    assert_query_holds(browser, &[("from", "2001-01-01"), ("to", "2001-01-31")]).await?;
    anyhow::ensure!(browser.count("#log-table").await? == 0);
    browser.wait_for("#log-empty").await?;
    // From an hour ago's date (today, unless the test runs just after midnight) to today: the
    // end, a date alone, includes that whole day.
    let now = Utc::now();
    let from = (now - TimeDelta::hours(1)).format("%Y-%m-%d").to_string();
    let to = now.format("%Y-%m-%d").to_string();
    browser.fill_labelled("From (UTC)", &from).await?;
    browser.fill_labelled("To (UTC)", &to).await?;
    apply_filters(browser).await?;
    anyhow::ensure!(column(browser, "Event type").await?.len() == 3);
    assert_query_holds(browser, &[("from", &from), ("to", &to)]).await?;

    // All of them at once, and the address opens the same list again (bookmarkable).
    browser
        .select_labelled("Event type", "submission.created")
        .await?;
    browser.fill_labelled("Status code", "2xx").await?;
    apply_filters(browser).await?;
    let filters = [
        ("event_type", "submission.created"),
        ("status", "2xx"),
        ("from", from.as_str()),
        ("to", to.as_str()),
    ];
    assert_query_holds(browser, &filters).await?;
    let rows = table_rows(browser).await?;
    anyhow::ensure!(rows.len() == 2, "{rows:?}");
    let bookmark = browser.current_url().await?;
    browser.goto(&fixture.url("/webhooks/logs")).await?;
    browser.goto(&bookmark).await?;
    anyhow::ensure!(
        table_rows(browser).await? == rows,
        "the bookmark shows another list"
    );
    for (field, value) in [
        ("#filter-event-type", "submission.created"),
        ("#filter-status", "2xx"),
        ("#filter-from", from.as_str()),
        ("#filter-to", to.as_str()),
    ] {
        anyhow::ensure!(
            field_value(browser, field).await? == value,
            "{field} does not show the filter {value:?}"
        );
    }
    browser.screenshots("webhook-logs-filtered").await
}

/// A submission's delivery opened from the filtered list and redelivered; returns the detail
/// page's URL and the delivery id.
async fn detail_and_redeliver(
    fixture: &DashboardFixture,
    browser: &Browser,
) -> anyhow::Result<(String, String)> {
    browser.click_text("Details").await?;
    let path = browser.current_path().await?;
    anyhow::ensure!(path.starts_with("/webhooks/logs/"), "{path}");
    let facts = browser.text("#attempt-facts").await?;
    anyhow::ensure!(facts.contains("submission.created"), "{facts}");
    let delivery_id = browser
        .execute(
            "var terms = Array.from(document.querySelectorAll('#attempt-facts dt')); \
             var term = terms.find(function (t) { return t.innerText.trim() === 'Delivery id'; }); \
             return term ? term.nextElementSibling.innerText.trim() : null;",
            vec![],
        )
        .await?
        .as_str()
        .context("the page shows no delivery id")?
        .to_owned();
    let payload = browser.text("#request-payload").await?;
    anyhow::ensure!(
        payload.contains("\"event\": \"submission.created\"")
            && (payload.contains("Great service") || payload.contains("Could be faster")),
        "not the submission's payload: {payload}"
    );
    let headers = browser.text("#request-headers").await?;
    anyhow::ensure!(
        headers
            .to_ascii_lowercase()
            .contains(&format!("x-feedbackpulse-delivery {delivery_id}")),
        "{headers}"
    );
    anyhow::ensure!(browser.text("#response-body").await? == "ok");
    anyhow::ensure!(browser.count("#delivery-timeline li").await? == 1);
    let sent = |requests: &[fp_testkit::receiver::ReceivedRequest]| {
        requests
            .iter()
            .filter(|request| request.header("x-feedbackpulse-delivery") == Some(&delivery_id))
            .count()
    };
    anyhow::ensure!(sent(&fixture.receiver.requests()) == 1);
    browser.screenshots("log-detail").await?;

    browser.click_to_load("Redeliver").await?;
    browser.wait_for_path(&path).await?;
    assert_query_holds(browser, &[("redelivered", "2")]).await?;
    let notice = browser.text("#redeliver-outcome").await?;
    anyhow::ensure!(
        notice.contains("Redelivery queued as attempt 2"),
        "{notice}"
    );
    // The dispatcher sends it, log-ingest writes it: the timeline grows to two attempts.
    reload_until(browser, "attempt 2 in the timeline", |text| {
        text.contains("Attempt 2")
    })
    .await?;
    let timeline = browser.text("#delivery-timeline").await?;
    anyhow::ensure!(
        browser.count("#delivery-timeline li").await? == 2
            && timeline.contains("Attempt 1")
            && timeline.contains("manual"),
        "{timeline}"
    );
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while sent(&fixture.receiver.requests()) < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    anyhow::ensure!(
        sent(&fixture.receiver.requests()) == 2,
        "the receiver did not get delivery {delivery_id} twice"
    );
    browser.screenshots("log-detail-redelivered").await?;
    Ok((browser.current_url().await?, delivery_id))
}

/// The language switch: German on this page and on Integrations, then back to English.
async fn german(browser: &Browser, page: &str) -> anyhow::Result<()> {
    browser.goto(page).await?;
    let path = browser.current_path().await?;
    browser.click_to_load("DE").await?;
    browser.wait_for_path(&path).await?;
    let nav = browser.text("nav.site-nav").await?;
    anyhow::ensure!(nav.contains("Einstellungen > Integrations"), "{nav}");
    anyhow::ensure!(browser.text("h1").await? == "Zustellversuch");

    browser.click_text("Einstellungen > Integrations").await?;
    browser.wait_for_path("/settings/integrations").await?;
    let lang = browser
        .execute("return document.documentElement.lang;", vec![])
        .await?;
    anyhow::ensure!(lang == "de", "{lang}");
    let text = browser.page_text().await?;
    for german in [
        "Einstellungen > Integrations",
        "Webhook-Endpunkt",
        "Speichern",
    ] {
        anyhow::ensure!(text.contains(german), "{german:?} missing: {text}");
    }
    anyhow::ensure!(!text.contains("Webhook endpoint"), "English left: {text}");
    browser.labelled_field("Webhook URL").await?;
    browser.screenshots("integrations-de").await?;

    browser.click_to_load("EN").await?;
    browser.wait_for_path("/settings/integrations").await?;
    let text = browser.page_text().await?;
    anyhow::ensure!(
        text.contains("Settings > Integrations") && text.contains("Webhook endpoint"),
        "{text}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superadmin_sees_every_tenants_deliveries_and_filters_by_one() -> anyhow::Result<()> {
    browser_test_in("pages_admin", async |env, fixture, browser| {
        // Traffic of two tenants to the same receiver (set-up through the api).
        fixture.configure_webhook().await?;
        let second = fixture.pipeline.tenant(env, "Second GmbH").await?;
        second.configure(&fixture.receiver_url, None).await?;
        fixture.api.submit("From Acme's customer", None).await?;
        second.submit("From Second's customer", None).await?;
        second.submit("Another for Second", None).await?;
        wait_logged(&fixture.api, 1).await?;
        wait_logged(&second, 2).await?;

        log_in(
            browser,
            &fixture.base,
            &fixture.superadmin_email,
            &fixture.password,
        )
        .await?;
        browser.wait_for_path("/admin/webhook-logs").await?;
        // The platform's log and the user's own account; no tenant page.
        let nav = browser.text("nav.site-nav").await?;
        anyhow::ensure!(
            nav == "Admin: Webhook Logs\nAccount",
            "the superadmin's nav is {nav:?}"
        );
        let tenants = column(browser, "Tenant").await?;
        anyhow::ensure!(tenants.len() == 3, "{tenants:?}");
        for (name, id, count) in [
            ("Acme GmbH", &fixture.api.tenant_id, 1),
            ("Second GmbH", &second.tenant_id, 2),
        ] {
            let listed = tenants
                .iter()
                .filter(|cell| cell.contains(name) && cell.contains(id.as_str()))
                .count();
            anyhow::ensure!(listed == count, "{name} listed {listed} times: {tenants:?}");
        }
        let summary = browser.text("#platform-summary").await?;
        anyhow::ensure!(
            browser.text("#summary-attempts").await? == "3"
                && browser.text("#summary-success-rate").await? == "100.0 %",
            "{summary}"
        );
        browser.screenshots("admin-webhook-logs").await?;

        // Filtered by the second tenant's id.
        browser
            .fill_labelled("Tenant id", &second.tenant_id)
            .await?;
        apply_filters(browser).await?;
        assert_query_holds(browser, &[("tenant", &second.tenant_id)]).await?;
        let tenants = column(browser, "Tenant").await?;
        anyhow::ensure!(
            tenants.len() == 2 && tenants.iter().all(|cell| cell.contains("Second GmbH")),
            "{tenants:?}"
        );
        anyhow::ensure!(!browser.page_text().await?.contains("Acme GmbH"));
        anyhow::ensure!(browser.text("#summary-attempts").await? == "2");
        anyhow::ensure!(field_value(browser, "#filter-tenant").await? == second.tenant_id);
        browser.screenshots("admin-webhook-logs-filtered").await?;

        // An attempt of that tenant, read-only.
        browser.click_text("Details").await?;
        let path = browser.current_path().await?;
        anyhow::ensure!(path.starts_with("/admin/webhook-logs/"), "{path}");
        let facts = browser.text("#attempt-facts").await?;
        anyhow::ensure!(
            facts.contains("Second GmbH") && facts.contains(&second.tenant_id),
            "{facts}"
        );
        anyhow::ensure!(browser.text("#request-payload").await?.contains("Second"));
        anyhow::ensure!(
            browser.count("#redeliver").await? == 0,
            "a superadmin can redeliver"
        );
        browser.screenshots("admin-log-detail").await?;

        // And back.
        browser.click_text("Back to the list").await?;
        browser.wait_for_path("/admin/webhook-logs").await?;
        Ok(())
    })
    .await
}
