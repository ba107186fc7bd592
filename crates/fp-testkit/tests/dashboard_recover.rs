//! Recovering failed deliveries from the Webhook Logs page in a real headless Chromium, against the
//! real services: deliveries fail against a receiver answering 500, the receiver is fixed, and
//! "Recover failed deliveries since…" shows a preview (how many, to which URL; nothing sent yet),
//! its Confirm queues exactly those, and the progress page shows them delivered. At desktop size
//! and 390 px; screenshots in `target/screenshots/` (`recover-preview-*`, `recover-progress-*`).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use fp_testkit::browser::{Browser, DESKTOP, NARROW, log_in};
use fp_testkit::environment::TestEnvironment;
use fp_testkit::pipeline::{Pipeline, start_dashboard};
use fp_testkit::receiver::{CannedResponse, ReceivedRequest, TlsReceiver};
use fp_testkit::seed::attempt_row;
use fp_testkit::sessions::create_user;
use futures_util::FutureExt;

const PASSWORD: &str = "correct horse battery staple";
const SECRET: &str = "recover-secret";
const PATIENCE: Duration = Duration::from_secs(30);
/// Feedback submitted while the receiver is down: two deliveries that fail for good.
const FEEDBACK: [&str; 2] = ["Lost while the server was down", "Also lost"];

fn expected_signature(body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    format!(
        "sha256={}",
        hex::encode(ring::hmac::sign(&key, body).as_ref())
    )
}

/// The page must not be wider than the window: nothing to scroll sideways at 390 px.
async fn assert_fits(browser: &Browser, what: &str) -> anyhow::Result<()> {
    browser.resize(NARROW).await?;
    let widths = browser
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth]",
            vec![],
        )
        .await;
    browser.resize(DESKTOP).await?;
    let widths = widths?;
    anyhow::ensure!(
        widths[0].as_u64() <= widths[1].as_u64(),
        "the {what} is wider than a 390 px screen: {widths}"
    );
    Ok(())
}

/// Reloads the progress page until `done` holds for its counts (delivered, failed, pending), or
/// fails after `PATIENCE`. The page reloads itself too while deliveries are pending, so a read
/// that meets a reload is simply tried again.
async fn progress_until(
    browser: &Browser,
    url: &str,
    done: impl Fn((u64, u64, u64)) -> bool,
) -> anyhow::Result<(u64, u64, u64)> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        browser.goto(url).await?;
        let read = async {
            let count = async |id: &str| -> anyhow::Result<u64> {
                Ok(browser.text(&format!("#{id}")).await?.trim().parse()?)
            };
            anyhow::Ok((
                count("recovery-delivered").await?,
                count("recovery-failed").await?,
                count("recovery-pending").await?,
            ))
        }
        .await;
        match read {
            Ok(counts) if done(counts) => return Ok(counts),
            outcome if tokio::time::Instant::now() > deadline => {
                anyhow::bail!(
                    "the recovery did not get there within {PATIENCE:?}: {outcome:?}; the page \
                     says:\n{}",
                    browser.page_text().await.unwrap_or_default()
                )
            }
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_recovered_since_a_time_with_a_preview_and_their_progress()
-> anyhow::Result<()> {
    let broken = Arc::new(AtomicBool::new(true));
    let receiver = TlsReceiver::start(
        "127.0.0.1:0".parse()?,
        Arc::new({
            let broken = broken.clone();
            move |_: &ReceivedRequest, _| {
                if broken.load(Ordering::SeqCst) {
                    CannedResponse::new(500, "down")
                } else {
                    CannedResponse::new(200, "ok")
                }
            }
        }),
    )
    .await?;
    let mut env = TestEnvironment::new("browser_recover").await?;
    env.trust_receiver(&receiver)?;
    // One short retry, so a delivery fails for good within a second.
    env.set("FP__DISPATCHER__RETRY_SCHEDULE", "200ms");
    let outcome = AssertUnwindSafe(async {
        let pipeline = Pipeline::start(&mut env, 1).await?;
        let (address, _) = start_dashboard(&mut env, pipeline.api).await?;
        let base = format!("http://{address}");
        let tenant = pipeline.tenant(&env, "Acme GmbH").await?;
        let email = "admin@acme.example";
        create_user(&env, email, PASSWORD, Some(&tenant.tenant_id)).await?;
        let config = tenant
            .configure(&receiver.url("/webhooks/feedbackpulse"), Some(SECRET))
            .await?;
        let url = config["url"].as_str().context("url")?.to_owned();

        // A delivery that failed two days ago: before the form's default "since" (a day ago).
        let mut conn = fp_store::connect(&env.database_url).await?;
        let old = fp_store::attempts::AttemptRow {
            url: url.clone(),
            response_status: Some(500),
            ..attempt_row(
                tenant.tenant_id.parse()?,
                Utc::now() - chrono::Duration::days(2),
            )
        };
        fp_store::attempts::insert_batch(&mut conn, std::slice::from_ref(&old)).await?;

        // Two deliveries fail for good against the broken receiver.
        for text in FEEDBACK {
            tenant.submit(text, Some("Jane")).await?;
        }
        let entries = tenant
            .logs_until(PATIENCE, |entries| {
                entries
                    .iter()
                    .filter(|entry| entry["final"] == true && entry["response_code"] == 500)
                    .count()
                    == 3
            })
            .await?;
        let mut failed: Vec<String> = entries
            .iter()
            .filter(|entry| entry["final"] == true && entry["delivery_id"] != old.delivery_id.to_string())
            .filter_map(|entry| entry["delivery_id"].as_str().map(str::to_owned))
            .collect();
        failed.sort();
        anyhow::ensure!(failed.len() == 2, "two failed deliveries expected: {entries:?}");
        let sent_while_broken = receiver.requests().len();
        anyhow::ensure!(sent_while_broken == 4, "two attempts each: {sent_while_broken}");

        // The receiver is fixed.
        broken.store(false, Ordering::SeqCst);

        let browser = Browser::start().await?;
        let tested = async {
            log_in(&browser, &base, email, PASSWORD).await?;
            browser.goto(&format!("{base}/webhooks/logs")).await?;
            // The form is labelled, with the zone its time is read in, and holds a default.
            let since = browser.wait_for("#recover-since").await?;
            let value = since.prop("value").await?.unwrap_or_default();
            anyhow::ensure!(
                value.len() == "2026-12-04T09:30".len() && value.contains('T'),
                "the since field holds {value:?}"
            );
            let label = browser.text("label[for='recover-since']").await?;
            anyhow::ensure!(label.starts_with("Since ("), "{label}");
            browser.assert_no_script_ran().await?;
            browser.screenshots("recover-form").await?;

            // A time the recovery cannot take is refused next to the field, before the api is asked.
            for (since, says) in [
                ("", "Choose the time to recover from."),
                ("2020-01-01T00:00", "Choose a time within the last 31 days"),
                ("2999-01-01T00:00", "Choose a time in the past."),
            ] {
                browser
                    .goto(&format!("{base}/webhooks/logs/recover?since={since}"))
                    .await?;
                let error = browser.text("#recover-since-error").await?;
                anyhow::ensure!(error.starts_with(says), "{since:?}: {error}");
                anyhow::ensure!(browser.count("#recover-confirm").await? == 0);
            }
            browser.goto(&format!("{base}/webhooks/logs")).await?;

            // The preview: how many, and where to; nothing is sent yet.
            browser.click_text("Preview recovery").await?;
            browser.wait_for_path("/webhooks/logs/recover").await?;
            let page = browser.page_text().await?;
            for expected in [
                "2 failed deliveries will be sent again",
                url.as_str(),
                "Confirm and send",
                "Cancel",
            ] {
                anyhow::ensure!(page.contains(expected), "{expected:?} missing: {page}");
            }
            anyhow::ensure!(browser.text("#recover-count").await? == "2");
            browser.assert_no_script_ran().await?;
            assert_fits(&browser, "preview").await?;
            browser.screenshots("recover-preview").await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            anyhow::ensure!(
                receiver.requests().len() == sent_while_broken,
                "the preview sent something"
            );

            // Confirm without the form's token is refused, and sends nothing.
            let preview_url = browser.current_url().await?;
            let removed = browser
                .execute(
                    "var token = document.querySelector(\".recover-confirm input[name='csrf_token']\"); \
                     if (!token) { return false; } token.remove(); return true;",
                    vec![],
                )
                .await?;
            anyhow::ensure!(removed == true, "the confirm form has no csrf_token field");
            browser.click_to_load("Confirm and send").await?;
            let refused = browser.page_text().await?;
            anyhow::ensure!(refused.contains("expired"), "not refused: {refused}");
            tokio::time::sleep(Duration::from_millis(500)).await;
            anyhow::ensure!(receiver.requests().len() == sent_while_broken);

            // Confirmed: to the recovery's progress, which ends with both delivered.
            browser.goto(&preview_url).await?;
            browser.click_text("Confirm and send").await?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !browser
                .current_path()
                .await?
                .starts_with("/webhooks/logs/recoveries/")
            {
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "no progress page after Confirm: {}",
                    browser.page_text().await?
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let progress_url = browser.current_url().await?;
            let counts = progress_until(&browser, &progress_url, |(delivered, _, pending)| {
                delivered == 2 && pending == 0
            })
            .await?;
            anyhow::ensure!(counts == (2, 0, 0), "{counts:?}");
            anyhow::ensure!(browser.text("#recovery-redelivered").await? == "2");
            let status = browser.text("#recovery-status").await?;
            anyhow::ensure!(status.starts_with("Done"), "{status}");
            // Done: the page no longer reloads itself.
            anyhow::ensure!(
                browser.count("meta[http-equiv='refresh']").await? == 0,
                "a finished recovery's page still reloads"
            );
            browser.assert_no_script_ran().await?;
            assert_fits(&browser, "progress page").await?;
            browser.screenshots("recover-progress").await?;
            browser.click_text("Open the Webhook Logs").await?;
            browser.wait_for_path("/webhooks/logs").await?;

            // A recovered delivery's page: its three attempts, each with the URL it went to.
            let entries = tenant
                .logs_until(PATIENCE, |entries| {
                    entries.iter().filter(|entry| entry["manual"] == true).count() == 2
                })
                .await?;
            let recovered = entries
                .iter()
                .find(|entry| entry["manual"] == true)
                .and_then(|entry| entry["id"].as_str())
                .context("a manual attempt in the log")?;
            browser
                .goto(&format!("{base}/webhooks/logs/{recovered}"))
                .await?;
            let timeline = browser.text("#delivery-timeline").await?;
            anyhow::ensure!(
                timeline.matches(&format!("to {url}")).count() == 3,
                "each attempt should name its URL: {timeline}"
            );
            anyhow::Ok(())
        }
        .await;
        let closed = browser.close().await;
        tested.and(closed)?;

        // Exactly the two were sent again, each under its delivery id and signed anew; the older
        // failure was left alone.
        let requests = receiver.wait_for(sent_while_broken + 2, PATIENCE).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let again = &receiver.requests()[sent_while_broken..];
        anyhow::ensure!(again.len() == 2, "{} sent again", again.len());
        let mut redelivered: Vec<String> = again
            .iter()
            .map(|request| {
                request
                    .header("x-feedbackpulse-delivery")
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        redelivered.sort();
        anyhow::ensure!(redelivered == failed, "{redelivered:?} != {failed:?}");
        for request in again {
            anyhow::ensure!(
                request.header("x-feedbackpulse-signature")
                    == Some(expected_signature(&request.body).as_str()),
                "not signed with the secret"
            );
            let first = requests
                .iter()
                .find(|earlier| {
                    earlier.header("x-feedbackpulse-delivery")
                        == request.header("x-feedbackpulse-delivery")
                })
                .context("the first attempt")?;
            anyhow::ensure!(first.body == request.body, "not the stored body");
        }
        anyhow::Ok(())
    })
    .catch_unwind()
    .await;
    env.finish_after_unwinding(outcome).await
}
