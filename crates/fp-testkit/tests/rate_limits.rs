//! Rate limits on the real parts. Per tenant, in the api: floods of single redeliveries, bulk
//! redeliveries and test events, split over two api processes, answer 429 with `Retry-After`
//! beyond the limit, queue nothing then, and work again after the wait. Per destination host, in
//! the dispatcher: every delivery to a host at its rate still arrives once, no second at the
//! receiver sees more than the rate plus the burst, another host is not held up behind it, and
//! the deferrals are counted. The dashboard's buttons show a 429 in the user's language.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{TimeZone, Utc};
use fp_store::attempts::AttemptRow;
use fp_testkit::dashboard::{DashboardFixture, form_body, hidden_field_after, http_session};
use fp_testkit::environment::TestEnvironment;
use fp_testkit::pipeline::{ApiAnswer, Pipeline, TenantApi, metric, start_api};
use fp_testkit::receiver::{ReceivedRequest, TlsReceiver, always_ok};
use fp_testkit::seed::attempt_row;
use futures_util::future::join_all;
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(30);

/// A tenant's view of each of two api processes sharing one database.
struct TwoApis {
    tenants: [TenantApi; 2],
}

/// A deployment with `limit` (`FP__API__RATE_LIMITS__<action>`, value) set and a receiver.
struct Deployment {
    receiver: TlsReceiver,
    env: TestEnvironment,
    apis: TwoApis,
    _pipeline: Pipeline,
}

impl Deployment {
    /// Starts the pipeline (one api), a second api, and a tenant whose config points at the
    /// receiver.
    async fn start(label: &str, limit: (&str, &str)) -> anyhow::Result<Deployment> {
        let receiver = TlsReceiver::start("127.0.0.1:0".parse()?, always_ok()).await?;
        let mut env = TestEnvironment::new(label).await?;
        env.trust_receiver(&receiver)?;
        env.set(limit.0, limit.1);
        let pipeline = Pipeline::start(&mut env, 1).await?;
        let second = start_api(&mut env).await?;
        let first = pipeline.tenant(&env, "Flooder").await?;
        first.configure(&receiver.url("/hook"), None).await?;
        let other = TenantApi {
            base: format!("http://{second}"),
            key: first.key.clone(),
            tenant_id: first.tenant_id.clone(),
            http: first.http.clone(),
        };
        Ok(Deployment {
            receiver,
            env,
            apis: TwoApis {
                tenants: [first, other],
            },
            _pipeline: pipeline,
        })
    }
}

impl TwoApis {
    /// The URL the api stored for the tenant's endpoint.
    async fn stored_url(&self) -> anyhow::Result<String> {
        let (status, config) = self.tenants[0]
            .send(reqwest::Method::GET, "/api/v2/webhooks/config", None)
            .await?;
        anyhow::ensure!(status == 200, "{config}");
        Ok(config["url"].as_str().context("url")?.to_owned())
    }

    /// `count` POSTs to `path` at once, alternating between the two apis.
    async fn flood(
        &self,
        count: usize,
        path: &str,
        body: Option<&str>,
    ) -> anyhow::Result<Vec<ApiAnswer>> {
        let calls = (0..count).map(|n| post(&self.tenants[n % 2], path, body));
        join_all(calls).await.into_iter().collect()
    }
}

async fn post(tenant: &TenantApi, path: &str, body: Option<&str>) -> anyhow::Result<ApiAnswer> {
    tenant.request(reqwest::Method::POST, path, body).await
}

/// Checks that some answers are refusals, each in the one error shape with a `Retry-After` of
/// whole seconds, and the rest acceptances; returns the longest wait asked for.
fn check_refusals(answers: &[ApiAnswer], what: &str) -> anyhow::Result<u64> {
    let mut longest = 0;
    for answer in answers.iter().filter(|answer| answer.status == 429) {
        assert_eq!(answer.body["error"]["code"], "rate_limited", "{answer:?}");
        let message = answer.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(what), "{what:?} missing in {message}");
        let seconds = answer.retry_after().context("a 429 without Retry-After")?;
        assert!(seconds >= 1, "{answer:?}");
        longest = longest.max(seconds);
    }
    assert!(longest >= 1, "none was refused: {answers:?}");
    assert!(
        answers
            .iter()
            .all(|answer| matches!(answer.status, 202 | 429)),
        "{answers:?}"
    );
    Ok(longest)
}

/// Ten POSTs to `path` at once over both apis against a limit of three per 6 s: at least three
/// and no more than the bucket can have refilled are accepted, the rest refused. Returns how many
/// were accepted and the longest `Retry-After`.
async fn flood_three_per_six_seconds(
    apis: &TwoApis,
    path: &str,
    what: &str,
) -> anyhow::Result<(u64, u64)> {
    let started = Instant::now();
    let answers = apis.flood(10, path, None).await?;
    let elapsed = started.elapsed();
    let accepted = answers.iter().filter(|answer| answer.status == 202).count() as u64;
    let wait = check_refusals(&answers, what)?;
    assert!(
        (3..=most_granted(3, Duration::from_secs(6), elapsed)).contains(&accepted),
        "{accepted} of 10 accepted in {elapsed:?}: {answers:?}"
    );
    Ok((accepted, wait))
}

/// Most a bucket of `amount` refilled evenly over `period` can have granted since a full start
/// `elapsed` ago.
fn most_granted(amount: u64, period: Duration, elapsed: Duration) -> u64 {
    let refilled = elapsed.as_secs_f64() * amount as f64 / period.as_secs_f64();
    amount + refilled.floor() as u64
}

/// The receiver's requests once it has `count` and nothing more came for a second.
async fn exactly(receiver: &TlsReceiver, count: usize) -> anyhow::Result<Vec<ReceivedRequest>> {
    receiver.wait_for(count, PATIENCE).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let requests = receiver.requests();
    assert_eq!(
        requests.len(),
        count,
        "the receiver got more than was queued"
    );
    Ok(requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_single_redeliveries_is_cut_at_the_tenants_limit() -> anyhow::Result<()> {
    // Three at once, then one every 2 s.
    let Deployment {
        receiver,
        env,
        apis,
        _pipeline,
    } = Deployment::start("ratesingle", ("FP__API__RATE_LIMITS__REDELIVERY", "3/6s")).await?;
    let tenant_id = Uuid::parse_str(&apis.tenants[0].tenant_id)?;
    let failed = AttemptRow {
        url: apis.stored_url().await?,
        response_status: Some(500),
        ..attempt_row(tenant_id, Utc::now())
    };
    let mut conn = fp_store::connect(&env.database_url).await?;
    fp_store::attempts::insert_batch(&mut conn, std::slice::from_ref(&failed)).await?;
    let path = format!("/api/v2/webhooks/logs/{}/redeliver", failed.id);

    let (accepted, wait) = flood_three_per_six_seconds(&apis, &path, "redeliveries").await?;

    // After the wait it works again; nothing refused was queued.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let again = post(&apis.tenants[1], &path, None).await?;
    assert_eq!(again.status, 202, "{again:?}");
    exactly(&receiver, usize::try_from(accepted)? + 1).await?;

    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_redelivery_is_limited_by_the_deliveries_it_queues() -> anyhow::Result<()> {
    // Ten deliveries at once, then one every 6 s.
    let Deployment {
        receiver,
        env,
        apis,
        _pipeline,
    } = Deployment::start(
        "ratebulk",
        ("FP__API__RATE_LIMITS__BULK_REDELIVERY", "10/60s"),
    )
    .await?;
    let tenant_id = Uuid::parse_str(&apis.tenants[0].tenant_id)?;
    let url = apis.stored_url().await?;
    let day = Utc
        .with_ymd_and_hms(2024, 3, 2, 10, 0, 0)
        .single()
        .context("a valid time")?;
    let failed: Vec<AttemptRow> = (0..30)
        .map(|n| AttemptRow {
            url: url.clone(),
            response_status: Some(500),
            ..attempt_row(tenant_id, day + chrono::Duration::seconds(n))
        })
        .collect();
    let mut conn = fp_store::connect(&env.database_url).await?;
    fp_store::attempts::insert_batch(&mut conn, &failed).await?;
    let path = "/api/v2/webhooks/logs/redeliver";
    let range = r#"{"from": "2024-03-01T00:00:00Z", "to": "2024-03-08T00:00:00Z"}"#;

    // One call spends the whole budget: it is counted in deliveries, not calls.
    let started = Instant::now();
    let first = post(&apis.tenants[0], path, Some(range)).await?;
    assert_eq!(first.status, 202, "{first:?}");
    assert_eq!(first.body["redelivered"], 10, "{first:?}");
    assert_eq!(first.body["more"], true, "{first:?}");
    let answers = apis.flood(4, path, Some(range)).await?;
    let elapsed = started.elapsed();
    let wait = check_refusals(&answers, "bulk redelivery")?;
    let queued: u64 = std::iter::once(&first)
        .chain(&answers)
        .filter_map(|answer| answer.body["redelivered"].as_u64())
        .sum();
    assert!(
        queued <= most_granted(10, Duration::from_secs(60), elapsed),
        "{queued} queued in {elapsed:?}"
    );

    // After the wait a call queues again, as much as has come back.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let again = post(&apis.tenants[1], path, Some(range)).await?;
    assert_eq!(again.status, 202, "{again:?}");
    let more = again.body["redelivered"].as_u64().context("redelivered")?;
    assert!(more >= 1, "{again:?}");
    exactly(&receiver, usize::try_from(queued + more)?).await?;

    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_test_events_is_cut_at_the_tenants_limit() -> anyhow::Result<()> {
    let Deployment {
        receiver,
        env,
        apis,
        _pipeline,
    } = Deployment::start("ratetest", ("FP__API__RATE_LIMITS__TEST_EVENT", "3/6s")).await?;
    let path = "/api/v2/webhooks/test";

    let (accepted, wait) = flood_three_per_six_seconds(&apis, path, "test events").await?;

    tokio::time::sleep(Duration::from_secs(wait)).await;
    let again = post(&apis.tenants[0], path, None).await?;
    assert_eq!(again.status, 202, "{again:?}");
    let requests = exactly(&receiver, usize::try_from(accepted)? + 1).await?;
    assert!(
        requests
            .iter()
            .all(|request| request.header("x-feedbackpulse-event") == Some("webhook.test"))
    );

    env.finish().await
}

/// Per dispatcher and host: 2 requests a second, 4 at once.
const HOST_RATE: usize = 2;
const HOST_BURST: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_at_its_rate_gets_every_delivery_once_and_does_not_hold_up_another()
-> anyhow::Result<()> {
    let receiver = TlsReceiver::start_with_names(
        "127.0.0.1:0".parse()?,
        &["hot.test", "cool.test"],
        always_ok(),
    )
    .await?;
    let mut env = TestEnvironment::new("hostrate").await?;
    env.trust_receiver(&receiver)?;
    // Two names of one receiver: two destination hosts for the dispatcher.
    let hosts_file = env.dir.join("hosts");
    std::fs::write(&hosts_file, "127.0.0.1 hot.test cool.test\n")?;
    env.set(
        "FP__DISPATCHER__HOSTS_FILE",
        hosts_file.display().to_string(),
    );
    env.set(
        "FP__DISPATCHER__HOST_REQUESTS_PER_SECOND",
        HOST_RATE.to_string(),
    );
    env.set("FP__DISPATCHER__HOST_REQUEST_BURST", HOST_BURST.to_string());
    let pipeline = Pipeline::start(&mut env, 1).await?;
    let port = receiver.address().port();

    // Three tenants share the hot host: the bound is the host's, not a tenant's.
    let mut hot_tenants = Vec::new();
    for n in 0..3 {
        let tenant = pipeline.tenant(&env, &format!("hot {n}")).await?;
        tenant
            .configure(&format!("https://hot.test:{port}/hot/{n}"), None)
            .await?;
        hot_tenants.push(tenant);
    }
    let cool = pipeline.tenant(&env, "cool").await?;
    cool.configure(&format!("https://cool.test:{port}/cool"), None)
        .await?;
    for n in 0..8 {
        for tenant in &hot_tenants {
            tenant.submit(&format!("hot {n}"), None).await?;
        }
    }
    for n in 0..3 {
        cool.submit(&format!("cool {n}"), None).await?;
    }

    let requests = receiver.wait_for(24 + 3, Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let requests_now = receiver.requests();
    assert_eq!(requests_now.len(), requests.len(), "nothing more arrived");
    let (hot, cool_requests): (Vec<_>, Vec<_>) = requests
        .iter()
        .partition(|request| request.target.starts_with("/hot/"));
    assert_eq!(hot.len(), 24);
    assert_eq!(cool_requests.len(), 3);

    // Each hot delivery once.
    let mut per_delivery: HashMap<&str, usize> = HashMap::new();
    for request in &hot {
        *per_delivery
            .entry(
                request
                    .header("x-feedbackpulse-delivery")
                    .unwrap_or_default(),
            )
            .or_default() += 1;
    }
    assert_eq!(per_delivery.len(), 24, "{per_delivery:?}");
    assert!(per_delivery.values().all(|count| *count == 1));

    // No second at the receiver saw more than the burst and one second's rate.
    for (index, first) in hot.iter().enumerate() {
        let within_a_second = hot[index..]
            .iter()
            .filter(|later| later.received_at - first.received_at < Duration::from_secs(1))
            .count();
        assert!(
            within_a_second <= HOST_RATE + HOST_BURST,
            "{within_a_second} requests to the hot host within one second"
        );
    }

    // The other host's deliveries, submitted after all the hot ones, did not wait for them.
    let last_hot = hot.iter().map(|request| request.received_at).max();
    let last_cool = cool_requests
        .iter()
        .map(|request| request.received_at)
        .max();
    assert!(last_cool < last_hot, "the cool host waited for the hot one");

    // Deferred, never attempted: one attempt per delivery in the logs, each a success.
    for tenant in &hot_tenants {
        let entries = tenant
            .logs_until(PATIENCE, |entries| entries.len() >= 8)
            .await?;
        assert_eq!(entries.len(), 8, "{entries:?}");
        assert!(
            entries
                .iter()
                .all(|entry| entry["attempt_number"] == 1 && entry["response_code"] == 200),
            "{entries:?}"
        );
    }
    assert!(
        metric(
            pipeline.dispatchers[0],
            "fp_dispatcher_host_rate_deferred_total"
        )
        .await?
            > 0
    );

    env.finish().await
}

/// Posts the form that follows `marker` on the dashboard page `page` with its CSRF token; returns
/// the final answer's status and body.
async fn post_dashboard_form(
    client: &reqwest::Client,
    base: &str,
    page: &str,
    marker: &str,
    action: &str,
) -> anyhow::Result<(u16, String)> {
    let html = client
        .get(format!("{base}{page}"))
        .send()
        .await?
        .text()
        .await?;
    let token = hidden_field_after(&html, marker, "csrf_token")
        .with_context(|| format!("no form {marker} on {page}: {html}"))?;
    let answer = client
        .post(format!("{base}{action}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[("csrf_token", &token)]))
        .send()
        .await?;
    Ok((answer.status().as_u16(), answer.text().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_says_in_the_users_language_when_a_limit_is_used_up() -> anyhow::Result<()> {
    let mut env = TestEnvironment::new("ratedash").await?;
    env.set("FP__API__RATE_LIMITS__TEST_EVENT", "1/1h");
    env.set("FP__API__RATE_LIMITS__REDELIVERY", "1/1h");
    let fixture = DashboardFixture::start(&mut env).await?;
    let config = fixture.configure_webhook().await?;
    let failed = AttemptRow {
        url: config["url"].as_str().context("url")?.to_owned(),
        response_status: Some(500),
        ..attempt_row(Uuid::parse_str(&fixture.api.tenant_id)?, Utc::now())
    };
    let mut conn = fp_store::connect(&env.database_url).await?;
    fp_store::attempts::insert_batch(&mut conn, std::slice::from_ref(&failed)).await?;
    let detail = format!("/webhooks/logs/{}", failed.id);
    let integrations = "/settings/integrations";

    // The one test event and the one redelivery of the hour go through...
    let english = http_session(
        &fixture.base,
        &fixture.tenant_email,
        &fixture.password,
        "en",
    )
    .await?;
    let test_form = r#"id="test-form""#;
    let test_action = "/settings/integrations/test";
    let redeliver_form = r#"<form class="redeliver""#;
    let redeliver_action = format!("{detail}/redeliver");
    let (status, page) = post_dashboard_form(
        &english,
        &fixture.base,
        integrations,
        test_form,
        test_action,
    )
    .await?;
    assert_eq!(status, 200, "{page}");
    let (status, page) = post_dashboard_form(
        &english,
        &fixture.base,
        &detail,
        redeliver_form,
        &redeliver_action,
    )
    .await?;
    assert_eq!(status, 200, "{page}");

    // ...the next ones are refused, and the page says so in the user's language.
    let german = http_session(
        &fixture.base,
        &fixture.tenant_email,
        &fixture.password,
        "de",
    )
    .await?;
    for (client, test_text, redeliver_text) in [
        (&english, "Too many test events", "Too many redeliveries"),
        (
            &german,
            "Zu viele Test-Events",
            "Zu viele erneute Zustellungen",
        ),
    ] {
        let (status, page) =
            post_dashboard_form(client, &fixture.base, integrations, test_form, test_action)
                .await?;
        assert_eq!(status, 429, "{page}");
        assert!(page.contains(test_text), "{test_text:?} missing: {page}");
        let (status, page) = post_dashboard_form(
            client,
            &fixture.base,
            &detail,
            redeliver_form,
            &redeliver_action,
        )
        .await?;
        assert_eq!(status, 429, "{page}");
        assert!(
            page.contains(redeliver_text),
            "{redeliver_text:?} missing: {page}"
        );
    }
    // One test event and one redelivery reached the endpoint, nothing more.
    exactly(&fixture.receiver, 2).await?;

    env.finish().await
}
