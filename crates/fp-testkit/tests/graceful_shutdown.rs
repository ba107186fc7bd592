//! SIGTERM, as an orchestrator sends it, stops every service cleanly: it takes no new work,
//! finishes what is in flight within the drain timeout, exits 0 and logs no error. Deliveries in
//! flight when the dispatcher is told to stop complete and are logged once, not interrupted.

use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use fp_testkit::environment::TestEnvironment;
use fp_testkit::pipeline::{Pipeline, start_dashboard};
use fp_testkit::receiver::{CannedResponse, TlsReceiver};

/// Well below `lifecycle.drain_timeout_ms` (20 s): a clean stop must come within it.
const STOP_LIMIT: Duration = Duration::from_secs(15);
const PATIENCE: Duration = Duration::from_secs(60);

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_work_and_exits_cleanly() -> anyhow::Result<()> {
    // Slow enough that the signal lands while deliveries are in flight.
    let receiver = TlsReceiver::start(
        "127.0.0.1:0".parse()?,
        Arc::new(|_, _| CannedResponse {
            delay: Duration::from_millis(1500),
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
    let (status, log) = env.terminate("fp-dispatcher", STOP_LIMIT).await?;
    assert_clean_exit("fp-dispatcher", status, &log)?;

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

    for name in ["fp-log-ingest", "fp-api", "fp-dashboard"] {
        let (status, log) = env.terminate(name, STOP_LIMIT).await?;
        assert_clean_exit(name, status, &log)?;
    }
    env.finish().await
}
