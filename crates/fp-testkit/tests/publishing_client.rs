//! The publishing client (`fp-publisher`) on the real parts: events another service publishes with
//! it are delivered signed and logged, also with a field of a newer schema; it sends what the
//! api's own outbox relay sends, byte for byte; and a publish rides out a lost broker.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use fp_contracts::{EventMessage, Submission, SubmissionStatus};
use fp_publisher::{EventBuilder, Publisher, PublisherOptions};
use fp_testkit::environment::{ServiceEndpoints, TestEnvironment, binaries_dir};
use fp_testkit::pipeline::{EventsQueue, Pipeline, TenantApi, start_api};
use fp_testkit::private_services::PrivateRabbit;
use fp_testkit::receiver::{ReceivedRequest, TlsReceiver, always_ok};
use futures_util::StreamExt;
use secrecy::SecretString;
use serde_json::{Value, json};
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(30);
const SECRET: &str = "publishing-client-secret";

/// HMAC-SHA256 computed here with ring directly, not with the product's signing code.
fn expected_signature(body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    format!(
        "sha256={}",
        hex::encode(ring::hmac::sign(&key, body).as_ref())
    )
}

/// Now, in whole seconds as the webhook body shows it (the dispatcher refuses old events).
fn occurred_at() -> anyhow::Result<DateTime<Utc>> {
    DateTime::from_timestamp(Utc::now().timestamp(), 0).context("time")
}

fn submission(id: i64, text: &str, status: SubmissionStatus) -> Submission {
    Submission {
        id,
        campaign_id: 7,
        star_rating: 5,
        text_feedback: text.to_owned(),
        customer_name: Some("Jane Doe".to_owned()),
        status,
    }
}

async fn publisher(env: &TestEnvironment) -> anyhow::Result<Publisher> {
    let options = PublisherOptions {
        exchange: format!("{}.events", env.namespace),
        ..PublisherOptions::default()
    };
    Ok(Publisher::connect(
        SecretString::from(env.endpoints.broker_url.clone()),
        options,
    )
    .await?)
}

async fn configured_tenant(
    env: &TestEnvironment,
    pipeline: &Pipeline,
    receiver: &TlsReceiver,
) -> anyhow::Result<(TenantApi, Uuid)> {
    let tenant = pipeline.tenant(env, "Survey Co").await?;
    tenant
        .configure(&receiver.url("/hook"), Some(SECRET))
        .await?;
    let tenant_id = Uuid::parse_str(&tenant.tenant_id)?;
    Ok((tenant, tenant_id))
}

/// The body that delivered the event of submission `submission_id` (each event of a test has a
/// submission of its own), checked to be signed with the tenant's secret.
async fn delivered(receiver: &TlsReceiver, submission_id: i64) -> anyhow::Result<Value> {
    let request = receiver
        .wait_for_request(PATIENCE, |request: &ReceivedRequest| {
            serde_json::from_slice::<Value>(&request.body)
                .is_ok_and(|body| body["data"]["id"] == submission_id)
        })
        .await?;
    assert_eq!(
        request.header("x-feedbackpulse-signature"),
        Some(expected_signature(&request.body).as_str())
    );
    Ok(serde_json::from_slice(&request.body)?)
}

/// The tenant's log, once it holds an attempt for each event.
async fn logged(tenant: &TenantApi, event_ids: &[Uuid]) -> anyhow::Result<Vec<Value>> {
    let wanted: Vec<String> = event_ids.iter().map(Uuid::to_string).collect();
    let entries = tenant
        .logs_until(PATIENCE, |entries| {
            wanted
                .iter()
                .all(|id| entries.iter().any(|entry| entry["event_id"] == id.as_str()))
        })
        .await?;
    for id in &wanted {
        assert!(
            entries
                .iter()
                .any(|entry| entry["event_id"] == id.as_str() && entry["response_code"] == 200),
            "event {id} is not logged as delivered: {entries:#?}"
        );
    }
    Ok(entries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_the_client_are_delivered_signed_and_logged_also_from_a_newer_schema()
-> anyhow::Result<()> {
    let mut env = TestEnvironment::new("publisher").await?;
    let receiver = TlsReceiver::start("127.0.0.1:0".parse()?, always_ok()).await?;
    env.trust_receiver(&receiver)?;
    let pipeline = Pipeline::start(&mut env, 1).await?;
    let outcome = async {
        let (tenant, tenant_id) = configured_tenant(&env, &pipeline, &receiver).await?;
        let publisher = publisher(&env).await?;

        let occurred_at = occurred_at()?;
        let created_id = Uuid::now_v7();
        let created = EventBuilder::submission_created(
            tenant_id,
            submission(1, "Love it", SubmissionStatus::Pending),
        )
        .event_id(created_id)
        .occurred_at(occurred_at);
        publisher.publish(&created.build()).await?;

        // A newer publisher's envelope: field 99 (length-delimited, "new") that v1 does not know.
        let changed_id = Uuid::now_v7();
        let mut newer = EventBuilder::submission_status_changed(
            tenant_id,
            submission(2, "Love it", SubmissionStatus::Approved),
            SubmissionStatus::Pending,
        )
        .event_id(changed_id)
        .occurred_at(occurred_at)
        .build();
        newer
            .body
            .extend_from_slice(&[0x9a, 0x06, 3, b'n', b'e', b'w']);
        publisher.publish(&newer).await?;

        let body = delivered(&receiver, 1).await?;
        assert_eq!(
            body,
            json!({
                "event": "submission.created",
                "timestamp": occurred_at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                "data": {
                    "id": 1,
                    "campaign_id": 7,
                    "star_rating": 5,
                    "text_feedback": "Love it",
                    "customer_name": "Jane Doe",
                    "status": "pending",
                },
            })
        );
        let body = delivered(&receiver, 2).await?;
        assert_eq!(body["event"], "submission.status_changed");
        assert_eq!(body["data"]["status"], "approved");
        assert_eq!(body["data"]["previous_status"], "pending");

        logged(&tenant, &[created_id, changed_id]).await?;
        publisher.close().await?;
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_and_the_outbox_relay_send_identical_messages() -> anyhow::Result<()> {
    let mut env = TestEnvironment::new("publisher_relay").await?;
    let api = start_api(&mut env).await?;
    let outcome = async {
        // A tenant without an endpoint: its events go nowhere, and this test reads them from a
        // queue of its own bound beside the dispatchers'.
        let tenant = TenantApi::create(&env, api, "Relay Co").await?;
        let events_queue = EventsQueue::bind(&env).await?;
        let mut messages = events_queue.consume("publishing-client-test").await?;
        let mut next = async || -> anyhow::Result<lapin::message::Delivery> {
            Ok(tokio::time::timeout(PATIENCE, messages.next())
                .await?
                .context("the consumer ended")??)
        };

        tenant
            .submit("Same bytes, please", Some("Jane Doe"))
            .await?;
        let from_relay = next().await?;
        let event = fp_contracts::decode_event(&from_relay.data)?;

        let publisher = publisher(&env).await?;
        publisher.publish(&EventMessage::of_event(&event)).await?;
        let from_client = next().await?;

        assert_eq!(from_client.data, from_relay.data, "envelope bytes");
        assert_eq!(from_client.routing_key, from_relay.routing_key);
        assert_eq!(from_relay.routing_key.as_str(), "submission.created");
        let contract = |delivery: &lapin::message::Delivery| {
            let properties = &delivery.properties;
            (
                properties.message_id().as_ref().map(|id| id.to_string()),
                properties.content_type().as_ref().map(|ty| ty.to_string()),
                properties.kind().as_ref().map(|kind| kind.to_string()),
                *properties.delivery_mode(),
            )
        };
        assert_eq!(contract(&from_client), contract(&from_relay));
        assert_eq!(
            contract(&from_relay),
            (
                Some(event.id.to_string()),
                Some(EventMessage::CONTENT_TYPE.to_owned()),
                Some(EventMessage::MESSAGE_TYPE.to_owned()),
                Some(EventMessage::DELIVERY_MODE),
            )
        );
        publisher.close().await?;
        events_queue.close().await?;
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_rides_out_a_lost_broker_and_returns_after_the_confirm() -> anyhow::Result<()> {
    // A RabbitMQ node of this test's own, to stop under the running services and the client.
    let suffix = Uuid::new_v4().simple().to_string();
    let scratch = binaries_dir()?
        .join("test-runs")
        .join(format!("publisher_broker_{}", &suffix[..10]));
    let rabbit = PrivateRabbit::start(&scratch).await?;
    let endpoints = ServiceEndpoints {
        broker_url: rabbit.amqp_url(),
        ..ServiceEndpoints::shared()
    };
    let mut env = TestEnvironment::new_on("publisher_broker", &endpoints).await?;
    let receiver = TlsReceiver::start("127.0.0.1:0".parse()?, always_ok()).await?;
    env.trust_receiver(&receiver)?;
    let pipeline = Pipeline::start(&mut env, 1).await?;
    let outcome = async {
        let (tenant, tenant_id) = configured_tenant(&env, &pipeline, &receiver).await?;
        let publisher = Arc::new(publisher(&env).await?);

        // The connection the client opened goes with the broker application; the publish is
        // asked for while nothing answers.
        rabbit.stop_app().await?;
        let event_id = Uuid::now_v7();
        let message = EventBuilder::submission_created(
            tenant_id,
            submission(1, "Through the outage", SubmissionStatus::Pending),
        )
        .event_id(event_id)
        .build();
        let publishing = tokio::spawn({
            let publisher = Arc::clone(&publisher);
            async move { publisher.publish(&message).await }
        });
        rabbit.start_app().await?;
        // Only a confirm from the restarted node can end the publish well.
        publishing.await??;

        let body = delivered(&receiver, 1).await?;
        assert_eq!(body["data"]["text_feedback"], "Through the outage");
        logged(&tenant, &[event_id]).await?;
        publisher.close().await?;
        Ok(())
    }
    .await;
    env.finish_after(outcome).await
}

/// Set to rewrite the guide's code blocks from the files instead of checking them.
const UPDATE_GUIDE: &str = "FP_UPDATE_PUBLISHING_GUIDE";

#[test]
fn the_publishing_guide_shows_both_clients_as_their_files_are() -> anyhow::Result<()> {
    let repository = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let guide_path = repository.join("docs/publishing-events.md");
    let included = fp_testkit::doc_includes::check_or_update(&guide_path, UPDATE_GUIDE)?;
    assert_eq!(
        included.files,
        [
            "../crates/fp-publisher/examples/publish_submission.rs",
            "../examples/python-publisher/publish.py",
        ]
    );
    assert_eq!(included.text, std::fs::read_to_string(&guide_path)?);
    let readme = std::fs::read_to_string(repository.join("README.md"))?;
    assert!(
        readme.contains("](docs/publishing-events.md)"),
        "the README links the guide"
    );
    Ok(())
}
