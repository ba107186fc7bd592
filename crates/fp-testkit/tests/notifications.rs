//! Email notifications on the real pipeline: an endpoint that answers 500 to every delivery gets
//! its tenant's admins, and no one else, exactly one "failing" email once it has failed for
//! `notifications.failing_after` and one "disabled" email when the api disables it, each with the
//! explanation of the failure and its fix, received by a real SMTP server (the mail sink). Saving
//! the config again and a success end the run of failures, so a later run is announced again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use fp_domain::explanation::Explanation;
use fp_domain::notification::{DISABLED_SUBJECT, FAILING_SUBJECT};
use fp_testkit::environment::{TestEnvironment, free_local_address};
use fp_testkit::mail_sink::{MailSink, ReceivedMail};
use fp_testkit::pipeline::{Pipeline, TenantApi, metrics_text};
use fp_testkit::receiver::{CannedResponse, ReceivedRequest, TlsReceiver};
use fp_testkit::sessions::create_user;

const PATIENCE: Duration = Duration::from_secs(40);
const DASHBOARD_URL: &str = "https://dashboard.feedbackpulse.test";
const ADMINS: [&str; 2] = ["first-admin@acme.test", "second-admin@acme.test"];

/// A receiver whose `/acme` answers with the status last set in `status`, anything else 200.
async fn receiver_answering(status: Arc<AtomicU16>) -> anyhow::Result<TlsReceiver> {
    TlsReceiver::start(
        "127.0.0.1:0".parse()?,
        Arc::new(move |request: &ReceivedRequest, _| {
            let code = if request.target.starts_with("/acme") {
                status.load(Ordering::SeqCst)
            } else {
                200
            };
            CannedResponse::new(code, "canned")
        }),
    )
    .await
}

/// A test deployment whose api sends notifications to `smtp_url`, with seconds for hours.
async fn environment(
    receiver: &TlsReceiver,
    smtp_url: &str,
    failing_after: &str,
    disable_after: &str,
) -> anyhow::Result<TestEnvironment> {
    let mut env = TestEnvironment::new("notifications").await?;
    env.trust_receiver(receiver)?;
    env.set("FP__DISPATCHER__RETRY_SCHEDULE", "300ms,300ms,300ms");
    env.set("FP__DISPATCHER__HEALTH_REPORT_INTERVAL_MS", "200");
    env.set("FP__DISPATCHER__CONFIG_CACHE_TTL_MS", "200");
    env.set("FP__NOTIFICATIONS__ENABLED", "true");
    env.set("FP__NOTIFICATIONS__SMTP_URL", smtp_url);
    env.set(
        "FP__NOTIFICATIONS__FROM",
        "FeedbackPulse <webhooks@feedbackpulse.test>",
    );
    env.set("FP__NOTIFICATIONS__FAILING_AFTER", failing_after);
    env.set("FP__API__DISABLE_FAILING_ENDPOINTS_AFTER", disable_after);
    env.set("FP__DASHBOARD__PUBLIC_URL", DASHBOARD_URL);
    Ok(env)
}

/// Whitespace collapsed, so a sentence the email wrapped across lines can be looked for.
fn words(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Checks one email: its subject, that it went to the tenant's admins only, and what it says.
fn check_email(mail: &ReceivedMail, subject: &str, says: &[&str]) -> anyhow::Result<()> {
    anyhow::ensure!(
        mail.header("subject").as_deref() == Some(subject),
        "expected {subject:?}: {mail:?}"
    );
    let mut recipients = mail.to.clone();
    recipients.sort();
    anyhow::ensure!(recipients == ADMINS, "sent to {recipients:?}");
    let to = mail.header("to").unwrap_or_default();
    anyhow::ensure!(ADMINS.iter().all(|admin| to.contains(admin)), "To: {to}");
    let body = words(&mail.text_body()?);
    for expected in says {
        anyhow::ensure!(
            body.contains(&words(expected)),
            "{expected:?} missing in {subject:?}: {body}"
        );
    }
    Ok(())
}

/// Submits an event every half second until the sink has `count` messages.
async fn submit_until(
    tenant: &TenantApi,
    sink: &MailSink,
    count: usize,
) -> anyhow::Result<Vec<ReceivedMail>> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let messages = sink.messages();
        if messages.len() >= count {
            return Ok(messages);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{} of {count} emails within {PATIENCE:?}: {messages:?}",
            messages.len()
        );
        tenant.submit("is anyone there?", None).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_are_emailed_once_when_their_endpoint_fails_and_once_when_it_is_disabled()
-> anyhow::Result<()> {
    let status = Arc::new(AtomicU16::new(500));
    let receiver = receiver_answering(status.clone()).await?;
    let sink = MailSink::start("127.0.0.1:0".parse()?, None).await?;
    // The production defaults are an hour and 5 days; the same code paths run here in seconds.
    let mut env = environment(&receiver, &sink.url(), "1s", "5s").await?;
    let outcome = async {
        let pipeline = Pipeline::start(&mut env, 1).await?;
        let acme = pipeline.tenant(&env, "acme").await?;
        for admin in ADMINS {
            create_user(&env, admin, "a-long-password-1", Some(&acme.tenant_id)).await?;
        }
        // Neither another tenant's admin nor a platform superadmin hears of acme's endpoint.
        let other = pipeline.tenant(&env, "other").await?;
        create_user(
            &env,
            "admin@other.test",
            "a-long-password-1",
            Some(&other.tenant_id),
        )
        .await?;
        other.configure(&receiver.url("/other"), None).await?;
        create_user(&env, "root@platform.test", "a-long-password-1", None).await?;

        let url = receiver.url("/acme");
        acme.configure(&url, None).await?;
        let endpoint = url.trim_end_matches("/acme");
        let server_error = Explanation::ServerError.english();
        let logs = format!("{DASHBOARD_URL}/webhooks/logs");

        let failing = submit_until(&acme, &sink, 1).await?;
        check_email(
            &failing[0],
            FAILING_SUBJECT,
            &[
                &format!("Endpoint: {endpoint}"),
                "HTTP 500",
                "What went wrong, and how to fix it:",
                server_error,
                "will be disabled",
                &logs,
            ],
        )?;
        anyhow::ensure!(
            !failing[0].data.contains("/acme"),
            "the path is not in the email"
        );

        let disabled = submit_until(&acme, &sink, 2).await?;
        check_email(
            &disabled[1],
            DISABLED_SUBJECT,
            &[
                "has been disabled",
                &format!("Endpoint: {endpoint}"),
                "HTTP 500",
                server_error,
                "save the webhook settings again",
                &logs,
            ],
        )?;
        // Once each: more failures and more looks change nothing.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let messages = sink.messages();
        anyhow::ensure!(messages.len() == 2, "more than two emails: {messages:?}");

        // Fixed and saved again: deliveries succeed, and a later run of failures is announced
        // again.
        status.store(200, Ordering::SeqCst);
        acme.configure(&url, None).await?;
        let delivered = receiver.requests().len();
        acme.submit("back again", None).await?;
        receiver.wait_for(delivered + 1, PATIENCE).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        anyhow::ensure!(sink.messages().len() == 2, "an email for a success");
        status.store(500, Ordering::SeqCst);
        let again = submit_until(&acme, &sink, 3).await?;
        check_email(&again[2], FAILING_SUBJECT, &["HTTP 500", server_error])?;
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_the_smtp_server_did_not_take_is_sent_at_a_later_look() -> anyhow::Result<()> {
    let receiver = receiver_answering(Arc::new(AtomicU16::new(500))).await?;
    // Nothing listens on the SMTP port at first.
    let smtp_address = free_local_address()?;
    let mut env = environment(&receiver, &format!("smtp://{smtp_address}"), "1s", "1h").await?;
    let outcome = async {
        let pipeline = Pipeline::start(&mut env, 1).await?;
        let acme = pipeline.tenant(&env, "acme").await?;
        for admin in ADMINS {
            create_user(&env, admin, "a-long-password-1", Some(&acme.tenant_id)).await?;
        }
        acme.configure(&receiver.url("/acme"), None).await?;

        // The endpoint keeps failing until the api has tried to send and failed.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let failed_send = |metrics: &str| {
            metrics.lines().any(|line| {
                line.starts_with("fp_api_notifications_total")
                    && line.contains(r#"kind="failing""#)
                    && line.contains(r#"outcome="failed""#)
            })
        };
        while !failed_send(&metrics_text(pipeline.api_health).await?) {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "no failed send within {PATIENCE:?}"
            );
            acme.submit("is anyone there?", None).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }

        // The server is back: the email goes out, once.
        let sink = MailSink::start(smtp_address, None).await?;
        let messages = submit_until(&acme, &sink, 1).await?;
        check_email(
            &messages[0],
            FAILING_SUBJECT,
            &[Explanation::ServerError.english()],
        )?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let messages = sink.messages();
        anyhow::ensure!(messages.len() == 1, "sent again: {messages:?}");
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}
