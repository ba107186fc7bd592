//! The services ride out their dependencies going away, on a PostgreSQL cluster and a RabbitMQ
//! node of this test's own (really stopped and started; the shared servers are never touched):
//! `/readyz` of every service says 503 while what it needs is gone and 200 once it is back, with
//! no restart; the api answers 503 with `Retry-After` while the database is unreachable, keeps
//! taking submissions while the broker is, and every accepted submission is delivered.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, ensure};
use fp_broker::{Broker, OutgoingMessage};
use fp_domain::event::{Change, Event};
use fp_domain::submission::{Submission, SubmissionStatus};
use fp_testkit::environment::{ServiceEndpoints, TestEnvironment, binaries_dir};
use fp_testkit::pipeline::{Pipeline, TenantApi, start_dashboard};
use fp_testkit::private_services::{PrivatePostgres, PrivateRabbit};
use fp_testkit::receiver::{TlsReceiver, always_ok};
use serde_json::Value;

/// Readiness must follow a dependency within this.
const READINESS_LIMIT: Duration = Duration::from_secs(30);
/// Everything accepted is delivered and logged within this once the dependencies are back.
const DELIVERY_LIMIT: Duration = Duration::from_secs(60);

fn scratch_dir(test: &str) -> anyhow::Result<PathBuf> {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    Ok(binaries_dir()?
        .join("test-runs")
        .join(format!("outage_{test}_{}", &suffix[..10])))
}

/// The `/readyz` addresses of a running deployment, by service.
struct Probes(Vec<(&'static str, SocketAddr)>);

impl Probes {
    async fn statuses(&self, http: &reqwest::Client) -> Vec<(&'static str, u16)> {
        let mut statuses = Vec::new();
        for (name, address) in &self.0 {
            let status = match http
                .get(format!("http://{address}/readyz"))
                .timeout(Duration::from_secs(5))
                .send()
                .await
            {
                Ok(response) => response.status().as_u16(),
                // A service that does not answer at all has died: never what this test wants.
                Err(_) => 0,
            };
            statuses.push((*name, status));
        }
        statuses
    }

    /// Waits until every service in `names` answers `status` (and the others 200); returns how
    /// long that took.
    async fn wait_for(
        &self,
        http: &reqwest::Client,
        names: &[&str],
        status: u16,
    ) -> anyhow::Result<Duration> {
        let started = tokio::time::Instant::now();
        loop {
            let statuses = self.statuses(http).await;
            let as_expected = statuses.iter().all(|(name, got)| {
                let wanted = if names.contains(name) { status } else { 200 };
                *got == wanted
            });
            if as_expected {
                return Ok(started.elapsed());
            }
            ensure!(
                started.elapsed() < READINESS_LIMIT,
                "readiness did not become {status} for {names:?} within {READINESS_LIMIT:?}: {statuses:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

struct Deployment {
    env: TestEnvironment,
    tenant: TenantApi,
    receiver: TlsReceiver,
    probes: Probes,
    http: reqwest::Client,
}

async fn deploy(label: &str, endpoints: &ServiceEndpoints) -> anyhow::Result<Deployment> {
    let mut env = TestEnvironment::new_on(label, endpoints).await?;
    let receiver = TlsReceiver::start("127.0.0.1:0".parse()?, always_ok()).await?;
    env.trust_receiver(&receiver)?;
    let pipeline = Pipeline::start(&mut env, 1).await?;
    let (_, dashboard_health) = start_dashboard(&mut env, pipeline.api).await?;
    let tenant = pipeline.tenant(&env, label).await?;
    tenant.configure(&receiver.url("/hook"), None).await?;
    let probes = Probes(vec![
        ("fp-api", pipeline.api_health),
        ("fp-dispatcher", pipeline.dispatchers[0]),
        ("fp-log-ingest", pipeline.log_ingest),
        ("fp-dashboard", dashboard_health),
    ]);
    Ok(Deployment {
        env,
        tenant,
        receiver,
        probes,
        http: reqwest::Client::builder().no_proxy().build()?,
    })
}

/// Waits until `count` distinct submissions were delivered (200) and logged.
async fn delivered_and_logged(deployment: &Deployment, count: usize) -> anyhow::Result<()> {
    let entries = deployment
        .tenant
        .logs_until(DELIVERY_LIMIT, |entries| successes(entries) >= count)
        .await?;
    ensure!(
        successes(&entries) == count,
        "{} of {count} deliveries logged as delivered",
        successes(&entries)
    );
    ensure!(
        deployment.receiver.requests().len() >= count,
        "the receiver saw {} of {count}",
        deployment.receiver.requests().len()
    );
    Ok(())
}

fn successes(entries: &[Value]) -> usize {
    entries
        .iter()
        .filter(|entry| entry["response_code"] == 200)
        .filter_map(|entry| entry["delivery_id"].as_str())
        .collect::<std::collections::HashSet<_>>()
        .len()
}

/// A `submission.created` event for `tenant_id`, published as the api's relay would.
async fn publish_event(broker: &Broker, tenant_id: uuid::Uuid) -> anyhow::Result<()> {
    let event = Event {
        id: uuid::Uuid::now_v7(),
        tenant_id,
        occurred_at: chrono::Utc::now(),
        change: Change::SubmissionCreated {
            submission: Submission {
                id: 1,
                campaign_id: 1,
                star_rating: 5,
                text_feedback: "published while the database was down".to_owned(),
                customer_name: None,
                status: SubmissionStatus::Pending,
            },
        },
    };
    broker
        .publisher()
        .publish(&OutgoingMessage {
            exchange: &broker.names.events_exchange,
            routing_key: event.event_type().as_str(),
            message_id: &event.id.to_string(),
            parent: None,
            payload: &fp_contracts::encode_event(&event),
            headers: &[],
            expiration: None,
        })
        .await?;
    Ok(())
}

const BROKER_USERS: &[&str] = &["fp-api", "fp-dispatcher", "fp-log-ingest"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_is_a_non_event() -> anyhow::Result<()> {
    let dir = scratch_dir("broker")?;
    let postgres = PrivatePostgres::start(&dir).await?;
    let mut rabbit = PrivateRabbit::start(&dir).await?;
    let endpoints = ServiceEndpoints::private(&postgres, &rabbit);
    let deployment = deploy("broker_restart", &endpoints).await?;
    let http = &deployment.http;
    deployment.probes.wait_for(http, &[], 200).await?;

    // The whole node down: every broker user says so; the dashboard needs no broker.
    rabbit.stop().await?;
    deployment.probes.wait_for(http, BROKER_USERS, 503).await?;
    // Submissions are still taken: their events wait in the outbox.
    for n in 0..5 {
        deployment
            .tenant
            .submit(&format!("while down {n}"), None)
            .await?;
    }
    rabbit.start_again().await?;
    let recovered = deployment.probes.wait_for(http, &[], 200).await?;
    eprintln!("ready again {recovered:?} after the node came back");
    delivered_and_logged(&deployment, 5).await?;

    // The application stopped inside a running node (what an upgrade does).
    rabbit.stop_app().await?;
    deployment.probes.wait_for(http, BROKER_USERS, 503).await?;
    for n in 0..5 {
        deployment
            .tenant
            .submit(&format!("app stopped {n}"), None)
            .await?;
    }
    rabbit.start_app().await?;
    deployment.probes.wait_for(http, &[], 200).await?;
    delivered_and_logged(&deployment, 10).await?;

    deployment.env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_database_the_api_says_503_with_retry_after() -> anyhow::Result<()> {
    let dir = scratch_dir("database")?;
    let postgres = PrivatePostgres::start(&dir).await?;
    let rabbit = PrivateRabbit::start(&dir).await?;
    let endpoints = ServiceEndpoints::private(&postgres, &rabbit);
    let deployment = deploy("database_outage", &endpoints).await?;
    let http = &deployment.http;
    deployment.probes.wait_for(http, &[], 200).await?;

    // A second tenant whose config no dispatcher has cached yet: its event, published while the
    // database is down, cannot be handled until it is back.
    let late_tenant = TenantApi::create(
        &deployment.env,
        deployment
            .tenant
            .base
            .trim_start_matches("http://")
            .parse()?,
        "uncached",
    )
    .await?;
    late_tenant
        .configure(&deployment.receiver.url("/late"), None)
        .await?;

    postgres.stop().await?;
    deployment
        .probes
        .wait_for(
            http,
            &["fp-api", "fp-dispatcher", "fp-log-ingest", "fp-dashboard"],
            503,
        )
        .await?;
    let response = deployment
        .tenant
        .http
        .post(format!("{}/api/v2/submissions", deployment.tenant.base))
        .bearer_auth(&deployment.tenant.key)
        .header("content-type", "application/json")
        .body(r#"{"campaign_id": 1, "star_rating": 5, "text_feedback": "during the outage"}"#)
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 503);
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u32>().ok())
        .context("a 503 without a numeric Retry-After")?;
    assert!(retry_after > 0);
    let body: Value = serde_json::from_str(&response.text().await?)?;
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("database")),
        "{body}"
    );

    // Longer than the queue's delivery limit (20) of immediate requeues would last: the event
    // must be handed back patiently, never dead-lettered.
    let broker = Broker::connect(&endpoints.broker_url, &deployment.env.namespace).await?;
    publish_event(&broker, late_tenant.tenant_id.parse()?).await?;
    tokio::time::sleep(Duration::from_secs(25)).await;

    postgres.start_again().await?;
    deployment.probes.wait_for(http, &[], 200).await?;
    // The pools recovered without a restart: the same processes take and deliver a submission.
    deployment.tenant.submit("after the outage", None).await?;
    delivered_and_logged(&deployment, 1).await?;
    let late = late_tenant
        .logs_until(DELIVERY_LIMIT, |entries| successes(entries) == 1)
        .await?;
    ensure!(
        successes(&late) == 1,
        "the event published during the outage: {late:#?}"
    );
    let dead_letters = broker
        .channel()
        .await?
        .queue_declare(
            broker.names.dead_letter_queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await?
        .message_count();
    assert_eq!(
        dead_letters, 0,
        "an event was dead-lettered during the outage"
    );
    broker.close().await;
    deployment.env.finish().await
}
