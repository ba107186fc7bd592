//! Health and metrics as an operator sees them: every service answers `/healthz`, `/readyz` and
//! `/metrics` on its own health address and none of them on its public port; a real Prometheus
//! (Debian's, installed by deploy/local/ensure-prometheus.sh) scrapes all four services while
//! deliveries flow (a success, a 500, timeouts, a blocked target, a dead letter, a failed log-in),
//! and PromQL over its HTTP API finds each metric with the expected labels, moved by the expected
//! amounts; and the shipped alert rules pass `promtool check rules` and `promtool test rules`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use fp_testkit::environment::{TestEnvironment, free_local_address};
use fp_testkit::pipeline::{Pipeline, TenantApi, start_dashboard};
use fp_testkit::receiver::{CannedResponse, TlsReceiver};
use serde_json::Value;
use tokio::process::{Child, Command};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";
const PATIENCE: Duration = Duration::from_secs(60);
/// The name the blocked tenant's URL uses: loopback while the api checks it, a private address
/// (not on the allow-list) once the dispatcher resolves it.
const BLOCKED_NAME: &str = "blocked.metrics.test";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tool(path: &str) -> anyhow::Result<&str> {
    ensure!(
        Path::new(path).exists(),
        "{path} is missing: run deploy/local/ensure-prometheus.sh (`make test` does)"
    );
    Ok(path)
}

/// The four services of one deployment, with their health (and public) addresses.
struct Deployment {
    env: TestEnvironment,
    api: SocketAddr,
    api_health: SocketAddr,
    dispatcher_health: SocketAddr,
    log_ingest_health: SocketAddr,
    dashboard: SocketAddr,
    dashboard_health: SocketAddr,
    hosts_file: PathBuf,
}

impl Deployment {
    async fn start(label: &str, receiver: &TlsReceiver) -> anyhow::Result<Self> {
        let mut env = TestEnvironment::new(label).await?;
        env.trust_receiver(receiver)?;
        let hosts_file = env.dir.join("hosts");
        std::fs::write(&hosts_file, format!("127.0.0.1 {BLOCKED_NAME}\n"))?;
        env.set(
            "FP__DISPATCHER__HOSTS_FILE",
            hosts_file.display().to_string(),
        );
        // One retry a second after a failed attempt, then the delivery is given up.
        env.set("FP__DISPATCHER__RETRY_SCHEDULE", "1s");
        env.set("FP__DISPATCHER__REQUEST_TIMEOUT_MS", "1000");
        // One request at a time per endpoint, so the second event to the slow one is deferred.
        env.set("FP__DISPATCHER__MAX_IN_FLIGHT_PER_ENDPOINT", "1");
        env.set("FP__DISPATCHER__ENDPOINT_BUSY_DELAY_MS", "300");
        let pipeline = Pipeline::start(&mut env, 1).await?;
        let (api, api_health) = (pipeline.api, pipeline.api_health);
        let (dispatcher_health, log_ingest_health) = (pipeline.dispatchers[0], pipeline.log_ingest);
        let (dashboard, dashboard_health) = start_dashboard(&mut env, api).await?;
        Ok(Deployment {
            env,
            api,
            api_health,
            dispatcher_health,
            log_ingest_health,
            dashboard,
            dashboard_health,
            hosts_file,
        })
    }

    fn health_addresses(&self) -> [(&'static str, SocketAddr); 4] {
        [
            ("fp-api", self.api_health),
            ("fp-dispatcher", self.dispatcher_health),
            ("fp-log-ingest", self.log_ingest_health),
            ("fp-dashboard", self.dashboard_health),
        ]
    }
}

fn http() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .cookie_store(true)
        .build()?)
}

async fn get(client: &reqwest::Client, url: &str) -> anyhow::Result<(u16, String)> {
    let response = client.get(url).send().await?;
    Ok((response.status().as_u16(), response.text().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_answers_probes_and_metrics_on_its_health_address_only() -> anyhow::Result<()>
{
    let receiver = TlsReceiver::start(
        "127.0.0.1:0".parse()?,
        Arc::new(|_, _| CannedResponse::new(200, "ok")),
    )
    .await?;
    let deployment = Deployment::start("probes", &receiver).await?;
    let client = http()?;
    for (service, health) in deployment.health_addresses() {
        let (status, body) = get(&client, &format!("http://{health}/healthz")).await?;
        ensure!(
            status == 200 && body == "ok\n",
            "{service} /healthz: {status} {body}"
        );
        let (status, body) = get(&client, &format!("http://{health}/readyz")).await?;
        ensure!(
            status == 200 && body == "ready\n",
            "{service} /readyz: {status} {body}"
        );
        let (status, body) = get(&client, &format!("http://{health}/metrics")).await?;
        ensure!(status == 200, "{service} /metrics: {status}");
        ensure!(
            body.lines().any(|line| line == "fp_ready 1"),
            "{service} /metrics has no `fp_ready 1`:\n{body}"
        );
        ensure!(
            body.contains("fp_broker_connected 1") || service == "fp-dashboard",
            "{service} /metrics does not show its broker connection:\n{body}"
        );
    }
    // The public ports (only the api and the dashboard have one) answer none of them.
    for (service, public) in [
        ("fp-api", deployment.api),
        ("fp-dashboard", deployment.dashboard),
    ] {
        for path in ["/healthz", "/readyz", "/metrics"] {
            let (status, _) = get(&client, &format!("http://{public}{path}")).await?;
            ensure!(
                status == 404,
                "{service} answers {path} on its public port with {status}"
            );
        }
    }
    deployment.env.finish().await
}

/// A Prometheus process of the test's own, scraping the four health addresses every second.
struct Prometheus {
    child: Child,
    address: SocketAddr,
    http: reqwest::Client,
}

impl Prometheus {
    async fn start(dir: &Path, targets: &[(&str, SocketAddr)]) -> anyhow::Result<Self> {
        let binary = tool(PROMETHEUS)?;
        let mut config =
            String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n");
        for (job, address) in targets {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['{address}']\n"
            ));
        }
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let data = dir.join("prometheus-data");
        std::fs::create_dir_all(&data)?;
        let address = free_local_address()?;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start prometheus")?;
        let prometheus = Prometheus {
            child,
            address,
            http: http()?,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = get(&prometheus.http, &format!("http://{address}/-/ready")).await
            {
                return Ok(prometheus);
            }
            if tokio::time::Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
                bail!("prometheus did not become ready; its log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// An instant query's result vector.
    async fn query(&self, promql: &str) -> anyhow::Result<Vec<Value>> {
        let answer: Value = serde_json::from_str(
            &self
                .http
                .get(reqwest::Url::parse_with_params(
                    &format!("http://{}/api/v1/query", self.address),
                    &[("query", promql)],
                )?)
                .send()
                .await?
                .text()
                .await?,
        )?;
        ensure!(answer["status"] == "success", "{promql}: {answer}");
        Ok(answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The value of a query that yields one sample; `None` when it yields none.
    async fn value(&self, promql: &str) -> anyhow::Result<Option<f64>> {
        let result = self.query(promql).await?;
        ensure!(
            result.len() <= 1,
            "{promql} yields several series: {result:?}"
        );
        Ok(match result.first() {
            Some(sample) => Some(
                sample["value"][1]
                    .as_str()
                    .context("sample value")?
                    .parse()?,
            ),
            None => None,
        })
    }

    /// Waits until `promql` yields one sample for which `expected` holds; fails with the last
    /// value seen.
    async fn wait_for(&self, promql: &str, expected: impl Fn(f64) -> bool) -> anyhow::Result<f64> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let value = self.value(promql).await?;
            if let Some(value) = value
                && expected(value)
            {
                return Ok(value);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{promql} is {value:?}, not as expected, after {PATIENCE:?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

/// Submissions to endpoints that answer 200, 500 or too late, and to one the SSRF guard blocks.
async fn deliveries(
    deployment: &Deployment,
    receiver: &TlsReceiver,
) -> anyhow::Result<Vec<(TenantApi, usize)>> {
    let env = &deployment.env;
    let ok = TenantApi::create(env, deployment.api, "metrics ok").await?;
    ok.configure(&receiver.url("/ok"), None).await?;
    let failing = TenantApi::create(env, deployment.api, "metrics 500").await?;
    failing.configure(&receiver.url("/fail"), None).await?;
    let slow = TenantApi::create(env, deployment.api, "metrics slow").await?;
    slow.configure(&receiver.url("/slow"), None).await?;
    let blocked = TenantApi::create(env, deployment.api, "metrics blocked").await?;
    let port = receiver.url("").rsplit(':').next().map(str::to_owned);
    blocked
        .configure(
            &format!(
                "https://{BLOCKED_NAME}:{}/blocked",
                port.context("receiver port")?
            ),
            None,
        )
        .await?;
    // The api accepted the name while it resolved to the allowed loopback; now it resolves to a
    // private address that is not on the allow-list (the file is read on every lookup).
    std::fs::write(
        &deployment.hosts_file,
        format!("10.20.30.40 {BLOCKED_NAME}\n"),
    )?;
    let plan = [(ok, 1), (failing, 1), (slow, 2), (blocked, 1)];
    for (tenant, events) in &plan {
        for n in 0..*events {
            tenant.submit(&format!("metrics {n}"), None).await?;
        }
    }
    Ok(plan.into_iter().collect())
}

/// An event the dispatcher cannot read: dead-lettered, counted, and seen in the dead-letter queue.
async fn unreadable_event(env: &TestEnvironment) -> anyhow::Result<()> {
    let broker = fp_broker::Broker::connect(&env.endpoints.broker_url, &env.namespace).await?;
    broker
        .publisher()
        .publish(&fp_broker::OutgoingMessage {
            exchange: "",
            routing_key: &broker.names.dispatcher_queue,
            message_id: "not-an-event",
            parent: None,
            payload: b"this is not protobuf \xff\xff\xff",
            headers: &[],
            expiration: None,
        })
        .await?;
    broker.close().await;
    Ok(())
}

/// A log-in with a wrong password through the dashboard's form.
async fn failed_log_in(dashboard: SocketAddr) -> anyhow::Result<()> {
    let browser = http()?;
    let (status, form) = get(&browser, &format!("http://{dashboard}/login")).await?;
    ensure!(status == 200, "log-in form: {status}");
    let marker = "name=\"csrf_token\" value=\"";
    let start = form.find(marker).context("csrf token")? + marker.len();
    let token = &form[start..start + form[start..].find('"').context("csrf end")?];
    let answer = browser
        .post(format!("http://{dashboard}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "email=nobody%40example.com&password=wrong&csrf_token={token}"
        ))
        .send()
        .await?;
    ensure!(
        answer.status() == 401,
        "wrong password answered {}",
        answer.status()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_every_metric_move_while_deliveries_flow() -> anyhow::Result<()> {
    tool(PROMETHEUS)?;
    let receiver = TlsReceiver::start(
        "127.0.0.1:0".parse()?,
        Arc::new(|request, _| match request.target.as_str() {
            "/fail" => CannedResponse::new(500, "broken"),
            "/slow" => CannedResponse {
                delay: Duration::from_millis(2500),
                ..CannedResponse::new(200, "too late")
            },
            _ => CannedResponse::new(200, "ok"),
        }),
    )
    .await?;
    let deployment = Deployment::start("prometheus", &receiver).await?;
    let targets = deployment.health_addresses();
    let prometheus = Prometheus::start(&deployment.env.dir, &targets).await?;
    // Every target is scraped before anything moves.
    prometheus
        .wait_for("count(up == 1)", |up| up == 4.0)
        .await?;

    deliveries(&deployment, &receiver).await?;
    unreadable_event(&deployment.env).await?;
    failed_log_in(deployment.dashboard).await?;

    let exactly = |expected: f64| move |value: f64| (value - expected).abs() < 1e-9;
    let checks: Vec<(&str, Expectation)> = vec![
        // Attempts by outcome, status class and format: one success; the 500 and the timeouts
        // tried twice each (one retry); the blocked target once (not retryable).
        (
            r#"sum(fp_dispatcher_attempts_total{job="fp-dispatcher",outcome="success",status_class="2xx",format="custom"})"#,
            Box::new(exactly(1.0)),
        ),
        (
            r#"sum(fp_dispatcher_attempts_total{outcome="http_status",status_class="5xx",format="custom"})"#,
            Box::new(exactly(2.0)),
        ),
        (
            r#"sum(fp_dispatcher_attempts_total{outcome="timeout",status_class="none"})"#,
            Box::new(exactly(4.0)),
        ),
        (
            r#"sum(fp_dispatcher_attempts_total{outcome="blocked",status_class="none"})"#,
            Box::new(exactly(1.0)),
        ),
        (
            "sum(fp_dispatcher_attempt_duration_seconds_count) - sum(fp_dispatcher_attempts_total)",
            Box::new(exactly(0.0)),
        ),
        (
            r#"sum(fp_dispatcher_attempt_duration_seconds_bucket{outcome="timeout",le="0.5"})"#,
            Box::new(exactly(0.0)),
        ),
        // Five events, each with exactly one first attempt.
        (
            "sum(fp_dispatcher_event_age_at_first_attempt_seconds_count)",
            Box::new(exactly(5.0)),
        ),
        (
            r#"sum(fp_dispatcher_retries_scheduled_total{tier="1s"})"#,
            Box::new(exactly(3.0)),
        ),
        (
            r#"sum(fp_dispatcher_deliveries_given_up_total{format="custom"})"#,
            Box::new(exactly(4.0)),
        ),
        ("sum(fp_dispatcher_deferred_total)", Box::new(|v| v >= 1.0)),
        (
            "sum(fp_dispatcher_in_flight_deliveries)",
            Box::new(exactly(0.0)),
        ),
        // Every attempt's outcome is in the log once: written by the dispatcher for the five
        // first attempts (claimed as they were sent, or parked at the slow endpoint's cap and
        // then taken by the parked copy) and for the other attempts a parked copy sent (at most
        // one per parking), the rest by log-ingest in batches, each with its lag.
        (
            "sum(fp_dispatcher_outcomes_logged_total)",
            Box::new(|v| v >= 5.0),
        ),
        (
            "sum(fp_dispatcher_outcomes_logged_total) - sum(fp_dispatcher_deferred_total) \
             - (sum(fp_dispatcher_host_rate_deferred_total) or vector(0))",
            Box::new(|v| v <= 5.0),
        ),
        (
            "sum(fp_log_ingest_rows_inserted_total) + sum(fp_dispatcher_outcomes_logged_total) \
             - sum(fp_dispatcher_attempts_total)",
            Box::new(exactly(0.0)),
        ),
        (
            "sum(fp_log_ingest_lag_seconds_count) - sum(fp_log_ingest_rows_inserted_total)",
            Box::new(exactly(0.0)),
        ),
        // The records log-ingest wrote were published in batches (what the log-lag alert watches).
        (
            r#"sum(fp_broker_batch_messages_sum{job="fp-dispatcher"})"#,
            Box::new(|v| v >= 1.0),
        ),
        (
            "sum(fp_log_ingest_batch_rows_count)",
            Box::new(|v| v >= 1.0),
        ),
        // The api: five submissions by route template; the outbox drained.
        (
            r#"sum(fp_http_requests_total{job="fp-api",route="/api/v2/submissions",method="POST",status_class="2xx"})"#,
            Box::new(exactly(5.0)),
        ),
        (
            r#"sum(fp_http_request_duration_seconds_count{job="fp-api",route="/api/v2/submissions",method="POST"})"#,
            Box::new(exactly(5.0)),
        ),
        ("sum(fp_api_outbox_published_total)", Box::new(exactly(5.0))),
        ("max(fp_api_outbox_backlog)", Box::new(exactly(0.0))),
        (
            "max(fp_api_outbox_oldest_age_seconds)",
            Box::new(exactly(0.0)),
        ),
        // The dead letter: counted by the dispatcher, seen in the queue by the api's sampler.
        (
            r#"sum(fp_broker_dead_lettered_total{job="fp-dispatcher",reason="unreadable"})"#,
            Box::new(exactly(1.0)),
        ),
        (
            "max(fp_broker_dead_letter_queue_messages)",
            Box::new(exactly(1.0)),
        ),
        // The dispatcher's acks: at least one frame, and never more than the inputs it settled
        // (fewer where a multiple-ack settled a run of them).
        (
            r#"sum(fp_broker_settle_frames_total{job="fp-dispatcher"})"#,
            Box::new(|v| v >= 1.0),
        ),
        (
            r#"sum(fp_broker_settle_frames_total{job="fp-dispatcher"}) - sum(fp_dispatcher_messages_handled_total) - sum(fp_broker_dead_lettered_total{job="fp-dispatcher"})"#,
            Box::new(|v| v <= 0.0),
        ),
        // Broker and database, in every service that uses them.
        ("count(fp_broker_connected == 1)", Box::new(exactly(3.0))),
        (
            "sum(fp_broker_reconnects_total or vector(0))",
            Box::new(exactly(0.0)),
        ),
        (
            "sum(fp_broker_publish_confirms_failed_total or vector(0))",
            Box::new(exactly(0.0)),
        ),
        ("count(fp_db_pool_waiting)", Box::new(exactly(4.0))),
        (
            r#"count(fp_db_pool_connections{state="idle"})"#,
            Box::new(exactly(4.0)),
        ),
        // The dashboard: pages by route template, and the failed log-in.
        (
            r#"sum(fp_http_requests_total{job="fp-dashboard",route="/login",method="GET",status_class="2xx"})"#,
            Box::new(exactly(1.0)),
        ),
        (
            r#"sum(fp_http_requests_total{job="fp-dashboard",route="/login",method="POST",status_class="4xx"})"#,
            Box::new(exactly(1.0)),
        ),
        (
            r#"sum(fp_dashboard_failed_logins_total{reason="credentials"})"#,
            Box::new(exactly(1.0)),
        ),
        // Every process ready.
        ("count(fp_ready == 1)", Box::new(exactly(4.0))),
    ];
    for (promql, expected) in &checks {
        prometheus.wait_for(promql, expected).await?;
    }

    // Every query of the shipped Grafana dashboard is valid PromQL over these metrics and shows
    // data once deliveries have flowed: no panel an operator opens stays empty for a typo.
    for (panel, promql) in dashboard_queries()? {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while prometheus
            .query(&promql)
            .await
            .with_context(|| format!("Grafana panel `{panel}`"))?
            .is_empty()
        {
            ensure!(
                tokio::time::Instant::now() < deadline,
                "Grafana panel `{panel}`: {promql} yields no series"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    // Labels stay bounded: no tenant id, event id or URL anywhere.
    let series: Value = serde_json::from_str(
        &prometheus
            .http
            .get(reqwest::Url::parse_with_params(
                &format!("http://{}/api/v1/series", prometheus.address),
                &[("match[]", r#"{__name__=~"fp_.+"}"#)],
            )?)
            .send()
            .await?
            .text()
            .await?,
    )?;
    let series = series["data"].as_array().context("series")?;
    ensure!(series.len() > 40, "too few series: {}", series.len());
    let uuid = regex_like_uuid;
    for labels in series {
        for (name, value) in labels.as_object().context("labels")? {
            let value = value.as_str().unwrap_or_default();
            ensure!(
                !uuid(value) && !value.contains("https://") && !value.contains(BLOCKED_NAME),
                "unbounded label {name}={value} in {labels}"
            );
        }
    }

    prometheus.stop().await?;
    deployment.env.finish().await
}

/// `(panel title, expression)` of every target of `deploy/observability/grafana-dashboard.json`.
fn dashboard_queries() -> anyhow::Result<Vec<(String, String)>> {
    let path = repo_root().join("deploy/observability/grafana-dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().context("dashboard panels")? {
        let title = panel["title"].as_str().unwrap_or_default();
        for target in panel["targets"].as_array().context("panel targets")? {
            let expr = target["expr"].as_str().context("target expr")?;
            queries.push((title.to_owned(), expr.to_owned()));
        }
    }
    ensure!(
        queries.len() >= 12,
        "too few dashboard queries: {queries:?}"
    );
    Ok(queries)
}

/// What a PromQL value must satisfy.
type Expectation = Box<dyn Fn(f64) -> bool>;

/// Whether `text` holds a UUID (8-4-4-4-12 hex digits).
fn regex_like_uuid(text: &str) -> bool {
    text.as_bytes().windows(36).any(|window| {
        window.iter().enumerate().all(|(index, byte)| match index {
            8 | 13 | 18 | 23 => *byte == b'-',
            _ => byte.is_ascii_hexdigit(),
        })
    })
}

#[test]
fn shipped_alert_rules_pass_promtool_check_and_their_unit_tests() -> anyhow::Result<()> {
    let promtool = tool(PROMTOOL)?;
    let dir = repo_root().join("deploy/observability");
    for args in [
        vec!["check", "rules", "alerts.yml"],
        vec!["check", "config", "prometheus.yml"],
        vec!["test", "rules", "alerts.test.yml"],
    ] {
        let output = std::process::Command::new(promtool)
            .args(&args)
            .current_dir(&dir)
            .output()?;
        ensure!(
            output.status.success(),
            "promtool {}: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
