//! Slack and Discord endpoints end to end: the real api, dispatcher and log-ingest deliver to
//! mocks that check every body as Slack and Discord do and answer as they do. The mocks are reached
//! under the services' real host names through the dispatcher's hosts file, so format detection
//! sees real webhook URLs; a retry schedule of seconds runs retries through production's code path.
//! The tokens in those URLs' paths are looked for in everything the services write outside the
//! tenant's own view: their logs, the spans they export and their metrics.

use std::time::Duration;

use anyhow::Context;
use fp_testkit::environment::TestEnvironment;
use fp_testkit::mock_services::{DiscordMock, MockWebhook, SlackMock};
use fp_testkit::otlp::{OtlpProtocol, OtlpReceiver};
use fp_testkit::pipeline::{Pipeline, TenantApi, metrics_text};
use fp_testkit::receiver::ReceivedRequest;
use serde_json::Value;

const SLACK_PATH: &str = "/services/T000/B000/SlackT0kenQ7x9";
const DISCORD_PATH: &str = "/api/webhooks/123/DiscordT0kenW4v2";
const CANARY_DISCORD_PATH: &str = "/api/v10/webhooks/456/CanaryT0kenP3k8";
/// The secret part of each path above: the last segment.
const TOKENS: [&str; 3] = ["SlackT0kenQ7x9", "DiscordT0kenW4v2", "CanaryT0kenP3k8"];
const SERVICES: [&str; 3] = ["fp-api", "fp-dispatcher", "fp-log-ingest"];
const RETRY_SCHEDULE: &str = "500ms,1s,1s";
/// Longer than the whole retry schedule: how long a scenario watches for an attempt that must not
/// come.
const PAST_THE_SCHEDULE: Duration = Duration::from_secs(4);
/// Generous, for two busy cores.
const DEADLINE: Duration = Duration::from_secs(60);

const SLACK_INJECTION: &str = "<!channel> <@U123> &amp; <script>alert(1)</script>";
const MASS_MENTIONS: &str = "@everyone @here";

struct Mocks {
    slack: MockWebhook,
    discord: MockWebhook,
    slack_rate_limited: MockWebhook,
    discord_deleted: MockWebhook,
    slack_no_service: MockWebhook,
    slack_archived: MockWebhook,
}

impl Mocks {
    async fn start() -> anyhow::Result<Self> {
        Ok(Mocks {
            slack: SlackMock::new().start().await?,
            discord: DiscordMock::new().start().await?,
            slack_rate_limited: SlackMock::new().rate_limit_first(1, 1).start().await?,
            discord_deleted: DiscordMock::new().deleted().start().await?,
            slack_no_service: SlackMock::new().gone("no_service").start().await?,
            slack_archived: SlackMock::new().archived().start().await?,
        })
    }

    fn all(&self) -> [&MockWebhook; 6] {
        [
            &self.slack,
            &self.discord,
            &self.slack_rate_limited,
            &self.discord_deleted,
            &self.slack_no_service,
            &self.slack_archived,
        ]
    }
}

/// Makes the dispatcher (and the api's save-time check) reach every mock under the real host names
/// and trust each mock's private CA.
fn point_services_at(env: &mut TestEnvironment, mocks: &Mocks) -> anyhow::Result<()> {
    let hosts_path = env.dir.join("hosts");
    std::fs::write(
        &hosts_path,
        "127.0.0.1 hooks.slack.com discord.com canary.discord.com\n",
    )?;
    let mut ca_bundle = String::new();
    for (index, mock) in mocks.all().into_iter().enumerate() {
        let ca_path = env.dir.join(format!("mock-{index}-ca.pem"));
        mock.receiver.write_ca_pem(&ca_path)?;
        ca_bundle.push_str(&std::fs::read_to_string(&ca_path)?);
    }
    let bundle_path = env.dir.join("mock-cas.pem");
    std::fs::write(&bundle_path, ca_bundle)?;
    env.set(
        "FP__DISPATCHER__HOSTS_FILE",
        hosts_path.display().to_string(),
    );
    env.set(
        "FP__DISPATCHER__EXTRA_ROOT_CERTS",
        bundle_path.display().to_string(),
    );
    env.set("FP__DISPATCHER__ALLOW_PRIVATE_CIDRS", "127.0.0.0/8");
    env.set("FP__DISPATCHER__RETRY_SCHEDULE", RETRY_SCHEDULE);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_and_discord_get_valid_messages_and_their_answers_steer_retries() -> anyhow::Result<()>
{
    let mut env = TestEnvironment::new("chat").await?;
    let mocks = Mocks::start().await?;
    let collector = OtlpReceiver::start(OtlpProtocol::HttpProtobuf).await?;
    // Before any service starts: both the api and the dispatcher read these at start-up.
    point_services_at(&mut env, &mocks)?;
    for (key, value) in collector.env() {
        env.set(key, value);
    }
    let pipeline = Pipeline::start(&mut env, 1).await?;
    let tenant = |name: &'static str| pipeline.tenant(&env, name);

    // The scenarios use separate tenants and mocks, so they run side by side and their waits overlap.
    tokio::try_join!(
        async {
            adversarial_feedback_reaches_slack_escaped(&tenant("Slack Co").await?, &mocks.slack)
                .await
                .context("Slack with adversarial feedback")
        },
        async {
            adversarial_feedback_reaches_discord_without_pings(
                &tenant("Discord Co").await?,
                &mocks.discord,
            )
            .await
            .context("Discord with adversarial feedback")
        },
        async {
            rate_limited_slack_is_retried_after_retry_after(
                &tenant("Busy Slack Co").await?,
                &mocks.slack_rate_limited,
            )
            .await
            .context("Slack answering 429")
        },
        async {
            let url = mocks
                .discord_deleted
                .url_at("canary.discord.com", CANARY_DISCORD_PATH);
            one_final_attempt(
                &tenant("Deleted Discord Co").await?,
                &mocks.discord_deleted,
                &url,
                404,
                "Unknown Webhook",
            )
            .await
            .context("Discord webhook deleted")
        },
        async {
            let url = mocks.slack_no_service.url(SLACK_PATH);
            one_final_attempt(
                &tenant("Removed Slack Co").await?,
                &mocks.slack_no_service,
                &url,
                404,
                "no_service",
            )
            .await
            .context("Slack no_service")
        },
        async {
            let url = mocks.slack_archived.url(SLACK_PATH);
            one_final_attempt(
                &tenant("Archived Slack Co").await?,
                &mocks.slack_archived,
                &url,
                410,
                "channel_is_archived",
            )
            .await
            .context("Slack channel_is_archived")
        },
    )?;
    no_token_outside_the_tenants_view(&env, &pipeline, &collector).await?;
    env.finish().await
}

/// Slack and Discord keep a webhook's secret token in its URL's path, and only the tenant's own
/// view (config and delivery log) may show it: no log line of any service, no exported span and no
/// metric.
async fn no_token_outside_the_tenants_view(
    env: &TestEnvironment,
    pipeline: &Pipeline,
    collector: &OtlpReceiver,
) -> anyhow::Result<()> {
    for (path, token) in [SLACK_PATH, DISCORD_PATH, CANARY_DISCORD_PATH]
        .into_iter()
        .zip(TOKENS)
    {
        assert!(path.ends_with(token), "{path} is searched for {token}");
    }
    // Each service's spans have arrived, so the search covers all of them.
    let spans = collector
        .spans_until(DEADLINE, |spans| {
            SERVICES
                .iter()
                .all(|service| spans.iter().any(|span| span.service == *service))
        })
        .await;
    for service in SERVICES {
        assert!(
            spans.iter().any(|span| span.service == service),
            "no span of {service} arrived"
        );
    }
    for span in &spans {
        for text in span.texts() {
            for token in TOKENS {
                assert!(
                    !text.contains(token),
                    "{} span {} carries a token in `{text}`",
                    span.service,
                    span.name
                );
            }
        }
    }

    let logs = env.service_logs()?;
    for service in SERVICES {
        assert!(
            logs.iter().any(|(name, _)| name.starts_with(service)),
            "no log of {service}"
        );
    }
    for (name, text) in &logs {
        for line in text.lines() {
            for token in TOKENS {
                assert!(!line.contains(token), "{name} logs a token: {line}");
            }
        }
    }
    // The api logs each saved config with its URL redacted: the lines searched are the ones that
    // used to carry the whole URL.
    assert!(
        logs.iter().any(|(_, text)| text.lines().any(|line| {
            line.contains("webhook config saved")
                && line.contains("hooks.slack.com")
                && line.contains("/services/T000/B000/[redacted]")
        })),
        "no redacted Slack URL in the api's log"
    );

    for health in pipeline.health_addresses() {
        let metrics = metrics_text(health).await?;
        assert!(
            metrics.contains("# TYPE fp_"),
            "no metrics at {health}: {metrics}"
        );
        for token in TOKENS {
            assert!(
                !metrics.contains(token),
                "a metric at {health} carries a token"
            );
        }
    }
    Ok(())
}

/// One event the tenant's endpoint must get: a submission and what happened to it.
struct ExpectedEvent {
    submission_id: i64,
    event_type: &'static str,
    text_feedback: String,
}

/// Feedback built to break limits, escaping and mentions, each with the customer name sent with it.
fn adversarial_feedback() -> Vec<(String, Option<String>)> {
    // Near the api's 10 000-char cap, with characters that grow when escaped.
    let long_text: String = "Ünïcödé & <b>bold</b> 👍🏽 "
        .chars()
        .cycle()
        .take(9_000)
        .collect();
    // The api's 200-char cap on names, made of characters every format must escape.
    let long_name: String = "&<>@everyone ".chars().cycle().take(200).collect();
    let owned = |text: &str| text.to_owned();
    vec![
        (long_text, Some(owned("Jane Doe"))),
        (
            owned("👍🏽🎉👨‍👩‍👧‍👦 e\u{301}\u{302}\u{303} Z\u{324}\u{354}\u{367}a\u{308}\u{356}"),
            Some(owned("Zoë")),
        ),
        (owned(SLACK_INJECTION), Some(owned("<@U123>"))),
        (owned(MASS_MENTIONS), None),
        (
            owned(
                "**bold** _it_ ~~gone~~ `code` > quote # Heading [click](https://evil.example) ||spoiler||",
            ),
            Some(owned("**Jane**")),
        ),
        (String::new(), Some(String::new())),
        (owned("Fine."), Some(long_name)),
    ]
}

/// Submits the adversarial feedback, then approves the first submission; returns the events the
/// endpoint must get.
async fn submit_adversarial_feedback(tenant: &TenantApi) -> anyhow::Result<Vec<ExpectedEvent>> {
    let mut expected = Vec::new();
    for (text_feedback, customer_name) in adversarial_feedback() {
        let submission_id = tenant
            .submit(&text_feedback, customer_name.as_deref())
            .await?;
        expected.push(ExpectedEvent {
            submission_id,
            event_type: "submission.created",
            text_feedback,
        });
    }
    let first = expected.first().context("no submission")?;
    let (status, changed) = tenant
        .send(
            reqwest::Method::PATCH,
            &format!("/api/v2/submissions/{}", first.submission_id),
            Some(r#"{"status": "approved"}"#),
        )
        .await?;
    anyhow::ensure!(status == 200, "status change refused ({status}): {changed}");
    expected.push(ExpectedEvent {
        submission_id: first.submission_id,
        event_type: "submission.status_changed",
        text_feedback: first.text_feedback.clone(),
    });
    Ok(expected)
}

/// Waits until the mock got one request per expected event, checks each event arrived exactly once,
/// that the mock found every body valid, and that the log shows each delivered at once; returns
/// each event's request.
async fn every_event_delivered_valid<'a>(
    tenant: &TenantApi,
    mock: &MockWebhook,
    expected: &'a [ExpectedEvent],
) -> anyhow::Result<Vec<(&'a ExpectedEvent, ReceivedRequest)>> {
    let requests = mock.receiver.wait_for(expected.len(), DEADLINE).await?;
    assert_eq!(requests.len(), expected.len());
    let matched = expected
        .iter()
        .map(|event| {
            // Both formats end a string with "Submission #<id>" (Slack's context, Discord's footer).
            let reference = format!("Submission #{}\"", event.submission_id);
            let mut matching = requests.iter().filter(|request| {
                request.header("x-feedbackpulse-event") == Some(event.event_type)
                    && String::from_utf8_lossy(&request.body).contains(&reference)
            });
            let request = matching.next().with_context(|| {
                format!(
                    "no {} for submission {}",
                    event.event_type, event.submission_id
                )
            })?;
            anyhow::ensure!(matching.next().is_none(), "{reference} arrived twice");
            Ok((event, request.clone()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    assert_eq!(mock.verdicts.all().len(), expected.len());
    assert_eq!(
        mock.verdicts.rejections(),
        Vec::<String>::new(),
        "the real service would have refused these bodies"
    );

    let entries = tenant
        .logs_until(DEADLINE, |entries| entries.len() >= expected.len())
        .await?;
    assert_eq!(entries.len(), expected.len(), "{entries:?}");
    for entry in &entries {
        assert_eq!(entry["response_code"], 200, "{entry}");
        assert_eq!(entry["attempt_number"], 1, "{entry}");
        assert_eq!(entry["final"], true, "{entry}");
        assert!(entry["error"].is_null(), "{entry}");
    }
    Ok(matched)
}

async fn adversarial_feedback_reaches_slack_escaped(
    tenant: &TenantApi,
    mock: &MockWebhook,
) -> anyhow::Result<()> {
    tenant.configure(&mock.url(SLACK_PATH), None).await?;
    let expected = submit_adversarial_feedback(tenant).await?;
    for (event, request) in every_event_delivered_valid(tenant, mock, &expected).await? {
        assert_eq!(request.target, SLACK_PATH);
        let shown = shown_text(&request)?;
        for markup in ["<!channel>", "<@U123>", "<script>"] {
            assert!(
                !shown.contains(markup),
                "raw {markup} reached Slack: {shown:.300}"
            );
        }
        if event.text_feedback == SLACK_INJECTION {
            // Escaped, so shown as typed rather than pinging or dropped.
            assert!(
                shown.contains("&lt;!channel&gt; &lt;@U123&gt; &amp;amp; &lt;script&gt;"),
                "{shown}"
            );
        }
    }
    Ok(())
}

async fn adversarial_feedback_reaches_discord_without_pings(
    tenant: &TenantApi,
    mock: &MockWebhook,
) -> anyhow::Result<()> {
    tenant.configure(&mock.url(DISCORD_PATH), None).await?;
    let expected = submit_adversarial_feedback(tenant).await?;
    for (_, request) in every_event_delivered_valid(tenant, mock, &expected).await? {
        // Without wait=true Discord drops a refused message silently with a 204.
        let (path, query) = request.target.split_once('?').context("no query string")?;
        assert_eq!(path, DISCORD_PATH);
        assert!(query.split('&').any(|pair| pair == "wait=true"), "{query}");
        let body: Value = serde_json::from_slice(&request.body)?;
        assert_eq!(body["allowed_mentions"]["parse"], serde_json::json!([]));
        let shown = shown_text(&request)?.to_lowercase();
        assert!(
            !shown.contains("@everyone") && !shown.contains("@here"),
            "a mass mention reached Discord: {shown:.300}"
        );
    }
    Ok(())
}

async fn rate_limited_slack_is_retried_after_retry_after(
    tenant: &TenantApi,
    mock: &MockWebhook,
) -> anyhow::Result<()> {
    tenant.configure(&mock.url(SLACK_PATH), None).await?;
    tenant.submit("Please slow down", Some("Jane Doe")).await?;
    let requests = mock.receiver.wait_for(2, DEADLINE).await?;
    let gap = requests[1].received_at - requests[0].received_at;
    // The schedule alone would retry after 400–500 ms; Retry-After: 1 asks for a second.
    assert!(
        gap >= Duration::from_millis(950),
        "retried {gap:?} after a 429 with Retry-After: 1"
    );
    assert_eq!(
        requests[0].header("x-feedbackpulse-delivery"),
        requests[1].header("x-feedbackpulse-delivery")
    );
    assert_eq!(mock.verdicts.rejections(), Vec::<String>::new());

    let mut entries = tenant
        .logs_until(DEADLINE, |entries| {
            entries.iter().any(|entry| entry["final"] == true)
        })
        .await?;
    entries.sort_by_key(|entry| entry["attempt_number"].as_i64());
    assert_eq!(entries.len(), 2, "{entries:?}");
    let (first, second) = (&entries[0], &entries[1]);
    assert_eq!(first["delivery_id"], second["delivery_id"]);
    assert_eq!(
        first["delivery_id"].as_str(),
        requests[0].header("x-feedbackpulse-delivery")
    );
    assert_eq!(
        (
            &first["attempt_number"],
            &first["response_code"],
            &first["final"]
        ),
        (&Value::from(1), &Value::from(429), &Value::from(false)),
        "{first}"
    );
    assert_eq!(first["response_body"], "rate_limited");
    assert_eq!(
        (
            &second["attempt_number"],
            &second["response_code"],
            &second["final"]
        ),
        (&Value::from(2), &Value::from(200), &Value::from(true)),
        "{second}"
    );
    assert_eq!(second["response_body"], "ok");
    Ok(())
}

/// A webhook that is gone for good gets exactly one attempt, logged as final, and no retry even
/// after the whole schedule has passed.
async fn one_final_attempt(
    tenant: &TenantApi,
    mock: &MockWebhook,
    url: &str,
    expected_status: u16,
    expected_body: &str,
) -> anyhow::Result<()> {
    tenant.configure(url, None).await?;
    tenant.submit("Anyone there?", Some("Jane Doe")).await?;
    mock.receiver.wait_for(1, DEADLINE).await?;
    let entries = tenant
        .logs_until(DEADLINE, |entries| !entries.is_empty())
        .await?;
    let check_single_final_attempt = |entries: &[Value]| {
        assert_eq!(entries.len(), 1, "{entries:?}");
        let entry = &entries[0];
        assert_eq!(entry["url"], url);
        assert_eq!(entry["attempt_number"], 1, "{entry}");
        assert_eq!(entry["response_code"], expected_status, "{entry}");
        assert!(
            entry["response_body"]
                .as_str()
                .is_some_and(|body| body.contains(expected_body)),
            "{entry}"
        );
        assert_eq!(entry["final"], true, "{entry}");
    };
    check_single_final_attempt(&entries);

    tokio::time::sleep(PAST_THE_SCHEDULE).await;
    let requests = mock.receiver.requests();
    assert_eq!(requests.len(), 1, "a gone webhook was tried again");
    let entries = tenant.logs_until(Duration::ZERO, |_| true).await?;
    check_single_final_attempt(&entries);
    assert_eq!(mock.verdicts.rejections(), Vec::<String>::new());
    Ok(())
}

/// The body's JSON re-serialised by serde_json, which writes `<`, `&`, `@` and U+200B as they are,
/// so no escape sequence in the sent JSON can hide markup from a substring check.
fn shown_text(request: &ReceivedRequest) -> anyhow::Result<String> {
    let body: Value = serde_json::from_slice(&request.body).context("the body is not JSON")?;
    Ok(body.to_string())
}
