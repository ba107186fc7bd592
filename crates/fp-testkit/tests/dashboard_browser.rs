//! The dashboard in a real headless Chromium (Debian's chromium and chromedriver, installed by
//! `deploy/local/ensure-browser.sh`), against the real services: log-in, the webhook log, log-out,
//! hostile feedback text shown as text, and forms refused without their CSRF token. Screenshots of
//! each page, desktop and narrow, land in `target/screenshots/`.

use std::time::Duration;

use anyhow::Context;
use fp_testkit::browser::{Browser, log_in};
use fp_testkit::dashboard::{DashboardFixture, browser_test};
use serde_json::Value;

/// Feedback anyone can submit, which must reach every page as text and never run.
const HOSTILE: &str = "<script>alert(1)</script><img src=x onerror=alert(2)>";
const DELIVERED: Duration = Duration::from_secs(30);

/// Submits `text` as feedback and waits until its delivery shows in the tenant's log.
async fn submit_and_wait_logged(fixture: &DashboardFixture, text: &str) -> anyhow::Result<()> {
    fixture.api.submit(text, Some(text)).await?;
    let entries = fixture
        .api
        .logs_until(DELIVERED, |entries| {
            entries
                .iter()
                .any(|entry| entry["payload"].as_str().is_some_and(|p| p.contains(text)))
        })
        .await?;
    let logged = entries
        .iter()
        .find(|entry| {
            entry["payload"]
                .as_str()
                .is_some_and(|payload| payload.contains(text))
        })
        .with_context(|| format!("the delivery of {text:?} was not logged: {entries:?}"))?;
    anyhow::ensure!(logged["response_code"] == 200, "{logged}");
    Ok(())
}

/// Signed in: the header's log-out form is there and the logs page opens.
async fn assert_signed_in(fixture: &DashboardFixture, browser: &Browser) -> anyhow::Result<()> {
    browser.goto(&fixture.url("/webhooks/logs")).await?;
    browser.wait_for_path("/webhooks/logs").await?;
    anyhow::ensure!(
        browser.count("form[action='/logout']").await? == 1,
        "no log-out form on the logs page"
    );
    Ok(())
}

/// Signed out: the logs page sends the browser to the log-in form.
async fn assert_signed_out(fixture: &DashboardFixture, browser: &Browser) -> anyhow::Result<()> {
    browser.goto(&fixture.url("/webhooks/logs")).await?;
    browser.wait_for_path("/login").await?;
    browser.labelled_field("Password").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_in_shows_the_webhook_logs_and_log_out_ends_the_session() -> anyhow::Result<()> {
    browser_test("browser_login", async |fixture, browser| {
        fixture.configure_webhook().await?;
        submit_and_wait_logged(fixture, "Love this product!").await?;

        browser.goto(&fixture.url("/login")).await?;
        // Found through their labels, so the fields are labelled.
        browser.labelled_field("Email").await?;
        browser.labelled_field("Password").await?;
        browser.screenshots("login").await?;

        // A wrong password keeps the form, says so, and signs nobody in.
        browser
            .fill_labelled("Email", &fixture.tenant_email)
            .await?;
        browser
            .fill_labelled("Password", "not the password at all")
            .await?;
        browser.click_to_load("Log in").await?;
        browser.wait_for_path("/login").await?;
        let refused = browser.page_text().await?;
        anyhow::ensure!(
            refused.contains("Invalid email or password"),
            "no error after a wrong password: {refused}"
        );
        browser.screenshots("login-refused").await?;
        assert_signed_out(fixture, browser).await?;

        // The right one leads to the tenant's webhook log.
        log_in(
            browser,
            &fixture.base,
            &fixture.tenant_email,
            &fixture.password,
        )
        .await?;
        browser.wait_for_path("/webhooks/logs").await?;
        let page = browser.page_text().await?;
        for expected in [
            "Webhook Logs",
            fixture.tenant_email.as_str(),
            "submission.created",
            fixture.receiver_url.as_str(),
        ] {
            anyhow::ensure!(page.contains(expected), "{expected:?} missing: {page}");
        }
        browser.screenshots("webhook-logs-after-login").await?;

        browser.click_text("Log out").await?;
        browser.wait_for_path("/login").await?;
        assert_signed_out(fixture, browser).await?;

        // The superadmin signs in too (whatever page the platform view is).
        log_in(
            browser,
            &fixture.base,
            &fixture.superadmin_email,
            &fixture.password,
        )
        .await?;
        anyhow::ensure!(
            browser
                .page_text()
                .await?
                .contains(&fixture.superadmin_email),
            "the superadmin's page does not name who is signed in"
        );
        browser.click_text("Log out").await?;
        browser.wait_for_path("/login").await
    })
    .await
}

/// Checks the current page and the delivery pages it links to (`detail_links`, a CSS selector):
/// no script ran on any, and [`HOSTILE`] shows as text on at least one of them when `required`.
/// Each page that shows it gets its screenshots, named `<name>-<n>`.
async fn check_hostile_pages(
    browser: &Browser,
    detail_links: &str,
    name: &str,
    required: bool,
) -> anyhow::Result<()> {
    let list = browser.current_url().await?;
    browser.assert_no_script_ran().await?;
    let mut shown = Vec::new();
    if browser.shows_text(HOSTILE).await? {
        browser.assert_inert_text(HOSTILE).await?;
        browser.screenshots(&format!("{name}-list")).await?;
        shown.push(list.clone());
    }
    // One delivery here, so a handful of links covers it; more would only slow the test.
    let details = browser.links(detail_links).await?;
    for (index, detail) in details.iter().take(5).enumerate() {
        browser.goto(detail).await?;
        browser.assert_no_script_ran().await?;
        if browser.shows_text(HOSTILE).await? {
            browser.assert_inert_text(HOSTILE).await?;
            browser
                .screenshots(&format!("{name}-detail-{index}"))
                .await?;
            shown.push(detail.clone());
        }
    }
    anyhow::ensure!(
        !required || !shown.is_empty(),
        "the feedback text is shown neither on {list} nor on the deliveries it links to \
         ({details:?})"
    );
    eprintln!("{HOSTILE:?} shows as inert text on {shown:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_feedback_shows_as_text_and_runs_no_script() -> anyhow::Result<()> {
    browser_test("browser_xss", async |fixture, browser| {
        fixture.configure_webhook().await?;
        submit_and_wait_logged(fixture, HOSTILE).await?;
        // The receiver really got it, in the JSON body as the tenant will.
        let requests = fixture.receiver.wait_for(1, DELIVERED).await?;
        let body: Value = serde_json::from_slice(&requests[0].body)?;
        anyhow::ensure!(body["data"]["text_feedback"] == HOSTILE, "{body}");

        // The tenant's log and its delivery pages.
        log_in(
            browser,
            &fixture.base,
            &fixture.tenant_email,
            &fixture.password,
        )
        .await?;
        browser.goto(&fixture.url("/webhooks/logs")).await?;
        anyhow::ensure!(
            !browser.alert_open().await?,
            "a JavaScript dialog opened on the webhook log: the feedback's script ran"
        );
        check_hostile_pages(
            browser,
            "a[href*='/webhooks/logs/']",
            "hostile-feedback",
            true,
        )
        .await?;
        browser.click_text("Log out").await?;
        browser.wait_for_path("/login").await?;

        // The superadmin's view of every tenant (what it links to, wherever it lands).
        log_in(
            browser,
            &fixture.base,
            &fixture.superadmin_email,
            &fixture.password,
        )
        .await?;
        let links = browser.links("a[href*='logs/']").await?;
        check_hostile_pages(
            browser,
            "a[href*='logs/']",
            "hostile-feedback-admin",
            !links.is_empty(),
        )
        .await
    })
    .await
}

/// The probe itself: a page whose script does run is caught, so a pass above means something.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_script_probe_sees_script_that_runs() -> anyhow::Result<()> {
    let browser = Browser::start().await?;
    let probed = async {
        browser
            .goto("data:text/html,<p>hello</p><script>alert(1)</script>")
            .await?;
        anyhow::ensure!(browser.alert_open().await?, "alert(1) went unseen");
        anyhow::ensure!(browser.assert_no_script_ran().await.is_err());
        browser.dismiss_alert().await?;
        anyhow::ensure!(!browser.alert_open().await?);

        browser
            .goto("data:text/html,<p>hello</p><img src=x onerror=alert(2)>")
            .await?;
        anyhow::ensure!(browser.alert_open().await?, "onerror=alert(2) went unseen");
        browser.dismiss_alert().await?;
        // Without the dialog, the handler attribute alone fails the check.
        anyhow::ensure!(browser.assert_no_script_ran().await.is_err());

        let escaped = "data:text/html,<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>";
        browser.goto(escaped).await?;
        browser.assert_inert_text("<script>alert(1)</script>").await
    }
    .await;
    let closed = browser.close().await;
    probed.and(closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_without_their_csrf_token_are_refused() -> anyhow::Result<()> {
    browser_test("browser_csrf", async |fixture, browser| {
        // Log-in without a token: refused even with the right password.
        browser.goto(&fixture.url("/login")).await?;
        let removed = browser
            .execute(
                "var token = document.querySelector(\"form[action='/login'] input[name='csrf_token']\"); \
                 if (!token) { return false; } token.remove(); return true;",
                vec![],
            )
            .await?;
        anyhow::ensure!(removed == true, "the log-in form has no csrf_token field");
        browser
            .fill_labelled("Email", &fixture.tenant_email)
            .await?;
        browser.fill_labelled("Password", &fixture.password).await?;
        browser.click_to_load("Log in").await?;
        browser.wait_for_path("/login").await?;
        let refused = browser.page_text().await?;
        anyhow::ensure!(
            refused.contains("expired"),
            "the log-in without a token does not say it was refused: {refused}"
        );
        browser.screenshots("login-without-token").await?;
        assert_signed_out(fixture, browser).await?;

        // A forged token is refused the same way.
        browser.goto(&fixture.url("/login")).await?;
        browser
            .execute(
                "document.querySelector(\"form[action='/login'] input[name='csrf_token']\").value = 'forged';",
                vec![],
            )
            .await?;
        browser
            .fill_labelled("Email", &fixture.tenant_email)
            .await?;
        browser.fill_labelled("Password", &fixture.password).await?;
        browser.click_to_load("Log in").await?;
        browser.wait_for_path("/login").await?;
        assert_signed_out(fixture, browser).await?;

        // Signed in, a log-out posted without its token is refused and the session stays.
        log_in(
            browser,
            &fixture.base,
            &fixture.tenant_email,
            &fixture.password,
        )
        .await?;
        assert_signed_in(fixture, browser).await?;
        let removed = browser
            .execute(
                "var token = document.querySelector(\"form[action='/logout'] input[name='csrf_token']\"); \
                 if (!token) { return false; } token.remove(); return true;",
                vec![],
            )
            .await?;
        anyhow::ensure!(removed == true, "the log-out form has no csrf_token field");
        browser.click_text("Log out").await?;
        // The refusal is a page of its own at /logout, not the redirect to /login.
        browser.wait_for_path("/logout").await?;
        let refused = browser.page_text().await?;
        anyhow::ensure!(
            refused.contains("expired"),
            "the log-out without a token does not say it was refused: {refused}"
        );
        browser.screenshots("logout-without-token").await?;
        assert_signed_in(fixture, browser).await?;

        // With its token, the same form logs out.
        browser.click_text("Log out").await?;
        browser.wait_for_path("/login").await?;
        assert_signed_out(fixture, browser).await
    })
    .await
}
