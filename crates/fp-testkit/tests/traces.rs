//! OpenTelemetry traces on the real services: one trace per event, from the caller's request to
//! log-ingest's insert, exported over both OTLP protocols to a receiver in the test; and deliveries
//! that do not wait for a collector that is down.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use fp_testkit::environment::{TestEnvironment, free_local_address};
use fp_testkit::otlp::{OtlpProtocol, OtlpReceiver, ReceivedSpan};
use fp_testkit::pipeline::{Pipeline, metric};
use fp_testkit::receiver::{CannedResponse, TlsReceiver, always_ok};
use serde_json::json;

const SECRET: &str = "whsec-traces-test-3f9a1c";
/// Spans the collector did not take (`fp_telemetry::tracing_setup::SPANS_DROPPED_METRIC`).
const SPANS_DROPPED_METRIC: &str = "fp_trace_spans_dropped_total";
/// The endpoint's path and query: where Slack and Discord keep their tokens.
const HOOK_PATH: &str = "/hooks/T0TRACEPATH/B0TOKEN9d2e?token=q7TRACEQUERY";
const FEEDBACK: &str = "Tracing feedback text 5be81";
const CUSTOMER: &str = "Customer Tracey Name";
/// The caller's vendor trace state, which must travel with its trace through every hop.
const CALLER_TRACE_STATE: &str = "fpcaller=state-7c1e";

fn random_hex(bytes: usize) -> String {
    uuid::Uuid::new_v4().simple().to_string()[..bytes * 2].to_owned()
}

fn in_trace<'a>(spans: &'a [ReceivedSpan], trace_id: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|span| span.trace_id == trace_id)
        .collect()
}

fn client_spans<'a>(spans: &[&'a ReceivedSpan]) -> Vec<&'a ReceivedSpan> {
    dispatcher_spans(spans, "POST")
}

/// Everything the trace of one event must hold once it is complete: the api's request, both
/// attempts (a 500, then the retry's 200), attempt 1's rows written by the dispatcher, an insert
/// by log-ingest, and every parent (a parent ends, and is exported, after its children).
fn complete(spans: &[ReceivedSpan], trace_id: &str, caller_span_id: &str) -> bool {
    let spans = in_trace(spans, trace_id);
    let ids: HashSet<&str> = spans.iter().map(|span| span.span_id.as_str()).collect();
    if !spans.iter().all(|span| {
        span.parent_span_id == caller_span_id || ids.contains(span.parent_span_id.as_str())
    }) {
        return false;
    }
    let statuses: HashSet<&str> = client_spans(&spans)
        .iter()
        .filter_map(|span| span.attribute("http.response.status_code"))
        .collect();
    let inserts = spans
        .iter()
        .filter(|span| span.service == "fp-log-ingest")
        .count();
    spans.iter().any(|span| span.service == "fp-api")
        && statuses.contains("500")
        && statuses.contains("200")
        // Attempt 2's records reached log-ingest: its pending record and its outcome. Attempt 1
        // needs none: its pending row went into the log with its claim, its outcome over it.
        && inserts >= 1
        && dispatcher_spans(&spans, "INSERT delivery_claims").len() == 1
        && dispatcher_spans(&spans, "UPDATE delivery_attempts").len() == 1
        && dispatcher_spans(&spans, "create fp").len() >= 2
        // The records' batches (each the child of its first record) and the retry job.
        && dispatcher_spans(&spans, "publish fp").len() >= 3
}

fn dispatcher_spans<'a>(spans: &[&'a ReceivedSpan], name_prefix: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .copied()
        .filter(|span| span.service == "fp-dispatcher" && span.name.starts_with(name_prefix))
        .collect()
}

async fn one_trace_per_event(protocol: OtlpProtocol) -> anyhow::Result<()> {
    let collector = OtlpReceiver::start(protocol).await?;
    let mut env = TestEnvironment::new(&format!(
        "traces-{}",
        protocol.env_value().replace('/', "-")
    ))
    .await?;
    // The first attempt fails with a 500, the retry succeeds.
    let receiver = TlsReceiver::start(
        "127.0.0.1:0".parse()?,
        Arc::new(|_, index| {
            if index == 0 {
                CannedResponse::new(500, "try again")
            } else {
                CannedResponse::new(200, "ok")
            }
        }),
    )
    .await?;
    env.trust_receiver(&receiver)?;
    env.set("FP__DISPATCHER__RETRY_SCHEDULE", "300ms");
    for (key, value) in collector.env() {
        env.set(key, value);
    }
    let pipeline = Pipeline::start(&mut env, 1).await?;
    let api = pipeline.tenant(&env, "Traced GmbH").await?;
    api.configure_events(
        &receiver.url(HOOK_PATH),
        &["submission.created"],
        Some(SECRET),
    )
    .await?;

    // The caller's own trace.
    let trace_id = random_hex(16);
    let caller_span_id = random_hex(8);
    let response = api
        .http
        .post(format!("{}/api/v2/submissions", api.base))
        .bearer_auth(&api.key)
        .header("traceparent", format!("00-{trace_id}-{caller_span_id}-01"))
        .header("tracestate", CALLER_TRACE_STATE)
        .header("content-type", "application/json")
        .body(
            json!({"campaign_id": 1, "star_rating": 4, "text_feedback": FEEDBACK, "customer_name": CUSTOMER})
                .to_string(),
        )
        .send()
        .await?;
    anyhow::ensure!(response.status().as_u16() == 201, "submission refused");

    receiver.wait_for(2, Duration::from_secs(30)).await?;
    let all = collector
        .spans_until(Duration::from_secs(30), |spans| {
            complete(spans, &trace_id, &caller_span_id)
        })
        .await;
    let spans = in_trace(&all, &trace_id);
    let summary = || {
        spans
            .iter()
            .map(|span| {
                format!(
                    "{} {} {}<-{}",
                    span.service, span.name, span.span_id, span.parent_span_id
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        complete(&all, &trace_id, &caller_span_id),
        "incomplete trace:\n{}",
        summary()
    );
    eprintln!("trace {trace_id}:\n{}", summary());

    // Every service's spans carry the caller's trace id.
    let services: HashSet<&str> = spans.iter().map(|span| span.service.as_str()).collect();
    for service in ["fp-api", "fp-dispatcher", "fp-log-ingest"] {
        assert!(
            services.contains(service),
            "{service} missing:\n{}",
            summary()
        );
    }

    // The caller's trace state went along: through the outbox row, the broker, the attempt record.
    for span in &spans {
        assert_eq!(
            span.trace_state, CALLER_TRACE_STATE,
            "{} `{}` lost the caller's trace state",
            span.service, span.name
        );
    }

    // One tree: the api's request span is the only child of the caller's span, and every other
    // span's parent is a span of the same trace; log-ingest's insert hangs under the api request.
    let by_id: HashMap<&str, &ReceivedSpan> = spans
        .iter()
        .map(|span| (span.span_id.as_str(), *span))
        .collect();
    let roots: Vec<&&ReceivedSpan> = spans
        .iter()
        .filter(|span| span.parent_span_id == caller_span_id)
        .collect();
    assert_eq!(roots.len(), 1, "one child of the caller:\n{}", summary());
    let root = roots[0];
    assert_eq!(root.service, "fp-api");
    assert_eq!(root.name, "POST /api/v2/submissions");
    assert_eq!(root.attribute("http.request.method"), Some("POST"));
    assert_eq!(root.attribute("http.route"), Some("/api/v2/submissions"));
    assert_eq!(root.attribute("http.response.status_code"), Some("201"));
    for span in &spans {
        if span.span_id != root.span_id {
            assert!(
                by_id.contains_key(span.parent_span_id.as_str()),
                "{} {} has a parent outside the trace:\n{}",
                span.service,
                span.name,
                summary()
            );
        }
    }
    let ancestors_reach_root = |span: &ReceivedSpan| {
        let mut current = span;
        for _ in 0..spans.len() {
            if current.span_id == root.span_id {
                return true;
            }
            match by_id.get(current.parent_span_id.as_str()) {
                Some(parent) => current = parent,
                None => return false,
            }
        }
        false
    };
    let insert = spans
        .iter()
        .find(|span| span.service == "fp-log-ingest")
        .context("an insert span")?;
    assert_eq!(insert.name, "INSERT delivery_attempts");
    assert!(
        ancestors_reach_root(insert),
        "insert not under the request:\n{}",
        summary()
    );
    // The insert is linked to the records it stored, which were published in this trace.
    assert!(
        insert
            .links
            .iter()
            .any(|(linked_trace, linked_span)| linked_trace == &trace_id
                && by_id
                    .get(linked_span.as_str())
                    .is_some_and(|span| span.service == "fp-dispatcher")),
        "the insert links the records it stored:\n{}",
        summary()
    );

    // Both attempts, the failed one and its retry, are HTTP client spans of this trace.
    let clients = client_spans(&spans);
    let mut attempts: Vec<(String, String)> = clients
        .iter()
        .map(|span| {
            (
                span.attribute("fp.attempt").unwrap_or_default().to_owned(),
                span.attribute("http.response.status_code")
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    attempts.sort();
    assert_eq!(
        attempts,
        [
            ("1".to_owned(), "500".to_owned()),
            ("2".to_owned(), "200".to_owned())
        ]
    );
    for span in &clients {
        assert!(ancestors_reach_root(span));
        assert_eq!(span.attribute("http.request.method"), Some("POST"));
        assert_eq!(span.attribute("server.address"), Some("127.0.0.1"));
    }
    let failed = clients
        .iter()
        .find(|span| span.attribute("fp.attempt") == Some("1"))
        .context("attempt 1")?;
    assert_eq!(failed.attribute("error.type"), Some("500"));
    // The dispatcher's consumer spans carry the event's ids and the outcome.
    let outcomes: HashSet<&str> = spans
        .iter()
        .filter(|span| span.service == "fp-dispatcher" && span.name.starts_with("process"))
        .filter_map(|span| {
            assert_eq!(span.attribute("fp.tenant_id"), Some(api.tenant_id.as_str()));
            assert_eq!(span.attribute("fp.event_type"), Some("submission.created"));
            assert_eq!(span.attribute("fp.endpoint_format"), Some("custom"));
            assert!(span.attribute("fp.event_id").is_some());
            assert!(span.attribute("fp.delivery_id").is_some());
            span.attribute("fp.outcome")
        })
        .collect();
    assert_eq!(outcomes, HashSet::from(["retry_scheduled", "delivered"]));

    // A manual redelivery, asked for in a request of its own trace, joins the event's trace and
    // is linked to that request.
    let entries = api
        .logs_until(Duration::from_secs(30), |entries| entries.len() >= 2)
        .await?;
    let entry_id = entries
        .first()
        .and_then(|entry| entry["id"].as_str())
        .context("a log entry")?
        .to_owned();
    let (status, queued) = api
        .send(
            reqwest::Method::POST,
            &format!("/api/v2/webhooks/logs/{entry_id}/redeliver"),
            None,
        )
        .await?;
    assert_eq!(status, 202, "{queued}");
    receiver.wait_for(3, Duration::from_secs(30)).await?;
    // The manual attempt's consumer span, and the api's span that queued it.
    let manual_process = |spans: &[ReceivedSpan]| {
        let spans = in_trace(spans, &trace_id);
        spans.iter().any(|span| {
            span.name.starts_with("process") && span.attribute("fp.manual") == Some("true")
        }) && spans
            .iter()
            .any(|span| span.service == "fp-api" && span.name == "redeliver")
    };
    let all = collector
        .spans_until(Duration::from_secs(30), |spans| manual_process(spans))
        .await;
    assert!(
        manual_process(&all),
        "the manual attempt is in the event's trace"
    );
    let redeliver = in_trace(&all, &trace_id)
        .into_iter()
        .find(|span| span.service == "fp-api" && span.name == "redeliver")
        .context("the api's redeliver span in the event's trace")?;
    let (linked_trace, linked_span) = redeliver.links.first().context("a link")?;
    let request = all
        .iter()
        .find(|span| &span.trace_id == linked_trace && &span.span_id == linked_span)
        .context("the linked request span")?;
    assert_ne!(linked_trace, &trace_id);
    assert_eq!(request.name, "POST /api/v2/webhooks/logs/{id}/redeliver");
    // The attempt row kept the trace state too, so the redelivery carries it on.
    assert_eq!(redeliver.trace_state, CALLER_TRACE_STATE);
    let manual_clients = client_spans(&in_trace(&all, &trace_id)).len();
    assert_eq!(
        manual_clients, 3,
        "two automatic attempts and the manual one"
    );

    // Nothing secret anywhere, in any span of any trace.
    let path_parts = ["T0TRACEPATH", "B0TOKEN9d2e", "q7TRACEQUERY", "/hooks/"];
    for span in &all {
        for text in span.texts() {
            for forbidden in [SECRET, FEEDBACK, CUSTOMER, api.key.as_str()]
                .into_iter()
                .chain(path_parts)
            {
                assert!(
                    !text.contains(forbidden),
                    "{} span {} carries `{forbidden}` in `{text}`",
                    span.service,
                    span.name
                );
            }
            assert!(!text.contains("sha256="), "a signature in `{text}`");
        }
    }
    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_per_event_over_grpc() -> anyhow::Result<()> {
    one_trace_per_event(OtlpProtocol::Grpc).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_per_event_over_http_protobuf() -> anyhow::Result<()> {
    one_trace_per_event(OtlpProtocol::HttpProtobuf).await
}

/// A collector that is down (nothing listens on its port) holds up no delivery: every event is
/// delivered within the time the other end-to-end tests allow, and the dropped spans are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_do_not_wait_for_a_collector_that_is_down() -> anyhow::Result<()> {
    const EVENTS: usize = 20;
    for protocol in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
        let closed = free_local_address()?;
        let mut env = TestEnvironment::new("traces-down").await?;
        let receiver = TlsReceiver::start("127.0.0.1:0".parse()?, always_ok()).await?;
        env.trust_receiver(&receiver)?;
        env.set("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{closed}"));
        env.set("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.env_value());
        env.set("OTEL_BSP_SCHEDULE_DELAY", "100");
        let pipeline = Pipeline::start(&mut env, 1).await?;
        let api = pipeline.tenant(&env, "Collector Down AG").await?;
        api.configure(&receiver.url("/hook"), None).await?;
        let started = Instant::now();
        for index in 0..EVENTS {
            api.submit(&format!("feedback {index}"), None).await?;
        }
        receiver
            .wait_for(EVENTS, Duration::from_secs(30))
            .await
            .with_context(|| format!("collector down, {}", protocol.env_value()))?;
        let took = started.elapsed();
        // All of it is in the log too: log-ingest did not wait either.
        let entries = api
            .logs_until(Duration::from_secs(30), |entries| {
                entries
                    .iter()
                    .filter(|entry| entry["response_code"] == 200)
                    .count()
                    >= EVENTS
            })
            .await?;
        let logged = entries
            .iter()
            .filter(|entry| entry["response_code"] == 200)
            .count();
        assert_eq!(logged, EVENTS, "{}", protocol.env_value());
        // The spans that could not go are counted where an operator sees them.
        let mut dropped = 0;
        for _ in 0..150 {
            dropped = metric(pipeline.dispatchers[0], SPANS_DROPPED_METRIC).await?;
            if dropped > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            dropped > 0,
            "{}: the dispatcher's /metrics counts no dropped span",
            protocol.env_value()
        );
        eprintln!(
            "collector down ({}): {EVENTS} events delivered in {took:?}",
            protocol.env_value()
        );
        env.finish().await?;
    }
    Ok(())
}
