//! Times in the user's time zone (issue 14): a browser whose language is German from Germany
//! (`de-DE`) reads a real attempt's time in Europe/Berlin with its UTC time on hover, and the logs
//! filter reads typed times in that zone; choosing America/New_York on the Account page moves
//! both. Without a choice the zone comes from the `Accept-Language` region, with no script (HTTP
//! tests); the api stores the choice and refuses a name that is no zone.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, TimeDelta, Utc};
use fp_domain::time_zone::Tz;
use fp_testkit::browser::{Browser, log_in};
use fp_testkit::dashboard::{
    DashboardFixture, browser_test_in_languages, form_body, hidden_field_after, html_escaped,
    http_session, http_session_cookie,
};
use fp_testkit::environment::TestEnvironment;
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(30);

/// One submission delivered to the receiver; its attempt's id and time, as the api logs them.
async fn one_attempt(fixture: &DashboardFixture) -> anyhow::Result<(String, DateTime<Utc>)> {
    fixture.configure_webhook().await?;
    fixture.api.submit("On time?", None).await?;
    let entries = fixture
        .api
        .logs_until(PATIENCE, |entries| !entries.is_empty())
        .await?;
    let entry = entries.first().context("no attempt logged")?;
    let id = entry["id"].as_str().context("an id")?.to_owned();
    let at = entry["timestamp"]
        .as_str()
        .context("a timestamp")?
        .parse::<DateTime<Utc>>()?;
    Ok((id, at))
}

/// How the dashboard must show `at` in `zone`, independently of its own formatter: the local time
/// with the zone's abbreviation, and the UTC time for the hover.
fn expected(at: DateTime<Utc>, zone: Tz) -> (String, String) {
    (
        at.with_timezone(&zone)
            .format("%Y-%m-%d %H:%M:%S %Z")
            .to_string(),
        at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// The text, `title` and `datetime` of the time of the attempt `id` in the log table.
async fn listed_time(browser: &Browser, id: &str) -> anyhow::Result<(String, String, String)> {
    let found = browser
        .execute(
            "var time = document.querySelector('tr[data-attempt-id=\"' + arguments[0] + '\"] time'); \
             return time ? [time.innerText.trim(), time.getAttribute('title'), \
               time.getAttribute('datetime')] : null;",
            vec![json!(id)],
        )
        .await?;
    let parts: Option<(String, String, String)> = serde_json::from_value(found)?;
    parts.with_context(|| format!("attempt {id} is not listed with a time"))
}

/// Whether the attempt `id` is in the log table.
async fn listed(browser: &Browser, id: &str) -> anyhow::Result<bool> {
    Ok(browser
        .count(&format!("tr[data-attempt-id=\"{id}\"]"))
        .await?
        > 0)
}

/// Submits the filter form and waits for the filtered list (its address carries the range).
async fn apply_filters(browser: &Browser) -> anyhow::Result<()> {
    browser.click_to_load("Apply filters").await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !browser.current_url().await?.contains("from=") {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the filtered list did not open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser.wait_loaded().await
}

/// Filters the list by the minute of `at` as the clock of `zone` shows it (`From` that minute,
/// `To` the next), typed into the fields labelled with `zone`.
async fn filter_minute_of(browser: &Browser, at: DateTime<Utc>, zone: Tz) -> anyhow::Result<()> {
    let local = at.with_timezone(&zone);
    let from = local.format("%Y-%m-%d %H:%M").to_string();
    let to = (local + TimeDelta::minutes(1))
        .format("%Y-%m-%d %H:%M")
        .to_string();
    browser
        .fill_labelled(&format!("From ({})", zone.name()), &from)
        .await?;
    browser
        .fill_labelled(&format!("To ({})", zone.name()), &to)
        .await?;
    apply_filters(browser).await?;
    anyhow::ensure!(
        browser.count("#filter-errors").await? == 0,
        "the filter was refused: {}",
        browser.page_text().await?
    );
    Ok(())
}

/// The list shows the attempt in `zone`, with UTC on hover; the filter, labelled with `zone`,
/// finds it by the minute on `zone`'s clock and shows its range in `zone`.
async fn check_zone(
    browser: &Browser,
    fixture: &DashboardFixture,
    id: &str,
    at: DateTime<Utc>,
    zone: Tz,
) -> anyhow::Result<()> {
    browser.goto(&fixture.url("/webhooks/logs")).await?;
    let (local, utc) = expected(at, zone);
    let (text, title, datetime) = listed_time(browser, id).await?;
    anyhow::ensure!(
        (text.as_str(), title.as_str()) == (local.as_str(), utc.as_str()),
        "attempt at {at} shown as {text:?} (title {title:?}), expected {local:?} ({utc:?})"
    );
    anyhow::ensure!(
        datetime.parse::<DateTime<Utc>>()? == to_the_second(at),
        "datetime {datetime:?} for {at}"
    );
    let zone_hint = browser.text("#filter-time-zone").await?;
    anyhow::ensure!(zone_hint.contains(zone.name()), "{zone_hint}");

    filter_minute_of(browser, at, zone).await?;
    anyhow::ensure!(
        listed(browser, id).await?,
        "the minute of {at} on {zone}'s clock does not find it"
    );
    // The range is shown in the zone too.
    let range = browser.text("#log-range").await?;
    let from_shown = at.with_timezone(&zone).format("%Y-%m-%d %H:%M").to_string();
    anyhow::ensure!(range.contains(&from_shown), "{range} lacks {from_shown}");
    Ok(())
}

/// The instant to the second, as a page's `datetime` gives it.
fn to_the_second(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at)
}

/// Types the wall-clock minute of `at` in `other` into the fields of the user's `zone`: a
/// different instant, so the attempt is not found. Shows that the fields are read in `zone`.
async fn same_wall_clock_elsewhere_misses(
    browser: &Browser,
    fixture: &DashboardFixture,
    id: &str,
    at: DateTime<Utc>,
    zone: Tz,
    other: Tz,
) -> anyhow::Result<()> {
    browser.goto(&fixture.url("/webhooks/logs")).await?;
    let local = at.with_timezone(&other);
    let from = local.format("%Y-%m-%d %H:%M").to_string();
    let to = (local + TimeDelta::minutes(1))
        .format("%Y-%m-%d %H:%M")
        .to_string();
    browser
        .fill_labelled(&format!("From ({})", zone.name()), &from)
        .await?;
    browser
        .fill_labelled(&format!("To ({})", zone.name()), &to)
        .await?;
    apply_filters(browser).await?;
    anyhow::ensure!(
        !listed(browser, id).await?,
        "{other}'s wall clock typed as {zone}'s still finds the attempt at {at}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_follow_the_browsers_region_then_the_users_choice() -> anyhow::Result<()> {
    browser_test_in_languages("tz_browser", "de-DE,de", async |_, fixture, browser| {
        let (id, at) = one_attempt(fixture).await?;
        // English pages (the tests' labels) for a browser from Germany: the language switch
        // sets the language, the browser's region still sets the zone.
        browser.goto(&fixture.url("/lang/en?back=%2Flogin")).await?;
        log_in(
            browser,
            &fixture.base,
            &fixture.tenant_email,
            &fixture.password,
        )
        .await?;

        let berlin = Tz::Europe__Berlin;
        let new_york = Tz::America__New_York;
        check_zone(browser, fixture, &id, at, berlin).await?;
        same_wall_clock_elsewhere_misses(browser, fixture, &id, at, berlin, new_york).await?;
        browser.goto(&fixture.url("/webhooks/logs")).await?;
        browser.screenshots("logs-time-zone").await?;

        // The Account page: automatic, from the browser's language, is Berlin.
        browser.goto(&fixture.url("/account")).await?;
        let current = browser.text("#time-zone-current").await?;
        anyhow::ensure!(current.contains("Europe/Berlin"), "{current}");
        let automatic = browser
            .execute(
                "var select = document.getElementById('time-zone'); \
                     return select.options[select.selectedIndex].text;",
                vec![],
            )
            .await?;
        anyhow::ensure!(
            automatic == "Automatic (from your browser's language: Europe/Berlin)",
            "{automatic}"
        );
        browser
            .select_labelled("Show times in", "America/New_York")
            .await?;
        browser.click_to_load("Save time zone").await?;
        browser.wait_for_path("/account").await?;
        let current = browser.text("#time-zone-current").await?;
        anyhow::ensure!(current.contains("America/New_York"), "{current}");
        // The sessions' times are in it too.
        let session_time = browser.text("table.sessions time").await?;
        anyhow::ensure!(
            session_time.ends_with(" EST") || session_time.ends_with(" EDT"),
            "{session_time}"
        );
        browser.screenshots("account").await?;
        // At phone width the page still fits: the long select does not widen it.
        browser.resize((390, 844)).await?;
        let width = browser
            .execute("return document.documentElement.scrollWidth;", vec![])
            .await?;
        anyhow::ensure!(
            width.as_u64().is_some_and(|width| width <= 390),
            "the account page is {width} px wide at 390 px"
        );
        let narrow_time = browser.text("table.sessions time").await?;
        anyhow::ensure!(narrow_time == session_time, "{narrow_time}");
        browser.resize((1280, 900)).await?;

        // Now every time is New York's, and the filter reads New York's clock.
        check_zone(browser, fixture, &id, at, new_york).await?;
        same_wall_clock_elsewhere_misses(browser, fixture, &id, at, new_york, berlin).await?;
        browser.resize((390, 844)).await?;
        browser.goto(&fixture.url("/webhooks/logs")).await?;
        let (text, _, _) = listed_time(browser, &id).await?;
        anyhow::ensure!(text == expected(at, new_york).0, "{text} at 390 px");
        browser.resize((1280, 900)).await?;
        Ok(())
    })
    .await
}

/// The `<time>` of the attempt `id` in a page's HTML, as the dashboard writes it.
fn time_element(at: DateTime<Utc>, zone: Tz) -> String {
    let (local, utc) = expected(at, zone);
    format!(
        r#"<time datetime="{}" title="{}">{}</time>"#,
        to_the_second(at).format("%Y-%m-%dT%H:%M:%SZ"),
        html_escaped(&utc),
        html_escaped(&local)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_choice_the_accept_language_region_decides() -> anyhow::Result<()> {
    let mut env = TestEnvironment::new("tz_http").await?;
    let outcome = async {
        let fixture = DashboardFixture::start(&mut env).await?;
        let (_, at) = one_attempt(&fixture).await?;
        for (accept_language, zone) in [
            ("de-AT,de;q=0.9", Tz::Europe__Vienna),
            ("en-GB,en;q=0.8", Tz::Europe__London),
            ("en-US,en;q=0.9", Tz::America__New_York),
            ("fr-FR", Tz::Europe__Paris),
            ("en", Tz::UTC),
            ("es-419", Tz::UTC),
        ] {
            let client = http_session(
                &fixture.base,
                &fixture.tenant_email,
                &fixture.password,
                accept_language,
            )
            .await?;
            let page = client
                .get(fixture.url("/webhooks/logs"))
                .send()
                .await?
                .text()
                .await?;
            anyhow::ensure!(
                page.contains(&time_element(at, zone)),
                "{accept_language}: no {} in {page}",
                time_element(at, zone)
            );
            anyhow::ensure!(
                page.contains(&format!("<strong>{}</strong>", html_escaped(zone.name()))),
                "{accept_language}: the filter does not name {zone}"
            );
        }

        // A name that is no zone is refused on the Account page, and nothing changes.
        let client = http_session(
            &fixture.base,
            &fixture.tenant_email,
            &fixture.password,
            "de-DE",
        )
        .await?;
        let account = client
            .get(fixture.url("/account"))
            .send()
            .await?
            .text()
            .await?;
        let token = hidden_field_after(&account, r#"action="/account/time-zone""#, "csrf_token")
            .context("the time zone form has no CSRF token")?;
        let refused = client
            .post(fixture.url("/account/time-zone"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&[
                ("csrf_token", &token),
                ("time_zone", "Europe/Atlantis"),
            ]))
            .send()
            .await?;
        anyhow::ensure!(refused.status() == 422, "{}", refused.status());
        let page = refused.text().await?;
        anyhow::ensure!(page.contains(r#"id="time-zone-error""#), "{page}");
        // Without the form's token: refused, not saved.
        let stale = client
            .post(fixture.url("/account/time-zone"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&[("time_zone", "Asia/Tokyo")]))
            .send()
            .await?;
        anyhow::ensure!(stale.status() == 403, "{}", stale.status());
        let page = client
            .get(fixture.url("/webhooks/logs"))
            .send()
            .await?
            .text()
            .await?;
        anyhow::ensure!(
            page.contains(&time_element(at, Tz::Europe__Berlin)),
            "{page}"
        );
        anyhow::Ok(())
    }
    .await;
    env.finish_after(outcome).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_stores_a_zone_and_refuses_one_that_is_not() -> anyhow::Result<()> {
    let mut env = TestEnvironment::new("tz_api").await?;
    let outcome = async {
        let fixture = DashboardFixture::start(&mut env).await?;
        let token =
            http_session_cookie(&fixture.base, &fixture.tenant_email, &fixture.password).await?;
        let api = format!("http://{}", fixture.pipeline.api);
        let http = reqwest::Client::builder().no_proxy().build()?;
        let session = format!("Session {token}");
        // `(status, body)` of a call to the api with `authorization`.
        let call = async |method: reqwest::Method,
                          path: &str,
                          authorization: &str,
                          body: Option<Value>| {
            let mut request = http
                .request(method, format!("{api}{path}"))
                .header("authorization", authorization);
            if let Some(body) = body {
                request = request
                    .header("content-type", "application/json")
                    .body(body.to_string());
            }
            let response = request.send().await?;
            let status = response.status().as_u16();
            let text = response.text().await?;
            let body: Value = if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text)?
            };
            anyhow::Ok((status, body))
        };
        let put = async |body: Value| {
            call(
                reqwest::Method::PUT,
                "/api/v2/account/time-zone",
                &session,
                Some(body),
            )
            .await
        };
        let current_zone = async || {
            let (status, body) = call(
                reqwest::Method::GET,
                "/api/v2/sessions/current",
                &session,
                None,
            )
            .await?;
            anyhow::ensure!(status == 200, "{status}: {body}");
            anyhow::Ok(body["user"]["time_zone"].clone())
        };
        anyhow::ensure!(current_zone().await?.is_null());

        let (status, saved) = put(json!({"time_zone": "Europe/Berlin"})).await?;
        anyhow::ensure!(
            status == 200 && saved["time_zone"] == "Europe/Berlin",
            "{status}: {saved}"
        );
        anyhow::ensure!(current_zone().await? == "Europe/Berlin");

        for body in [
            json!({"time_zone": "Europe/Atlantis"}),
            json!({"time_zone": "europe/berlin"}),
            json!({"time_zone": 7}),
            json!({}),
        ] {
            let (status, error) = put(body.clone()).await?;
            anyhow::ensure!(status == 422, "{body}: {status}");
            anyhow::ensure!(error["error"]["field"] == "time_zone", "{body}: {error}");
        }
        anyhow::ensure!(current_zone().await? == "Europe/Berlin");

        let (status, reset) = put(json!({"time_zone": null})).await?;
        anyhow::ensure!(
            status == 200 && reset["time_zone"].is_null(),
            "{status}: {reset}"
        );
        anyhow::ensure!(current_zone().await?.is_null());

        // A tenant's API key is no session: the route is the user's own.
        let key = format!("Bearer {}", fixture.api.key);
        let (status, _) = call(
            reqwest::Method::PUT,
            "/api/v2/account/time-zone",
            &key,
            Some(json!({"time_zone": "UTC"})),
        )
        .await?;
        anyhow::ensure!(status == 403, "{status}");
        anyhow::Ok(())
    }
    .await;
    env.finish_after(outcome).await
}
