//! Events from other services' publishers, through the real services: every kind of invalid
//! envelope is dead-lettered with its rejection code, an event for a tenant that does not exist is
//! counted and recorded, an event with a field from a newer schema is delivered, and the same event
//! published twice is delivered and logged once, also with two dispatchers.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Context;
use chrono::{TimeDelta, Utc};
use fp_broker::{Broker, OutgoingMessage, Publisher};
use fp_contracts::{Change, Event, ProtoMessage, Submission, SubmissionStatus, v1};
use fp_testkit::environment::{TestEnvironment, broker_url};
use fp_testkit::pipeline::{Pipeline, metric, metrics_text};
use fp_testkit::receiver::{TlsReceiver, always_ok};
use futures_util::StreamExt;
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(30);

fn event_for(tenant_id: Uuid, text: &str) -> Event {
    Event {
        id: Uuid::now_v7(),
        tenant_id,
        occurred_at: Utc::now(),
        change: Change::SubmissionCreated {
            submission: Submission {
                id: 1,
                campaign_id: 1,
                star_rating: 4,
                text_feedback: text.to_owned(),
                customer_name: Some("Publisher Test".to_owned()),
                status: SubmissionStatus::Pending,
            },
        },
    }
}

/// One message as a publisher might send it.
struct Published {
    routing_key: String,
    message_id: String,
    message_type: Option<&'static str>,
    body: Vec<u8>,
}

impl Published {
    /// The event as the contract says to publish it.
    fn of_event(event: &Event) -> Self {
        let message = fp_contracts::EventMessage::of_event(event);
        Published {
            routing_key: message.routing_key,
            message_id: message.message_id,
            message_type: Some(fp_contracts::EventMessage::MESSAGE_TYPE),
            body: message.body,
        }
    }

    /// An envelope made from a valid event and then changed by `edit`, sent as the contract says.
    fn edited(tenant_id: Uuid, edit: impl FnOnce(&mut v1::EventEnvelope)) -> Self {
        let mut envelope = fp_contracts::envelope_from_event(&event_for(tenant_id, "hello"));
        edit(&mut envelope);
        Published {
            routing_key: envelope.event_type.clone(),
            message_id: envelope.id.clone(),
            message_type: Some(fp_contracts::EventMessage::MESSAGE_TYPE),
            body: envelope.encode_to_vec(),
        }
    }

    fn submission(envelope: &mut v1::EventEnvelope) -> &mut v1::Submission {
        match &mut envelope.payload {
            Some(v1::event_envelope::Payload::SubmissionCreated(created)) => {
                created.submission.get_or_insert_default()
            }
            _ => unreachable!("made from a submission.created event"),
        }
    }

    async fn send(&self, publisher: &Publisher, exchange: &str) -> anyhow::Result<()> {
        publisher
            .publish_as(
                &OutgoingMessage {
                    exchange,
                    routing_key: &self.routing_key,
                    message_id: &self.message_id,
                    parent: None,
                    payload: &self.body,
                    headers: &[],
                    expiration: None,
                },
                self.message_type,
            )
            .await?;
        Ok(())
    }
}

/// Every invalid envelope of the contract, each with the rejection code it must get. Message ids
/// differ from case to case, so each dead letter is told apart by its message id.
fn invalid_envelopes(tenant_id: Uuid) -> Vec<(&'static str, Published)> {
    let submission = Published::submission;
    vec![
        (
            "undecodable",
            Published {
                routing_key: "submission.created".to_owned(),
                message_id: Uuid::now_v7().to_string(),
                message_type: None,
                body: b"\x08\x96\x01 definitely not an event".to_vec(),
            },
        ),
        (
            "unsupported_schema",
            Published {
                message_type: Some("feedbackpulse.v2.EventEnvelope"),
                ..Published::edited(tenant_id, |_| {})
            },
        ),
        (
            "too_large",
            Published::edited(tenant_id, |envelope| {
                submission(envelope).text_feedback = "x".repeat(70_000);
            }),
        ),
        (
            "unknown_event_type",
            Published::edited(tenant_id, |envelope| {
                envelope.event_type = "submission.deleted".to_owned();
            }),
        ),
        (
            "event_type_mismatch",
            Published::edited(tenant_id, |envelope| {
                envelope.event_type = "submission.status_changed".to_owned();
            }),
        ),
        (
            "event_type_mismatch",
            Published {
                routing_key: "webhook.test".to_owned(),
                ..Published::edited(tenant_id, |_| {})
            },
        ),
        (
            "invalid_event_id",
            Published::edited(tenant_id, |envelope| {
                envelope.id = Uuid::new_v4().to_string();
            }),
        ),
        (
            "invalid_event_id",
            Published {
                message_id: "event-42".to_owned(),
                ..Published::edited(tenant_id, |envelope| {
                    envelope.id = "event-42".to_owned();
                })
            },
        ),
        (
            "message_id_mismatch",
            Published {
                message_id: Uuid::now_v7().to_string(),
                ..Published::edited(tenant_id, |_| {})
            },
        ),
        (
            "invalid_tenant_id",
            Published::edited(tenant_id, |envelope| {
                envelope.tenant_id = "acme".to_owned();
            }),
        ),
        (
            "missing_payload",
            Published::edited(tenant_id, |envelope| envelope.payload = None),
        ),
        (
            "invalid_field",
            Published::edited(tenant_id, |envelope| {
                submission(envelope).star_rating = 9;
            }),
        ),
        (
            "invalid_field",
            Published::edited(tenant_id, |envelope| {
                submission(envelope).status = "deleted".to_owned();
            }),
        ),
        (
            "text_too_long",
            Published::edited(tenant_id, |envelope| {
                submission(envelope).customer_name = Some("n".repeat(201));
            }),
        ),
        (
            "invalid_text",
            Published::edited(tenant_id, |envelope| {
                submission(envelope).text_feedback = "nul \0 inside".to_owned();
            }),
        ),
        (
            "invalid_timestamp",
            Published::edited(tenant_id, |envelope| envelope.occurred_at = None),
        ),
        (
            "occurred_in_future",
            Published::edited(tenant_id, |envelope| {
                envelope.occurred_at = Some(fp_contracts::timestamp_from(
                    Utc::now() + TimeDelta::hours(1),
                ));
            }),
        ),
        (
            "too_old",
            Published::edited(tenant_id, |envelope| {
                envelope.occurred_at = Some(fp_contracts::timestamp_from(
                    Utc::now() - TimeDelta::days(30),
                ));
            }),
        ),
    ]
}

/// The `x-fp-rejection` code of each dead letter, by message id, until every id in `expected`
/// has come (or [`PATIENCE`] passed).
async fn dead_letter_codes(
    broker: &Broker,
    expected: &[&str],
) -> anyhow::Result<HashMap<String, (String, String)>> {
    let mut dead_letters = broker.consume(&broker.names.dead_letter_queue, "test-rejections", 50);
    let mut found = HashMap::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !expected.iter().all(|id| found.contains_key(*id)) {
        let Ok(Some(dead)) = tokio::time::timeout_at(deadline, dead_letters.next()).await else {
            break;
        };
        let message_id = dead
            .properties
            .message_id()
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let code = fp_broker::header_text(&dead, fp_broker::REJECTION_HEADER).unwrap_or_default();
        let reason =
            fp_broker::header_text(&dead, fp_broker::DEAD_LETTER_REASON_HEADER).unwrap_or_default();
        found.insert(message_id, (code, reason));
        fp_broker::ack(&dead).await?;
    }
    Ok(found)
}

/// A counter's value for one label set in a service's `/metrics`; 0 when absent.
async fn labelled(health: std::net::SocketAddr, name: &str, label: &str) -> anyhow::Result<u64> {
    let text = metrics_text(health).await?;
    Ok(text
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")) && line.contains(label))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>()
        .round() as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_envelopes_are_dead_lettered_and_unknown_tenants_recorded() -> anyhow::Result<()> {
    let receiver = TlsReceiver::start("127.0.0.1:0".parse()?, always_ok()).await?;
    let mut env = TestEnvironment::new("publisher-validation").await?;
    env.trust_receiver(&receiver)?;
    let pipeline = Pipeline::start(&mut env, 1).await?;
    let tenant = pipeline.tenant(&env, "publisher-validation").await?;
    tenant.configure(&receiver.url("/hook"), None).await?;
    let tenant_id: Uuid = tenant.tenant_id.parse()?;

    let broker = Broker::connect(&broker_url(), &env.namespace).await?;
    let publisher = broker.publisher();
    let exchange = broker.names.events_exchange.clone();
    let cases = invalid_envelopes(tenant_id);
    for (_, published) in &cases {
        published.send(&publisher, &exchange).await?;
    }
    let ids: Vec<&str> = cases.iter().map(|(_, p)| p.message_id.as_str()).collect();
    let found = dead_letter_codes(&broker, &ids).await?;
    for (code, published) in &cases {
        let (got, reason) = found
            .get(&published.message_id)
            .with_context(|| format!("no dead letter for the `{code}` case"))?;
        assert_eq!(got, code, "{reason}");
        assert!(!reason.is_empty(), "{code}: a reason for the operator");
    }
    assert_eq!(
        metric(
            pipeline.dispatchers[0],
            "fp_dispatcher_events_rejected_total"
        )
        .await?,
        cases.len() as u64
    );
    assert_eq!(
        labelled(
            pipeline.dispatchers[0],
            "fp_dispatcher_events_rejected_total",
            "reason=\"too_old\"",
        )
        .await?,
        1
    );

    // An event for a tenant that does not exist: counted and recorded, not delivered.
    let stranger = event_for(Uuid::now_v7(), "for nobody");
    Published::of_event(&stranger)
        .send(&publisher, &exchange)
        .await?;

    // A newer publisher's envelope: field 99 is unknown to this schema and skipped.
    let newer = event_for(tenant_id, "from a newer publisher");
    let mut body = fp_contracts::encode_event(&newer);
    body.extend_from_slice(&[0x9a, 0x06, 3, b'n', b'e', b'w']);
    Published {
        routing_key: "submission.created".to_owned(),
        message_id: newer.id.to_string(),
        message_type: Some(fp_contracts::EventMessage::MESSAGE_TYPE),
        body,
    }
    .send(&publisher, &exchange)
    .await?;
    let delivered = receiver.wait_for(1, PATIENCE).await?;
    assert!(
        String::from_utf8_lossy(&delivered[0].body).contains("from a newer publisher"),
        "only the valid event reaches the endpoint"
    );

    // The operator's view: `fpctl undeliverable-events`, one JSON object a line.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let recorded = loop {
        let listed = env.fpctl(&["undeliverable-events"]).await?;
        let recorded = listed
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<Vec<serde_json::Value>, _>>()?;
        if !recorded.is_empty() || tokio::time::Instant::now() > deadline {
            break recorded;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["event_id"], stranger.id.to_string());
    assert_eq!(recorded[0]["tenant_id"], stranger.tenant_id.to_string());
    assert_eq!(recorded[0]["reason"], "unknown_tenant");
    assert_eq!(recorded[0]["event_type"], "submission.created");
    assert_eq!(
        labelled(
            pipeline.dispatchers[0],
            "fp_dispatcher_undeliverable_total",
            "reason=\"unknown_tenant\"",
        )
        .await?,
        1
    );
    assert_eq!(receiver.requests().len(), 1, "nothing invalid was sent");

    broker.close().await;
    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_published_twice_is_delivered_and_logged_once() -> anyhow::Result<()> {
    const EVENTS: usize = 20;
    let receiver = TlsReceiver::start("127.0.0.1:0".parse()?, always_ok()).await?;
    let mut env = TestEnvironment::new("publisher-duplicates").await?;
    env.trust_receiver(&receiver)?;
    let pipeline = Pipeline::start(&mut env, 2).await?;
    let tenant = pipeline.tenant(&env, "publisher-duplicates").await?;
    tenant.configure(&receiver.url("/hook"), None).await?;
    let tenant_id: Uuid = tenant.tenant_id.parse()?;

    let broker = Broker::connect(&broker_url(), &env.namespace).await?;
    let publisher = broker.publisher();
    let exchange = broker.names.events_exchange.clone();
    let events: Vec<Event> = (0..EVENTS)
        .map(|n| event_for(tenant_id, &format!("duplicate {n}")))
        .collect();
    let message = Published::of_event;
    // Each event twice in a row, as a publisher retrying an unconfirmed publish does: the copies
    // are shared out between the two dispatchers.
    for event in &events {
        message(event).send(&publisher, &exchange).await?;
        message(event).send(&publisher, &exchange).await?;
    }
    receiver.wait_for(EVENTS, PATIENCE).await?;
    // And once more each after it was delivered.
    for event in &events {
        message(event).send(&publisher, &exchange).await?;
    }
    // Every copy handled (acked) by one dispatcher or the other. A delivery deferred at the
    // endpoint's in-flight cap (all of them go to one endpoint, and the copies arrive together)
    // is handled twice: deferred, then sent when its deferred copy comes back.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (mut handled, mut deferred) = (0, 0);
        for dispatcher in &pipeline.dispatchers {
            handled += metric(*dispatcher, "fp_dispatcher_messages_handled_total").await?;
            deferred += metric(*dispatcher, "fp_dispatcher_deferred_total").await?;
            deferred += metric(*dispatcher, "fp_dispatcher_host_rate_deferred_total").await?;
        }
        let expected = (3 * EVENTS) as u64 + deferred;
        if handled >= expected || tokio::time::Instant::now() > deadline {
            assert_eq!(handled, expected, "handled, with {deferred} deferred");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut requests_per_delivery: BTreeMap<String, usize> = BTreeMap::new();
    for request in receiver.requests() {
        let delivery = request
            .header("X-FeedbackPulse-Delivery")
            .unwrap_or_default()
            .to_owned();
        *requests_per_delivery.entry(delivery).or_default() += 1;
    }
    assert_eq!(requests_per_delivery.len(), EVENTS);
    assert!(
        requests_per_delivery.values().all(|count| *count == 1),
        "each event reached the endpoint once: {requests_per_delivery:?}"
    );

    let entries = tenant
        .logs_until(PATIENCE, |entries| entries.len() >= EVENTS)
        .await?;
    let mut logged_per_event: BTreeMap<String, usize> = BTreeMap::new();
    for entry in &entries {
        let event_id = entry["event_id"].as_str().unwrap_or_default().to_owned();
        *logged_per_event.entry(event_id).or_default() += 1;
    }
    let published: BTreeMap<String, usize> = events
        .iter()
        .map(|event| (event.id.to_string(), 1))
        .collect();
    assert_eq!(logged_per_event, published, "the log shows each event once");

    let mut skipped = 0;
    for dispatcher in &pipeline.dispatchers {
        // A copy skipped by the dispatcher that made the attempt, or by another one.
        skipped += metric(*dispatcher, "fp_dispatcher_repeats_skipped_total").await?;
        skipped += metric(*dispatcher, "fp_dispatcher_duplicate_events_skipped_total").await?;
    }
    assert_eq!(skipped, (2 * EVENTS) as u64, "every copy was skipped");

    broker.close().await;
    env.finish().await
}
