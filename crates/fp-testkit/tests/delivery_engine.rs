//! The dispatcher through real deliveries: retries through the broker, timeouts, redirects, 410,
//! blocked targets, crashes, scale-out, a slow endpoint among fast ones, poison messages, and
//! which attempts it logs itself.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use fp_broker::{Broker, OutgoingMessage};
use fp_testkit::environment::{TestEnvironment, broker_url};
use fp_testkit::pipeline::{EventsQueue, Pipeline, metric, metric_reaches};
use fp_testkit::receiver::{CannedResponse, Responder, TlsReceiver};
use futures_util::StreamExt;
use serde_json::Value;

/// Retries run in fractions of a second through the same delay queues as in production.
const FAST_RETRIES: &str = "300ms,300ms,300ms";
const PATIENCE: Duration = Duration::from_secs(30);

/// Answers per request path: the n-th request to a path gets the n-th script entry (the last one
/// repeats), so one receiver (one certificate) plays several endpoints.
fn scripted(scripts: Vec<(&str, Vec<CannedResponse>)>) -> Responder {
    let scripts: HashMap<String, Vec<CannedResponse>> = scripts
        .into_iter()
        .map(|(path, answers)| (path.to_owned(), answers))
        .collect();
    let seen: Mutex<HashMap<String, usize>> = Mutex::new(HashMap::new());
    Arc::new(move |request, _| {
        let path = request
            .target
            .split('?')
            .next()
            .unwrap_or_default()
            .to_owned();
        let mut seen = seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = seen.entry(path.clone()).or_insert(0);
        let index = *count;
        *count += 1;
        scripts
            .get(&path)
            .and_then(|answers| answers.get(index).or(answers.last()))
            .cloned()
            .unwrap_or_else(|| CannedResponse::new(404, "no such test endpoint"))
    })
}

fn answer(status: u16, body: &str) -> CannedResponse {
    CannedResponse::new(status, body)
}

fn slow(status: u16, delay: Duration) -> CannedResponse {
    CannedResponse {
        delay,
        ..CannedResponse::new(status, "ok")
    }
}

/// An environment whose dispatchers trust `receiver`'s certificates and may reach 127.0.0.1 only.
async fn environment(label: &str, receiver: &TlsReceiver) -> anyhow::Result<TestEnvironment> {
    let mut env = TestEnvironment::new(label).await?;
    env.trust_receiver(receiver)?;
    env.set("FP__DISPATCHER__RETRY_SCHEDULE", FAST_RETRIES);
    Ok(env)
}

type AttemptSummary = (i64, Option<i64>, bool, Option<String>);

/// (attempt number, response code, final, error kind) of each entry, by attempt number.
fn attempts_of(entries: &[Value]) -> Vec<AttemptSummary> {
    let mut attempts: Vec<_> = entries
        .iter()
        .map(|entry| {
            (
                entry["attempt_number"].as_i64().unwrap_or(0),
                entry["response_code"].as_i64(),
                entry["final"].as_bool().unwrap_or(false),
                entry["error"]["kind"].as_str().map(str::to_owned),
            )
        })
        .collect();
    attempts.sort();
    attempts
}

fn has_final(entries: &[Value]) -> bool {
    entries.iter().any(|entry| entry["final"] == true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_through_the_broker_and_recorded_honestly() -> anyhow::Result<()> {
    let receiver = TlsReceiver::start_with_names(
        "127.0.0.1:0".parse()?,
        &["127.0.0.1", "rebinding.test"],
        scripted(vec![
            (
                "/flaky",
                vec![answer(500, "boom"), answer(500, "boom"), answer(200, "ok")],
            ),
            (
                "/hang",
                vec![slow(200, Duration::from_secs(5)), answer(200, "ok")],
            ),
            ("/gone", vec![answer(410, "gone")]),
            ("/blocked", vec![answer(200, "ok")]),
        ]),
    )
    .await?;
    // Where the redirect points: a second host that must never be contacted.
    let internal = TlsReceiver::start("127.0.0.2:0".parse()?, scripted(vec![])).await?;
    let port = receiver.address().port();
    let redirecting = TlsReceiver::start_with_names(
        "127.0.0.1:0".parse()?,
        &["127.0.0.1"],
        Arc::new({
            let location = internal.url("/latest/meta-data/");
            move |_, _| CannedResponse {
                headers: vec![("location".to_owned(), location.clone())],
                ..answer(302, "moved")
            }
        }),
    )
    .await?;

    let mut env = environment("retries", &receiver).await?;
    // Trust both receivers' authorities: the PEM file may hold several.
    let ca_path = env.dir.join("receiver-ca.pem");
    let mut pems = std::fs::read_to_string(&ca_path)?;
    redirecting.write_ca_pem(&env.dir.join("redirecting-ca.pem"))?;
    pems.push_str(&std::fs::read_to_string(
        env.dir.join("redirecting-ca.pem"),
    )?);
    std::fs::write(&ca_path, pems)?;
    env.set("FP__DISPATCHER__REQUEST_TIMEOUT_MS", "1000");
    let hosts_file = env.dir.join("hosts");
    std::fs::write(&hosts_file, "127.0.0.1 rebinding.test\n")?;
    env.set(
        "FP__DISPATCHER__HOSTS_FILE",
        hosts_file.display().to_string(),
    );
    let pipeline = Pipeline::start(&mut env, 1).await?;

    let flaky = pipeline.tenant(&env, "flaky").await?;
    flaky.configure(&receiver.url("/flaky"), None).await?;
    let hang = pipeline.tenant(&env, "hang").await?;
    hang.configure(&receiver.url("/hang"), None).await?;
    let gone = pipeline.tenant(&env, "gone").await?;
    gone.configure(&receiver.url("/gone"), None).await?;
    let redirect = pipeline.tenant(&env, "redirect").await?;
    redirect.configure(&redirecting.url("/hook"), None).await?;
    let blocked = pipeline.tenant(&env, "blocked").await?;
    blocked
        .configure(&format!("https://rebinding.test:{port}/blocked"), None)
        .await?;
    // After the save-time check passed, the name now points at a private address.
    std::fs::write(&hosts_file, "10.0.0.1 rebinding.test\n")?;

    for tenant in [&flaky, &hang, &gone, &redirect, &blocked] {
        tenant.submit("a delivery with a story", None).await?;
    }

    // Fails twice, then works: three attempts, one success, one delivery id, each attempt a row.
    let entries = flaky.logs_until(PATIENCE, has_final).await?;
    assert_eq!(
        attempts_of(&entries),
        vec![
            (1, Some(500), false, Some("http_status".into())),
            (2, Some(500), false, Some("http_status".into())),
            (3, Some(200), true, None),
        ]
    );
    let delivery_ids: HashSet<&str> = entries
        .iter()
        .filter_map(|e| e["delivery_id"].as_str())
        .collect();
    assert_eq!(delivery_ids.len(), 1, "{delivery_ids:?}");
    assert!(
        entries
            .iter()
            .filter(|entry| entry["final"] == false)
            .all(|entry| entry["next_retry_at"].is_string()),
        "every non-final attempt says when the next one comes: {entries:?}"
    );
    assert_eq!(receiver.requests_to("/flaky"), 3);

    // A receiver that hangs is cut at the timeout and tried again.
    let entries = hang.logs_until(PATIENCE, has_final).await?;
    assert_eq!(
        attempts_of(&entries),
        vec![
            (1, None, false, Some("timeout".into())),
            (2, Some(200), true, None)
        ]
    );

    // 410 ends the delivery at once.
    let entries = gone.logs_until(PATIENCE, has_final).await?;
    assert_eq!(
        attempts_of(&entries),
        vec![(1, Some(410), true, Some("http_status".into()))]
    );

    // A 302 to an internal address is recorded with its Location and not followed.
    let entries = redirect.logs_until(PATIENCE, has_final).await?;
    let first = entries
        .iter()
        .find(|entry| entry["attempt_number"] == 1)
        .context("first redirect attempt")?;
    assert_eq!(first["response_code"], 302);
    assert_eq!(first["error"]["kind"], "redirect");
    let message = first["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&internal.url("/latest/meta-data/")),
        "{message}"
    );

    // A name that now resolves to a private address: recorded as blocked, final, nothing sent; the
    // record names the kind of address, never the address, so a tenant cannot map internal names.
    let entries = blocked.logs_until(PATIENCE, has_final).await?;
    assert_eq!(
        attempts_of(&entries),
        vec![(1, None, true, Some("blocked".into()))]
    );
    let message = entries[0]["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("private") && !message.contains("10.0.0.1"),
        "{message}"
    );
    assert_eq!(receiver.requests_to("/blocked"), 0);

    // Past every retry: still no further attempts, and the internal host never saw a packet.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.requests_to("/gone"), 1);
    assert_eq!(receiver.requests_to("/flaky"), 3);
    assert_eq!(internal.connections(), 0);

    env.finish().await
}

/// Every delivery reached the receiver, and no attempt was logged twice or invented: per delivery,
/// rows never outnumber the requests that really arrived, and one row is a success.
/// Every request the receiver saw has a row in the log, and every row with an outcome was a real
/// request; rows without one (`interrupted`: the dispatcher died after recording that it was about
/// to send) are the only extra rows, and the only reason for a delivery to arrive twice. Returns
/// how many interrupted rows there are.
fn assert_every_delivery_logged(
    receiver: &TlsReceiver,
    entries: &[Value],
    deliveries: usize,
) -> usize {
    let mut requests: HashMap<String, usize> = HashMap::new();
    for request in receiver.requests() {
        let id = request
            .header("x-feedbackpulse-delivery")
            .unwrap_or_default()
            .to_owned();
        *requests.entry(id).or_default() += 1;
    }
    assert_eq!(
        requests.len(),
        deliveries,
        "distinct deliveries that arrived"
    );
    #[derive(Default)]
    struct Rows {
        logged: usize,
        succeeded: usize,
        interrupted: usize,
    }
    let mut rows: HashMap<&str, Rows> = HashMap::new();
    for entry in entries {
        let row = rows
            .entry(entry["delivery_id"].as_str().unwrap_or_default())
            .or_default();
        row.logged += 1;
        if entry["response_code"] == 200 {
            row.succeeded += 1;
        }
        if entry["error"]["kind"] == "interrupted" {
            row.interrupted += 1;
        }
    }
    assert_eq!(rows.len(), deliveries, "distinct deliveries logged");
    for (delivery, row) in &rows {
        let arrived = requests.get(*delivery).copied().unwrap_or(0);
        assert!(
            arrived <= row.logged,
            "{delivery}: {arrived} requests arrived, only {} rows logged",
            row.logged
        );
        assert!(
            row.logged - row.interrupted <= arrived,
            "{delivery}: {} rows with an outcome for {arrived} requests",
            row.logged - row.interrupted
        );
        assert!(
            arrived <= 1 || row.interrupted >= 1,
            "{delivery} arrived {arrived} times with no interrupted attempt logged"
        );
        assert!(
            row.succeeded >= 1,
            "{delivery}: no successful attempt logged"
        );
    }
    rows.values().map(|row| row.interrupted).sum()
}

fn distinct_successes(entries: &[Value]) -> usize {
    entries
        .iter()
        .filter(|entry| entry["response_code"] == 200)
        .filter_map(|entry| entry["delivery_id"].as_str())
        .collect::<HashSet<_>>()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_dispatcher_loses_nothing_and_two_dispatchers_share_the_work() -> anyhow::Result<()>
{
    let receiver = TlsReceiver::start(
        "127.0.0.1:0".parse()?,
        Arc::new(|_, _| slow(200, Duration::from_millis(500))),
    )
    .await?;
    let mut env = environment("crash", &receiver).await?;
    let mut pipeline = Pipeline::start(&mut env, 0).await?;
    let tenant = pipeline.tenant(&env, "crash").await?;
    tenant.configure(&receiver.url("/hook"), None).await?;

    // Every event is queued before the dispatcher starts, so the kill comes with deliveries in
    // flight however fast or slow the submissions were.
    const CRASH_EVENTS: usize = 30;
    for n in 0..CRASH_EVENTS {
        tenant.submit(&format!("feedback {n}"), None).await?;
    }
    pipeline.start_dispatcher(&mut env).await?;
    receiver.wait_for(4, PATIENCE).await?;
    env.kill("fp-dispatcher").await?;
    let crashed_at = receiver.requests().len();
    pipeline.start_dispatcher(&mut env).await?;
    let entries = tenant
        .logs_until(PATIENCE, |entries| {
            distinct_successes(entries) == CRASH_EVENTS
        })
        .await?;
    assert!(
        crashed_at < CRASH_EVENTS,
        "the kill came while deliveries were in flight"
    );
    let interrupted = assert_every_delivery_logged(&receiver, &entries, CRASH_EVENTS);
    // Requests were in flight when it died: their outcome was never recorded, yet they show.
    assert!(interrupted >= 1, "no interrupted attempt was logged");

    // Scale out: a second dispatcher joins; the next events are shared, and nothing is lost.
    let second = pipeline.start_dispatcher(&mut env).await?;
    let first = pipeline.dispatchers[1];
    let before = metric(first, "fp_dispatcher_attempts_total").await?;
    const SHARED_EVENTS: usize = 40;
    for n in 0..SHARED_EVENTS {
        tenant.submit(&format!("shared {n}"), None).await?;
    }
    let entries = tenant
        .logs_until(PATIENCE, |entries| {
            distinct_successes(entries) == CRASH_EVENTS + SHARED_EVENTS
        })
        .await?;
    assert_every_delivery_logged(&receiver, &entries, CRASH_EVENTS + SHARED_EVENTS);
    let by_first = metric(first, "fp_dispatcher_attempts_total").await? - before;
    let by_second = metric(second, "fp_dispatcher_attempts_total").await?;
    assert!(
        by_first > 0 && by_second > 0,
        "shared: {by_first} and {by_second}"
    );
    assert_eq!(
        by_first + by_second,
        SHARED_EVENTS as u64,
        "each event attempted once"
    );

    env.finish().await
}

/// A fresh event's first attempt reaches the log with its outcome while log-ingest is down: the
/// dispatcher writes the outcome over the pending row its claim stored, sends no attempt record
/// through the broker, and acks the event. The retry of a failed one goes to log-ingest as
/// records, which wait in its queue until it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_attempt_is_logged_by_the_dispatcher_and_a_retry_by_log_ingest()
-> anyhow::Result<()> {
    let receiver = TlsReceiver::start(
        "127.0.0.1:0".parse()?,
        scripted(vec![
            ("/ok", vec![answer(200, "ok")]),
            ("/flaky", vec![answer(500, "boom"), answer(200, "ok")]),
        ]),
    )
    .await?;
    let mut env = environment("first-attempt-outcomes", &receiver).await?;
    let pipeline = Pipeline::start(&mut env, 1).await?;
    env.kill("fp-log-ingest").await?;
    let broker = Broker::connect(&env.endpoints.broker_url, &env.namespace).await?;
    let attempts_queue = broker.names.attempts_queue.clone();
    let dispatcher = pipeline.dispatchers[0];

    let ok = pipeline.tenant(&env, "outcomes ok").await?;
    ok.configure(&receiver.url("/ok"), None).await?;
    const EVENTS: usize = 3;
    for n in 0..EVENTS {
        ok.submit(&format!("logged {n}"), None).await?;
    }
    let entries = ok
        .logs_until(PATIENCE, |entries| {
            entries.len() == EVENTS
                && entries
                    .iter()
                    .all(|entry| entry["response_code"].as_i64() == Some(200))
        })
        .await?;
    assert_eq!(
        attempts_of(&entries),
        vec![(1, Some(200), true, None); EVENTS]
    );
    // Counted once the statement answered, which may be just after the rows are readable.
    metric_reaches(
        dispatcher,
        "fp_dispatcher_outcomes_logged_total",
        EVENTS as u64,
        PATIENCE,
    )
    .await?;
    metric_reaches(
        dispatcher,
        "fp_dispatcher_messages_handled_total",
        EVENTS as u64,
        PATIENCE,
    )
    .await?;
    assert_eq!(
        broker.queue_depth(&attempts_queue).await?,
        0,
        "no record sent"
    );

    // A failed first attempt is logged by the dispatcher too; its retry's pending record and
    // outcome wait for log-ingest.
    let flaky = pipeline.tenant(&env, "outcomes flaky").await?;
    flaky.configure(&receiver.url("/flaky"), None).await?;
    flaky.submit("retried", None).await?;
    receiver.wait_for(EVENTS + 2, PATIENCE).await?;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while broker.queue_depth(&attempts_queue).await? < 2 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the retry's records never reached log-ingest's queue"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let entries = flaky
        .logs_until(PATIENCE, |entries| !entries.is_empty())
        .await?;
    assert_eq!(
        attempts_of(&entries),
        vec![(1, Some(500), false, Some("http_status".to_owned()))]
    );
    pipeline.restart_log_ingest(&mut env).await?;
    let entries = flaky.logs_until(PATIENCE, has_final).await?;
    assert_eq!(
        attempts_of(&entries),
        vec![
            (1, Some(500), false, Some("http_status".to_owned())),
            (2, Some(200), true, None)
        ]
    );
    metric_reaches(
        dispatcher,
        "fp_dispatcher_outcomes_logged_total",
        EVENTS as u64 + 1,
        PATIENCE,
    )
    .await?;

    broker.close().await;
    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_does_not_hold_up_other_tenants() -> anyhow::Result<()> {
    // The slow endpoint answers only after 10 s; the fast tenant's deliveries must not wait for it.
    let receiver = TlsReceiver::start(
        "127.0.0.1:0".parse()?,
        scripted(vec![
            ("/slow", vec![slow(200, Duration::from_secs(10))]),
            ("/fast", vec![answer(200, "ok")]),
        ]),
    )
    .await?;
    let mut env = environment("slow", &receiver).await?;
    env.set("FP__DISPATCHER__PREFETCH", "16");
    env.set("FP__DISPATCHER__MAX_IN_FLIGHT_PER_ENDPOINT", "4");
    env.set("FP__DISPATCHER__REQUEST_TIMEOUT_MS", "12000");
    let pipeline = Pipeline::start(&mut env, 1).await?;
    let slow_tenant = pipeline.tenant(&env, "slow").await?;
    slow_tenant.configure(&receiver.url("/slow"), None).await?;
    let fast_tenant = pipeline.tenant(&env, "fast").await?;
    fast_tenant.configure(&receiver.url("/fast"), None).await?;

    // More slow events than the whole prefetch window, queued ahead of the fast ones.
    for n in 0..40 {
        slow_tenant.submit(&format!("slow {n}"), None).await?;
    }
    for n in 0..10 {
        fast_tenant.submit(&format!("fast {n}"), None).await?;
    }
    // All fast deliveries arrive while the first slow answers are still pending (10 s).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while receiver.requests_to("/fast") < 10 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(receiver.requests_to("/fast"), 10);
    assert!(
        receiver.requests_to("/slow") <= 4,
        "the slow endpoint held at most its cap of in-flight deliveries"
    );
    assert!(metric(pipeline.dispatchers[0], "fp_dispatcher_deferred_total").await? > 0);

    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_event_is_dead_lettered_and_the_dispatcher_carries_on() -> anyhow::Result<()>
{
    let receiver = TlsReceiver::start(
        "127.0.0.1:0".parse()?,
        scripted(vec![("/hook", vec![answer(200, "ok")])]),
    )
    .await?;
    let mut env = environment("poison", &receiver).await?;
    let pipeline = Pipeline::start(&mut env, 1).await?;
    let tenant = pipeline.tenant(&env, "poison").await?;
    tenant.configure(&receiver.url("/hook"), None).await?;

    let broker = Broker::connect(&broker_url(), &env.namespace).await?;
    let publisher = broker.publisher();
    publisher
        .publish(&OutgoingMessage {
            exchange: &broker.names.events_exchange,
            routing_key: "submission.created",
            message_id: "poison-1",
            parent: None,
            payload: b"\x08\x96\x01 definitely not an event",
            headers: &[],
            expiration: None,
        })
        .await?;
    let mut dead_letters = broker.consume(&broker.names.dead_letter_queue, "test-dead-letters", 10);
    let dead = tokio::time::timeout(PATIENCE, dead_letters.next())
        .await
        .context("no dead letter")?
        .context("consumer ended")?;
    let reason =
        fp_broker::header_text(&dead, fp_broker::DEAD_LETTER_REASON_HEADER).unwrap_or_default();
    assert!(!reason.is_empty());
    assert_eq!(
        fp_broker::header_text(&dead, fp_broker::DEAD_LETTER_SOURCE_HEADER).as_deref(),
        Some(broker.names.dispatcher_queue.as_str())
    );
    fp_broker::ack(&dead).await?;

    tenant.submit("after the poison", None).await?;
    receiver.wait_for(1, PATIENCE).await?;
    broker.close().await;
    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_for_too_long_is_disabled_until_saved_again() -> anyhow::Result<()> {
    let receiver = TlsReceiver::start(
        "127.0.0.1:0".parse()?,
        scripted(vec![("/down", vec![answer(503, "down for maintenance")])]),
    )
    .await?;
    let mut env = environment("health", &receiver).await?;
    // The production default is 5 days; the same code path runs here in seconds.
    env.set("FP__API__DISABLE_FAILING_ENDPOINTS_AFTER", "2s");
    env.set("FP__DISPATCHER__HEALTH_REPORT_INTERVAL_MS", "200");
    env.set("FP__DISPATCHER__CONFIG_CACHE_TTL_MS", "200");
    let pipeline = Pipeline::start(&mut env, 1).await?;
    let tenant = pipeline.tenant(&env, "down").await?;
    let url = receiver.url("/down");
    tenant.configure(&url, None).await?;

    let deadline = tokio::time::Instant::now() + PATIENCE;
    let disabled = loop {
        tenant.submit("is anyone there?", None).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_, config) = tenant
            .send(reqwest::Method::GET, "/api/v2/webhooks/config", None)
            .await?;
        if config["enabled"] == false || tokio::time::Instant::now() > deadline {
            break config;
        }
    };
    assert_eq!(disabled["enabled"], false, "{disabled}");
    let reason = disabled["disabled_reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("every delivery failed since"),
        "{disabled}"
    );
    assert!(disabled["disabled_at"].is_string() && disabled["failing_since"].is_string());

    // Disabled means no more deliveries: once the dispatcher's cache has caught up, new events
    // are not sent.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = receiver.requests_to("/down");
    tenant.submit("while disabled", None).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.requests_to("/down"), before);

    // Saving the config again re-enables it.
    let saved = tenant.configure(&url, None).await?;
    assert_eq!(saved["enabled"], true);
    let (_, config) = tenant
        .send(reqwest::Method::GET, "/api/v2/webhooks/config", None)
        .await?;
    assert_eq!(config["enabled"], true, "{config}");
    assert!(config["disabled_reason"].is_null() && config["failing_since"].is_null());

    env.finish().await
}

/// Publishes `copies` copies of `job` at once as a deferral parks it: to the retry queue (as its
/// delay queue hands it on), marked `x-fp-deferred`.
async fn publish_parked_copies(
    broker: &Broker,
    job: &fp_contracts::DeliveryJob,
    copies: usize,
) -> anyhow::Result<()> {
    let payload = fp_contracts::encode_job(job);
    let message_id = format!("{}/{}", job.delivery_id, job.attempt_number);
    let parked = OutgoingMessage {
        exchange: "",
        routing_key: &broker.names.retry_queue,
        message_id: &message_id,
        parent: None,
        payload: &payload,
        headers: &[("x-fp-deferred", "1")],
        expiration: None,
    };
    let publisher = broker.publisher();
    futures_util::future::try_join_all((0..copies).map(|_| publisher.publish(&parked))).await?;
    Ok(())
}

/// A deferral parks a copy of its job and then acks its input. When the parking's confirm is lost
/// with the connection, the input comes back too and is sent, and the parked copy returns later:
/// the cluster test's partition made 35 such twins. A parked copy (`x-fp-deferred`) therefore
/// asks the log first, and one whose attempt was made already is skipped, not sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_copy_of_an_attempt_already_made_is_not_sent_again() -> anyhow::Result<()> {
    let receiver = TlsReceiver::start(
        "127.0.0.1:0".parse()?,
        scripted(vec![("/hook", vec![answer(200, "ok")])]),
    )
    .await?;
    let mut env = environment("parked-twin", &receiver).await?;
    let mut pipeline = Pipeline::start(&mut env, 1).await?;
    let tenant = pipeline.tenant(&env, "parked-twin").await?;
    let url = receiver.url("/hook");
    tenant.configure(&url, None).await?;
    let events = EventsQueue::bind(&env).await?;
    let mut published = events.consume("parked-twin-test").await?;

    tenant.submit("sent once", None).await?;
    let copy = tokio::time::timeout(PATIENCE, published.next())
        .await
        .context("no event published")?
        .context("consumer ended")??;
    let event = fp_contracts::decode_event(&copy.data)?;
    tenant
        .logs_until(PATIENCE, |entries| distinct_successes(entries) == 1)
        .await?;

    // The twin a lost parking confirm leaves: the same first attempt, parked, back from the delay.
    let job = fp_contracts::DeliveryJob {
        delivery_id: fp_domain::DeliveryId::for_event_and_endpoint(event.id, &url),
        content: fp_contracts::JobContent::Event(event),
        attempt_number: 1,
        manual: false,
    };
    // Another dispatcher than the one that sent it (one that remembers its attempts skips it
    // anyway): the first is replaced.
    env.kill("fp-dispatcher").await?;
    let dispatcher = pipeline.start_dispatcher(&mut env).await?;
    let skipped_before = metric(dispatcher, "fp_dispatcher_repeats_skipped_total").await?;
    let broker = Broker::connect(&broker_url(), &env.namespace).await?;
    publish_parked_copies(&broker, &job, 1).await?;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while metric(dispatcher, "fp_dispatcher_repeats_skipped_total").await? == skipped_before {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the parked copy was not skipped (requests: {})",
            receiver.requests_to("/hook")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(receiver.requests_to("/hook"), 1, "sent once");

    broker.close().await;
    events.close().await?;
    env.finish().await
}

/// The twins of a parked first attempt (the parked copy, and the input handed out again when the
/// parking's confirm was lost) can reach two dispatchers at once, each asking the log before the
/// other's pending record is in it: the cluster test's partition sent such twins twice. Each copy
/// takes the send of its attempt with its pending row, in one statement: one sends, the other
/// finds the send taken and waits for its outcome, then is skipped. Both twins are published here
/// as parked copies, which ask the log at once (an input handed out again asks after a 5 s
/// allowance: in the cluster test it met a parked copy whose delay ended at that moment). The
/// claim's row is held locked until both wait at the take, so that they meet there for certain:
/// left to the machine, a twin a few milliseconds late finds the other's pending row in the log
/// and never tries the take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twins_of_a_parked_attempt_at_two_dispatchers_at_once_send_it_once() -> anyhow::Result<()> {
    use diesel_async::SimpleAsyncConnection;

    let receiver = TlsReceiver::start(
        "127.0.0.1:0".parse()?,
        // Slow, so that without the take both twins would be out at the same time.
        Arc::new(|_, _| slow(200, Duration::from_secs(1))),
    )
    .await?;
    let mut env = environment("parked-twins", &receiver).await?;
    let pipeline = Pipeline::start(&mut env, 2).await?;
    let tenant = pipeline.tenant(&env, "parked-twins").await?;
    let url = receiver.url("/hook");
    tenant.configure(&url, None).await?;
    let tenant_id: uuid::Uuid = tenant.tenant_id.parse()?;

    // The first attempt as a dispatcher parks it at the endpoint's cap: claimed, nothing sent.
    let event = fp_contracts::Event {
        id: uuid::Uuid::now_v7(),
        tenant_id,
        occurred_at: chrono::Utc::now(),
        change: fp_contracts::Change::WebhookTest,
    };
    let job = fp_contracts::DeliveryJob {
        delivery_id: fp_domain::DeliveryId::for_event_and_endpoint(event.id, &url),
        content: fp_contracts::JobContent::Event(event),
        attempt_number: 1,
        manual: false,
    };
    let mut conn = fp_store::connect(&env.database_url).await?;
    let parked = fp_store::inbound_events::claim_first_attempts(
        &mut conn,
        &[fp_store::inbound_events::FirstAttemptClaim {
            delivery_id: job.delivery_id.0,
            pending: None,
        }],
        chrono::Utc::now(),
        &mut fp_store::partitions::CoveredDay::default(),
    )
    .await?;
    assert_eq!(parked.len(), 1, "parked");

    let counters = async |name: &str| -> anyhow::Result<Vec<u64>> {
        let mut values = Vec::new();
        for dispatcher in &pipeline.dispatchers {
            values.push(metric(*dispatcher, name).await?);
        }
        Ok(values)
    };
    let handled_before = counters("fp_dispatcher_messages_handled_total").await?;
    let mut claim_lock = fp_store::connect(&env.database_url).await?;
    claim_lock
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM delivery_claims WHERE delivery_id = '{}' FOR UPDATE",
            job.delivery_id.0
        ))
        .await?;
    // Both twins back to back: the retry queue hands them out round robin, one to each dispatcher.
    let broker = Broker::connect(&broker_url(), &env.namespace).await?;
    publish_parked_copies(&broker, &job, 2).await?;
    // Each has asked the log, found nothing, and waits to take the send.
    fp_testkit::pipeline::lock_waiters_reach(&mut conn, 2).await?;
    claim_lock.batch_execute("COMMIT").await?;

    let deadline = tokio::time::Instant::now() + PATIENCE;
    let handled = loop {
        let handled = counters("fp_dispatcher_messages_handled_total").await?;
        let total: u64 = handled.iter().sum::<u64>() - handled_before.iter().sum::<u64>();
        if total == 2 {
            break handled;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the twins were not both handled (handled {total}, requests {})",
            receiver.requests_to("/hook")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        handled
            .iter()
            .zip(&handled_before)
            .all(|(now, before)| now - before == 1),
        "each dispatcher got one twin: {handled_before:?} then {handled:?}"
    );
    assert_eq!(receiver.requests_to("/hook"), 1, "sent once");
    let held: u64 = counters("fp_dispatcher_twin_sends_held_total")
        .await?
        .iter()
        .sum();
    let skipped: u64 = counters("fp_dispatcher_repeats_skipped_total")
        .await?
        .iter()
        .sum();
    assert_eq!(
        (held, skipped),
        (1, 1),
        "the twin waited for the outcome and was skipped"
    );
    let entries = tenant
        .logs_until(PATIENCE, |entries| distinct_successes(entries) == 1)
        .await?;
    assert_eq!(
        attempts_of(&entries),
        [(1, Some(200), true, None)],
        "the log shows the one attempt made"
    );

    broker.close().await;
    env.finish().await
}
