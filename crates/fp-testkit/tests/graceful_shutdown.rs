//! SIGTERM, as an orchestrator sends it, stops every service cleanly: it takes no new work,
//! finishes what is in flight within the drain timeout, exits 0 and logs no error. Deliveries in
//! flight when the dispatcher is told to stop complete and are logged once, not interrupted. The
//! api and the dashboard keep idle connections open longer than a proxy in front does, and close
//! them at once on SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use fp_broker::Broker;
use fp_testkit::environment::TestEnvironment;
use fp_testkit::pipeline::{Pipeline, start_api, start_dashboard};
use fp_testkit::receiver::{CannedResponse, TlsReceiver};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Below `lifecycle.drain_timeout_ms` (20 s): a clean stop must come within it.
const STOP_LIMIT: Duration = Duration::from_secs(18);
/// How many in-flight inputs the dispatcher's drain names in a report.
const DRAIN_INPUTS_NAMED: usize = 5;
const PATIENCE: Duration = Duration::from_secs(60);
/// Well inside the 10 s the receiver takes to answer, so the drain lasts longer.
const CANCEL_LIMIT: Duration = Duration::from_secs(5);
/// Submitted while the dispatcher drains.
const LATE_EVENTS: u32 = 3;

fn assert_clean_exit(
    name: &str,
    status: std::process::ExitStatus,
    log: &str,
) -> anyhow::Result<()> {
    ensure!(
        status.success(),
        "{name} exited with {status}; its log:\n{log}"
    );
    let errors: Vec<&str> = log
        .lines()
        .filter(|line| line.contains(" ERROR "))
        .collect();
    ensure!(
        errors.is_empty(),
        "{name} logged errors while stopping: {errors:#?}"
    );
    ensure!(
        log.lines().any(|line| line.contains("stopped")),
        "{name} did not say it stopped; its log:\n{log}"
    );
    Ok(())
}

/// Waits up to `CANCEL_LIMIT` for a line containing `text` in the log at `path`.
async fn wait_for_line(path: &Path, text: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + CANCEL_LIMIT;
    while !tokio::fs::read_to_string(path).await?.contains(text) {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no `{text}` in {} within {CANCEL_LIMIT:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_work_and_exits_cleanly() -> anyhow::Result<()> {
    // Slow enough that the signal lands while deliveries are in flight, and that the drain says
    // what it waits for (every 5 s) before they are answered.
    let receiver = TlsReceiver::start(
        "127.0.0.1:0".parse()?,
        Arc::new(|_, _| CannedResponse {
            delay: Duration::from_millis(10_000),
            ..CannedResponse::new(200, "ok")
        }),
    )
    .await?;
    let mut env = TestEnvironment::new("drain").await?;
    env.trust_receiver(&receiver)?;
    let pipeline = Pipeline::start(&mut env, 1).await?;
    start_dashboard(&mut env, pipeline.api).await?;
    let tenant = pipeline.tenant(&env, "drain").await?;
    tenant.configure(&receiver.url("/hook"), None).await?;

    const EVENTS: usize = 6;
    for n in 0..EVENTS {
        tenant.submit(&format!("drain {n}"), None).await?;
    }
    // Every request has reached the receiver, none has been answered yet.
    receiver.wait_for(EVENTS, PATIENCE).await?;
    // A stopping dispatcher cancels its consumers at once, so the broker does not refill its
    // prefetch while it drains: events submitted during the drain (which the deliveries,
    // answered 10 s after they reached the receiver, hold open) stay ready in the queue for the
    // other dispatchers, instead of going to this one to wait for its channel to close.
    let broker = Broker::connect(&env.endpoints.broker_url, &env.namespace).await?;
    let queue = broker.names.dispatcher_queue.clone();
    let (submitter, watcher, queue_name) = (&tenant, &broker, queue.as_str());
    let late_events_wait = move |log_path: PathBuf| async move {
        wait_for_line(&log_path, "consumers cancelled").await?;
        for n in 0..LATE_EVENTS {
            submitter.submit(&format!("late {n}"), None).await?;
        }
        let deadline = tokio::time::Instant::now() + CANCEL_LIMIT;
        loop {
            let ready = watcher.queue_depth(queue_name).await?;
            if ready == LATE_EVENTS {
                return Ok(());
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "{ready} of the {LATE_EVENTS} events submitted during the drain wait in the queue"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (status, log, ()) = env
        .terminate_while("fp-dispatcher", STOP_LIMIT, late_events_wait)
        .await?;
    assert_clean_exit("fp-dispatcher", status, &log)?;
    // An operator whose stop takes long is told which inputs it waits for, and when it is done.
    let waiting = log
        .lines()
        .find(|line| line.contains("still draining in-flight deliveries"))
        .with_context(|| format!("the drain did not say what it waited for; its log:\n{log}"))?;
    // All six are in flight for the first report unless the machine held the signal up for
    // seconds; the report names at most five.
    let still_in_flight: usize = waiting
        .split("still_in_flight=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|count| count.parse().ok())
        .with_context(|| format!("no count in the drain's report: {waiting}"))?;
    ensure!(
        (1..=EVENTS).contains(&still_in_flight)
            && waiting.matches("event ").count() == still_in_flight.min(DRAIN_INPUTS_NAMED),
        "the drain's report does not name its oldest events: {waiting}"
    );
    ensure!(
        log.lines()
            .any(|line| line.contains("in-flight deliveries drained")),
        "the drain did not say it was done; its log:\n{log}"
    );

    // The deliveries it finished while draining are logged as delivered, once each, and no
    // other dispatcher ran: nothing was handed back and attempted again.
    let entries = tenant
        .logs_until(PATIENCE, |entries| entries.len() >= EVENTS)
        .await?;
    ensure!(
        entries.len() == EVENTS && entries.iter().all(|entry| entry["response_code"] == 200),
        "expected {EVENTS} delivered attempts: {entries:#?}"
    );
    ensure!(
        receiver.requests().len() == EVENTS,
        "the receiver saw a repeat"
    );
    // The inputs it finished while draining were acked: none is back in its queue for the next
    // dispatcher to take again; only the late events wait there.
    let left = broker.queue_depth(&queue).await?;
    broker.close().await;
    ensure!(
        left == LATE_EVENTS,
        "{} inputs finished during the drain are back in the queue",
        left.saturating_sub(LATE_EVENTS)
    );

    for name in ["fp-log-ingest", "fp-api", "fp-dashboard"] {
        let (status, log) = env.terminate(name, STOP_LIMIT).await?;
        assert_clean_exit(name, status, &log)?;
    }
    env.finish().await
}

/// Longer than actix-web's own keep-alive (5 s), which closed connections that proxies and client
/// pools (60-90 s) still meant to use.
const PROXY_PAUSE: Duration = Duration::from_secs(7);
/// An idle connection must not hold up a stop: half the drain timeout (20 s), which it would
/// otherwise last out.
const IDLE_STOP_LIMIT: Duration = Duration::from_secs(10);

/// Sends `GET path` on `stream` and reads the whole answer; returns its status line.
async fn get(stream: &mut TcpStream, path: &str) -> anyhow::Result<String> {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let read = stream.read(&mut chunk).await?;
        ensure!(
            read > 0,
            "the connection closed before the answer to {path}"
        );
        answer.extend_from_slice(&chunk[..read]);
        if let Some(at) = answer.windows(4).position(|window| window == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&answer[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .with_context(|| format!("no content-length in {head}"))?;
    while answer.len() < head_end + length {
        let read = stream.read(&mut chunk).await?;
        ensure!(
            read > 0,
            "the connection closed inside the answer to {path}"
        );
        answer.extend_from_slice(&chunk[..read]);
    }
    Ok(head.lines().next().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_outlast_a_proxys_pause_and_close_at_sigterm() -> anyhow::Result<()> {
    let mut env = TestEnvironment::new("keep_alive").await?;
    let api = start_api(&mut env).await?;
    let (dashboard, _) = start_dashboard(&mut env, api).await?;
    let services = [
        ("fp-api", api, "/api/v2/webhooks", "401"),
        ("fp-dashboard", dashboard, "/login", "200"),
    ];
    let mut connections = Vec::new();
    for (name, address, path, status) in services {
        let mut stream = TcpStream::connect(address).await?;
        let answer = get(&mut stream, path).await?;
        ensure!(answer.contains(status), "{name} answered {answer}");
        connections.push(stream);
    }

    // The same connections, after a pause a proxy's pool would not close them in.
    tokio::time::sleep(PROXY_PAUSE).await;
    for ((name, _, path, status), stream) in services.iter().zip(&mut connections) {
        let answer = get(stream, path)
            .await
            .with_context(|| format!("{name} closed an idle connection after {PROXY_PAUSE:?}"))?;
        ensure!(answer.contains(status), "{name} answered {answer}");
    }

    // Idle now; SIGTERM ends each service promptly and its connection with it.
    for ((name, ..), stream) in services.iter().zip(&mut connections) {
        let (status, log) = env.terminate(name, IDLE_STOP_LIMIT).await?;
        assert_clean_exit(name, status, &log)?;
        let mut rest = Vec::new();
        let read = tokio::time::timeout(IDLE_STOP_LIMIT, stream.read_to_end(&mut rest)).await;
        ensure!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "{name}'s idle connection is still open after it stopped: {read:?}"
        );
    }
    env.finish().await
}
