//! The `fp-bench` driver: sets up a deployment, runs the scenarios, writes the report.
//!
//! Scenario "events": events are published to `fp.events` as internal services publish them
//! (protobuf, routing key = event type, message id, traceparent, publisher confirms), first as fast
//! as confirms allow, then paced at half the rate that reached the receiver; each phase ends when
//! every delivery arrived and log-ingest inserted every attempt row (or at the timeout).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Parser, ValueEnum};
use diesel::sql_types::BigInt;
use fp_broker::{Broker, OutgoingMessage, Publisher};
use fp_domain::secret_box::{self, MasterKey};
use fp_domain::{Change, DeliveryId, Event, Submission, SubmissionStatus};
use fp_store::webhook_config::WebhookConfigRow;
use futures_util::StreamExt;
use uuid::Uuid;

use crate::arrivals::{self, ReceiverAddresses, ReceiverStats, now_ns};
use fp_testkit::pipeline::metric;

use crate::deployment::{Deployment, broker_url};
use crate::proc_stats;
use crate::report::{
    Completeness, Ingest, LimitReport, LogCheck, Model, Percentiles, ProcessFigures, Report,
    RunSettings, ScenarioReport,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    Debug,
    Release,
}

impl Profile {
    fn dir_name(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "fp-bench",
    about = "Runs the real FeedbackPulse services under load and reports throughput, latency, CPU and memory"
)]
pub struct Args {
    /// Events of the max-rate phase (the paced phase publishes half as many).
    #[arg(long, default_value_t = 50_000)]
    pub events: u64,
    /// Tenants, each with a webhook config subscribed to the event and its own endpoint path.
    #[arg(long, default_value_t = 1_000)]
    pub tenants: u64,
    #[arg(long, default_value_t = 1)]
    pub dispatchers: usize,
    /// Which build of the services to run (`target/<profile>/`).
    #[arg(long, value_enum, default_value = "release")]
    pub profile: Profile,
    /// Directory of the service binaries, instead of `target/<profile>/`.
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Tiny load (200 events, 20 tenants unless given); checks only that every event arrived and
    /// was logged. Writes its JSON into the run directory, not `bench/results/`.
    #[arg(long)]
    pub smoke: bool,
    /// Where the JSON report goes.
    #[arg(long, default_value = "bench/results")]
    pub results_dir: PathBuf,
    /// Unconfirmed publishes in flight at once.
    #[arg(long, default_value_t = 512)]
    pub publish_window: usize,
    /// Length of the submission's `text_feedback` (the body the endpoint gets is ~300 bytes more).
    #[arg(long, default_value_t = 200)]
    pub text_bytes: usize,
    /// Longest wait for one phase to complete.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Skips the paced phase at half the measured rate.
    #[arg(long)]
    pub skip_paced: bool,
    /// Skips the raw limits (HTTPS POSTs, broker round trips, row inserts).
    #[arg(long)]
    pub skip_limits: bool,
    /// Operations per raw limit (default: `--events`).
    #[arg(long)]
    pub limit_ops: Option<u64>,
}

/// Runs everything and returns the exit code: 0 when every event arrived and was logged.
pub async fn main(mut args: Args) -> anyhow::Result<i32> {
    crate::install_crypto_provider();
    if args.smoke {
        // A tiny load unless sizes were given explicitly on the command line.
        if !std::env::args().any(|arg| arg.starts_with("--events")) {
            args.events = 200;
        }
        if !std::env::args().any(|arg| arg.starts_with("--tenants")) {
            args.tenants = 20;
        }
    }
    if args.events == 0 || args.tenants == 0 || args.dispatchers == 0 {
        bail!("--events, --tenants and --dispatchers must be at least 1");
    }
    let target_dir = target_dir()?;
    let bin_dir = args
        .bin_dir
        .clone()
        .unwrap_or_else(|| target_dir.join(args.profile.dir_name()));
    let work_dir = target_dir.join("bench-runs");

    let started_at = Utc::now();
    let mut deployment = Deployment::create(&bin_dir, &work_dir).await?;
    eprintln!(
        "fp-bench: deployment {} (logs in {})",
        deployment.name,
        deployment.dir.display()
    );
    let outcome = tokio::select! {
        outcome = run(&mut deployment, &args, started_at) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    let run_dir = deployment.dir.clone();
    let cleanup = deployment.finish().await;
    let report = outcome?;
    cleanup?;

    print!("{}", report.table());
    let results_dir = if args.smoke {
        run_dir
    } else {
        args.results_dir.clone()
    };
    std::fs::create_dir_all(&results_dir)
        .with_context(|| format!("cannot create {}", results_dir.display()))?;
    let path = results_dir.join(format!("{}.json", started_at.format("%Y%m%dT%H%M%SZ")));
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("results: {}", path.display());
    if report.complete() {
        Ok(0)
    } else {
        eprintln!("fp-bench: not every event arrived and was logged");
        Ok(1)
    }
}

/// `target/` from the driver's own path (`target/<profile>/fp-bench`).
fn target_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("the executable has no directory")?;
    if dir.ends_with("deps") {
        dir = dir.parent().context("deps has no parent")?;
    }
    Ok(dir
        .parent()
        .context("the profile directory has no parent")?
        .to_path_buf())
}

/// What the scenarios need of a running deployment.
struct Bench {
    publisher: Publisher,
    exchange: String,
    broker: Broker,
    receiver: ReceiverAddresses,
    control: reqwest::Client,
    /// Endpoint URL of each tenant, by tenant index.
    tenants: Vec<(Uuid, String)>,
    text: String,
    log_ingest_health: SocketAddr,
    dispatcher_health: Vec<SocketAddr>,
    clock_ticks: f64,
    receiver_ca: PathBuf,
    namespace: String,
}

async fn run(
    deployment: &mut Deployment,
    args: &Args,
    started_at: DateTime<Utc>,
) -> anyhow::Result<Report> {
    let receiver = deployment.start_receiver().await?;
    let receiver_ca = deployment.dir.join("receiver-ca.pem");
    deployment.start_api().await?;
    let mut dispatcher_health = Vec::new();
    for _ in 0..args.dispatchers {
        dispatcher_health.push(
            deployment
                .start_worker("fp-dispatcher", "FP__DISPATCHER__HEALTH_LISTEN")
                .await?,
        );
    }
    let log_ingest_health = deployment
        .start_worker("fp-log-ingest", "FP__LOG_INGEST__HEALTH_LISTEN")
        .await?;

    let tenants = seed_tenants(deployment, &receiver, args.tenants).await?;
    let broker = Broker::connect(&broker_url(), &deployment.name).await?;
    let publisher = broker.publisher().await?;
    let bench = Bench {
        publisher,
        exchange: broker.names.events_exchange.clone(),
        broker,
        receiver,
        control: reqwest::Client::builder().no_proxy().build()?,
        tenants,
        text: "x".repeat(args.text_bytes),
        log_ingest_health,
        dispatcher_health,
        clock_ticks: proc_stats::clock_ticks_per_second() as f64,
        receiver_ca,
        namespace: deployment.name.clone(),
    };

    let mut scenarios = Vec::new();
    let max = events_phase(
        deployment,
        &bench,
        args,
        "events: max rate",
        args.events,
        None,
    )
    .await?;
    let half_rate = max.deliveries_per_second / 2.0;
    let max_complete = max.completeness.complete;
    scenarios.push(max);
    if !args.skip_paced && max_complete && half_rate > 0.0 {
        let events = (args.events / 2).max(1);
        scenarios.push(
            events_phase(
                deployment,
                &bench,
                args,
                "events: half of max rate",
                events,
                Some(half_rate),
            )
            .await?,
        );
    }
    let expected: u64 = scenarios.iter().map(|scenario| scenario.events).sum();
    let log_check = check_log(deployment, expected).await?;
    let (limits, model) = if args.skip_limits {
        (Vec::new(), None)
    } else {
        let limits = measure_limits(deployment, &bench, args, &scenarios).await?;
        let model = model_of(&limits, &scenarios[0]);
        (limits, model)
    };
    bench.broker.close().await;

    let mut notes = vec![
        "rabbitmq and postgresql CPU is the whole server's: other work on the machine counts too"
            .to_owned(),
        "latency runs from the event's time, set just before publishing, to the arrival at the receiver"
            .to_owned(),
    ];
    if args.smoke {
        notes.push(
            "smoke run: checks completeness only; the figures are not measurements".to_owned(),
        );
    }
    Ok(Report {
        started_at: started_at.to_rfc3339(),
        machine: proc_stats::machine(),
        settings: RunSettings {
            profile: args.profile.dir_name().to_owned(),
            smoke: args.smoke,
            events: args.events,
            tenants: args.tenants,
            dispatchers: args.dispatchers,
            text_bytes: args.text_bytes,
            publish_window: args.publish_window,
        },
        scenarios,
        log_check,
        limits,
        model,
        notes,
    })
}

/// Creates the tenants and their configs straight in the database (the api's tables, written the
/// way the api writes them: the secret sealed under the deployment's master key), which takes
/// seconds for thousands of tenants where the api would take minutes through `fpctl`.
async fn seed_tenants(
    deployment: &Deployment,
    receiver: &ReceiverAddresses,
    count: u64,
) -> anyhow::Result<Vec<(Uuid, String)>> {
    let key = MasterKey::from_hex(&deployment.master_key_hex)
        .map_err(|error| anyhow::anyhow!("master key: {error}"))?;
    let mut conn = fp_store::connect(&deployment.database_url).await?;
    let mut tenants = Vec::new();
    for index in 0..count {
        let tenant_id = Uuid::now_v7();
        let url = format!("https://{}/hook/{index}", receiver.https);
        fp_store::identity::create_tenant(&mut conn, tenant_id, &format!("bench tenant {index}"))
            .await?;
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&Uuid::new_v4().as_bytes()[..12]);
        let config = WebhookConfigRow {
            tenant_id,
            url: url.clone(),
            events: vec![
                "submission.created".to_owned(),
                "submission.status_changed".to_owned(),
            ],
            secret_sealed: Some(secret_box::seal(
                &key,
                nonce,
                tenant_id,
                &format!("bench-secret-{index}"),
            )),
            previous_secret_sealed: None,
            previous_secret_expires_at: None,
            enabled: true,
            updated_at: Utc::now(),
        };
        fp_store::webhook_config::upsert(&mut conn, &config).await?;
        tenants.push((tenant_id, url));
    }
    Ok(tenants)
}

/// CPU counters of every measured process at one moment, by label.
fn cpu_snapshot(deployment: &Deployment) -> Vec<(String, u64)> {
    let mut snapshot: Vec<(String, u64)> = deployment
        .services
        .iter()
        .map(|service| {
            let ticks = proc_stats::cpu_ticks(service.pid).unwrap_or_default();
            (service.label.clone(), ticks.own)
        })
        .collect();
    snapshot.push((
        "fp-bench (load)".to_owned(),
        proc_stats::cpu_ticks(std::process::id())
            .map(|ticks| ticks.own)
            .unwrap_or(0),
    ));
    snapshot.push((
        "rabbitmq (server)".to_owned(),
        proc_stats::server_ticks("beam.smp"),
    ));
    snapshot.push((
        "postgresql (server)".to_owned(),
        proc_stats::server_ticks("postgres"),
    ));
    snapshot
}

async fn receiver_stats(bench: &Bench) -> anyhow::Result<ReceiverStats> {
    let bytes = bench
        .control
        .get(format!("http://{}/stats", bench.receiver.control))
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    Ok(serde_json::from_slice(&bytes)?)
}

async fn receiver_post(bench: &Bench, path: &str) -> anyhow::Result<()> {
    bench
        .control
        .post(format!("http://{}{path}", bench.receiver.control))
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

async fn receiver_arrivals(bench: &Bench) -> anyhow::Result<Vec<arrivals::Arrival>> {
    let bytes = bench
        .control
        .get(format!("http://{}/arrivals", bench.receiver.control))
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    Ok(arrivals::decode(&bytes)?)
}

/// One publish: the event is made (and its time taken) just before it is published.
async fn publish_event(bench: &Bench, index: u64) -> anyhow::Result<(u128, u64)> {
    let tenant_index = usize::try_from(index % bench.tenants.len() as u64)?;
    let (tenant_id, url) = &bench.tenants[tenant_index];
    let occurred_ns = now_ns();
    let event = Event {
        id: Uuid::now_v7(),
        tenant_id: *tenant_id,
        occurred_at: DateTime::from_timestamp_nanos(i64::try_from(occurred_ns)?),
        change: Change::SubmissionCreated {
            submission: Submission {
                id: i64::try_from(index)? + 1,
                campaign_id: 1,
                star_rating: 4,
                text_feedback: bench.text.clone(),
                customer_name: Some("Bench Customer".to_owned()),
                status: SubmissionStatus::Pending,
            },
        },
    };
    let payload = fp_contracts::encode_event(&event);
    let traceparent = fp_telemetry::TraceContext::new_root().to_traceparent();
    bench
        .publisher
        .publish(&OutgoingMessage {
            exchange: &bench.exchange,
            routing_key: event.event_type().as_str(),
            message_id: &event.id.to_string(),
            traceparent: &traceparent,
            payload: &payload,
            headers: &[],
            expiration: None,
        })
        .await?;
    let delivery = DeliveryId::for_event_and_endpoint(event.id, url);
    Ok((delivery.0.as_u128(), occurred_ns))
}

/// One sample of progress while a phase runs.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at_ns: u64,
    arrivals: u64,
    rows: u64,
}

async fn events_phase(
    deployment: &Deployment,
    bench: &Bench,
    args: &Args,
    name: &str,
    events: u64,
    rate: Option<f64>,
) -> anyhow::Result<ScenarioReport> {
    eprintln!(
        "fp-bench: {name}: {events} events{}",
        rate.map(|rate| format!(" at {rate:.0}/s"))
            .unwrap_or_default()
    );
    receiver_post(bench, "/reset").await?;
    let rows_before = metric(bench.log_ingest_health, "fp_log_ingest_rows_inserted_total").await?;
    let mut attempts_before = Vec::new();
    for health in &bench.dispatcher_health {
        attempts_before.push(metric(*health, "fp_dispatcher_attempts_total").await?);
    }
    let cpu_before = cpu_snapshot(deployment);

    // Progress is sampled while the phase runs, for the log-ingest rate and lag.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        let control = bench.control.clone();
        let stats_url = format!("http://{}/stats", bench.receiver.control);
        let log_ingest = bench.log_ingest_health;
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while sampling.load(Ordering::Relaxed) {
                let stats = async {
                    let bytes = control.get(&stats_url).send().await?.bytes().await?;
                    let stats: ReceiverStats = serde_json::from_slice(&bytes)?;
                    let rows = metric(log_ingest, "fp_log_ingest_rows_inserted_total").await?;
                    anyhow::Ok((stats.requests, rows))
                }
                .await;
                if let Ok((arrivals, rows)) = stats {
                    samples.push(Sample {
                        at_ns: now_ns(),
                        arrivals,
                        rows: rows.saturating_sub(rows_before),
                    });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            samples
        })
    };

    let publish_started = tokio::time::Instant::now();
    let published: Vec<anyhow::Result<(u128, u64)>> = match rate {
        None => {
            futures_util::stream::iter(0..events)
                .map(|index| publish_event(bench, index))
                .buffer_unordered(args.publish_window)
                .collect()
                .await
        }
        Some(rate) => {
            futures_util::stream::iter(0..events)
                .then(|index| async move {
                    let due = publish_started + Duration::from_secs_f64(index as f64 / rate);
                    tokio::time::sleep_until(due).await;
                    index
                })
                .map(|index| publish_event(bench, index))
                .buffer_unordered(args.publish_window)
                .collect()
                .await
        }
    };
    let publish_seconds = publish_started.elapsed().as_secs_f64();
    let mut expected: HashMap<u128, u64> = HashMap::with_capacity(published.len());
    for outcome in published {
        let (delivery, occurred_ns) = outcome.context("publishing an event")?;
        expected.insert(delivery, occurred_ns);
    }

    // Waits for every delivery to arrive and every row to be inserted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout_secs);
    // When log-ingest's counter first showed every row (this loop polls faster than the sampler).
    let mut rows_done_ns = None;
    let (arrived, rows) = loop {
        let stats = receiver_stats(bench).await?;
        let rows = metric(bench.log_ingest_health, "fp_log_ingest_rows_inserted_total")
            .await?
            .saturating_sub(rows_before);
        if rows >= events && rows_done_ns.is_none() {
            rows_done_ns = Some(now_ns());
        }
        if stats.requests >= events && rows >= events {
            let arrived = receiver_arrivals(bench).await?;
            let delivered = distinct_expected(&arrived, &expected);
            if delivered == events {
                break (arrived, rows);
            }
        }
        if tokio::time::Instant::now() > deadline {
            eprintln!(
                "fp-bench: {name}: timed out with {} requests and {rows} rows of {events}",
                stats.requests
            );
            break (receiver_arrivals(bench).await?, rows);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let cpu_after = cpu_snapshot(deployment);
    let final_stats = receiver_stats(bench).await?;
    sampling.store(false, Ordering::Relaxed);
    let samples = sampler.await.unwrap_or_default();
    let mut attempts_per_dispatcher = Vec::new();
    for (health, before) in bench.dispatcher_health.iter().zip(&attempts_before) {
        attempts_per_dispatcher.push(
            metric(*health, "fp_dispatcher_attempts_total")
                .await?
                .saturating_sub(*before),
        );
    }

    // First arrival of each expected delivery: its latency; later ones are duplicates.
    let mut first_arrival: HashMap<u128, u64> = HashMap::with_capacity(expected.len());
    let mut duplicates = 0u64;
    let mut unexpected = 0u64;
    for arrival in &arrived {
        if !expected.contains_key(&arrival.delivery_id) {
            unexpected += 1;
            continue;
        }
        match first_arrival.entry(arrival.delivery_id) {
            std::collections::hash_map::Entry::Occupied(mut entry) => {
                duplicates += 1;
                if arrival.arrived_at_ns < *entry.get() {
                    entry.insert(arrival.arrived_at_ns);
                }
            }
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(arrival.arrived_at_ns);
            }
        }
    }
    let latencies: Vec<u64> = first_arrival
        .iter()
        .filter_map(|(delivery, arrived)| {
            let occurred = expected.get(delivery)?;
            Some(arrived.saturating_sub(*occurred))
        })
        .collect();
    let first_event_ns = expected.values().copied().min().unwrap_or(0);
    let last_arrival_ns = first_arrival
        .values()
        .copied()
        .max()
        .unwrap_or(first_event_ns);
    let duration_seconds = (last_arrival_ns.saturating_sub(first_event_ns)) as f64 / 1e9;
    let delivered = first_arrival.len() as u64;
    let deliveries_per_second = if duration_seconds > 0.0 {
        delivered as f64 / duration_seconds
    } else {
        0.0
    };

    let processes = cpu_before
        .iter()
        .zip(&cpu_after)
        .map(|((label, before), (_, after))| {
            let cpu_seconds = after.saturating_sub(*before) as f64 / bench.clock_ticks;
            let peak_rss_mib = deployment
                .services
                .iter()
                .find(|service| &service.label == label)
                .and_then(|service| proc_stats::status_kib(service.pid, "VmHWM").ok())
                .map(|kib| kib as f64 / 1024.0);
            ProcessFigures {
                label: label.clone(),
                cpu_seconds,
                cpu_seconds_per_1000_deliveries: if delivered > 0 {
                    cpu_seconds * 1000.0 / delivered as f64
                } else {
                    0.0
                },
                peak_rss_mib,
            }
        })
        .collect();

    Ok(ScenarioReport {
        name: name.to_owned(),
        events,
        target_rate_per_second: rate,
        publish_rate_per_second: if publish_seconds > 0.0 {
            events as f64 / publish_seconds
        } else {
            0.0
        },
        duration_seconds,
        deliveries_per_second,
        latency: Percentiles::from_ns(latencies),
        ingest: ingest_figures(&samples, rows, rows_done_ns, last_arrival_ns),
        completeness: Completeness {
            expected: events,
            delivered,
            duplicates,
            unexpected,
            logged_rows: rows,
            complete: delivered == events && rows >= events,
        },
        processes,
        attempts_per_dispatcher,
        mean_body_bytes: final_stats
            .body_bytes
            .checked_div(final_stats.requests)
            .unwrap_or(0),
    })
}

fn distinct_expected(arrived: &[arrivals::Arrival], expected: &HashMap<u128, u64>) -> u64 {
    let mut seen = std::collections::HashSet::with_capacity(expected.len());
    for arrival in arrived {
        if expected.contains_key(&arrival.delivery_id) {
            seen.insert(arrival.delivery_id);
        }
    }
    seen.len() as u64
}

/// Log-ingest's rate from its first sampled row to the moment every row was in, its largest lag
/// behind the receiver, and how long after the last arrival the last row was in.
fn ingest_figures(
    samples: &[Sample],
    rows: u64,
    rows_done_ns: Option<u64>,
    last_arrival_ns: u64,
) -> Ingest {
    let first_row = samples.iter().find(|sample| sample.rows > 0);
    let rows_per_second = match (first_row, rows_done_ns) {
        (Some(first), Some(done)) if done > first.at_ns => {
            rows.saturating_sub(first.rows) as f64 / ((done - first.at_ns) as f64 / 1e9)
        }
        _ => 0.0,
    };
    Ingest {
        rows_per_second,
        max_lag_rows: samples
            .iter()
            .map(|sample| sample.arrivals.saturating_sub(sample.rows))
            .max()
            .unwrap_or(0),
        tail_lag_ms: rows_done_ns
            .map(|done| done.saturating_sub(last_arrival_ns) as f64 / 1e6)
            .unwrap_or(0.0),
    }
}

#[derive(diesel::QueryableByName)]
struct Counts {
    #[diesel(sql_type = BigInt)]
    rows: i64,
    #[diesel(sql_type = BigInt)]
    distinct_deliveries: i64,
    #[diesel(sql_type = BigInt)]
    rows_with_200: i64,
}

/// The database holds exactly one successful attempt per published event.
async fn check_log(deployment: &Deployment, expected: u64) -> anyhow::Result<LogCheck> {
    // Imported here: its blanket `load` would shadow `AtomicBool::load` elsewhere in this file.
    use diesel_async::RunQueryDsl;
    let mut conn = fp_store::connect(&deployment.database_url).await?;
    let counts: Counts = diesel::sql_query(
        "SELECT count(*) AS rows, count(DISTINCT delivery_id) AS distinct_deliveries, \
         count(*) FILTER (WHERE response_status = 200) AS rows_with_200 FROM delivery_attempts",
    )
    .get_result(&mut conn)
    .await?;
    let as_u64 = |value: i64| u64::try_from(value).unwrap_or(0);
    let check = LogCheck {
        expected,
        rows: as_u64(counts.rows),
        distinct_deliveries: as_u64(counts.distinct_deliveries),
        rows_with_200: as_u64(counts.rows_with_200),
        complete: false,
    };
    Ok(LogCheck {
        complete: check.distinct_deliveries == expected && check.rows_with_200 >= expected,
        ..check
    })
}

/// CPU of the processes named in `involved` between two snapshots, per 1,000 operations.
fn figures_between(
    deployment: &Deployment,
    bench: &Bench,
    before: &[(String, u64)],
    after: &[(String, u64)],
    involved: &[&str],
    operations: u64,
) -> Vec<ProcessFigures> {
    before
        .iter()
        .zip(after)
        .filter(|((label, _), _)| involved.contains(&label.as_str()))
        .map(|((label, before), (_, after))| {
            let cpu_seconds = after.saturating_sub(*before) as f64 / bench.clock_ticks;
            ProcessFigures {
                label: label.clone(),
                cpu_seconds,
                cpu_seconds_per_1000_deliveries: cpu_seconds * 1000.0 / operations.max(1) as f64,
                peak_rss_mib: deployment
                    .services
                    .iter()
                    .find(|service| &service.label == label)
                    .and_then(|service| proc_stats::status_kib(service.pid, "VmHWM").ok())
                    .map(|kib| kib as f64 / 1024.0),
            }
        })
        .collect()
}

/// Times `work` and reads the CPU of `involved` around it.
async fn measure(
    deployment: &Deployment,
    bench: &Bench,
    name: &str,
    operations: u64,
    involved: &[&str],
    work: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<LimitReport> {
    eprintln!("fp-bench: limit: {name}: {operations} operations");
    let before = cpu_snapshot(deployment);
    let started = tokio::time::Instant::now();
    work.await.with_context(|| format!("limit `{name}`"))?;
    let seconds = started.elapsed().as_secs_f64();
    let after = cpu_snapshot(deployment);
    let processes = figures_between(deployment, bench, &before, &after, involved, operations);
    Ok(LimitReport {
        name: name.to_owned(),
        operations,
        seconds,
        operations_per_second: if seconds > 0.0 {
            operations as f64 / seconds
        } else {
            0.0
        },
        cpu_seconds_per_1000: processes
            .iter()
            .map(|process| process.cpu_seconds_per_1000_deliveries)
            .sum(),
        processes,
    })
}

const LOAD: &str = "fp-bench (load)";
const RECEIVER: &str = "fp-bench-receiver";
const RABBITMQ: &str = "rabbitmq (server)";
const POSTGRESQL: &str = "postgresql (server)";

/// Item 3 of the issue: (a) HTTPS POSTs to the same receiver with the deliveries' body size,
/// (b) broker publish with confirms, then consume with acks, with the events' message size,
/// (c) batched inserts of attempt rows with the same body size.
async fn measure_limits(
    deployment: &Deployment,
    bench: &Bench,
    args: &Args,
    scenarios: &[ScenarioReport],
) -> anyhow::Result<Vec<LimitReport>> {
    let operations = args.limit_ops.unwrap_or(args.events).max(1);
    let body_size = usize::try_from(scenarios.first().map_or(0, |s| s.mean_body_bytes))?.max(1);
    let (tenant_id, _) = bench.tenants.first().context("no tenant")?;
    let message_size = fp_contracts::encode_event(&Event {
        id: Uuid::now_v7(),
        tenant_id: *tenant_id,
        occurred_at: Utc::now(),
        change: Change::SubmissionCreated {
            submission: Submission {
                id: 1,
                campaign_id: 1,
                star_rating: 4,
                text_feedback: bench.text.clone(),
                customer_name: Some("Bench Customer".to_owned()),
                status: SubmissionStatus::Pending,
            },
        },
    })
    .len();
    let mut limits = Vec::new();
    receiver_post(bench, "/reset").await?;
    let url = format!("https://{}/raw", bench.receiver.https);
    let client = crate::limits::https_client(&bench.receiver_ca)?;
    crate::limits::https_posts(&client, &url, vec![b'x'; body_size], 1, 1).await?;
    limits.push(
        measure(
            deployment,
            bench,
            "https POST (keep-alive)",
            operations,
            &[LOAD, RECEIVER],
            crate::limits::https_posts(
                &client,
                &url,
                vec![b'x'; body_size],
                operations,
                args.publish_window,
            ),
        )
        .await?,
    );

    let queue = crate::limits::raw_queue_name(&bench.namespace);
    let broker = async {
        let publish = measure(
            deployment,
            bench,
            "rabbitmq publish + confirm",
            operations,
            &[LOAD, RABBITMQ],
            crate::limits::broker_publish(
                &bench.broker,
                &queue,
                message_size,
                operations,
                args.publish_window,
            ),
        )
        .await?;
        let consume = measure(
            deployment,
            bench,
            "rabbitmq consume + ack",
            operations,
            &[LOAD, RABBITMQ],
            crate::limits::broker_consume(&bench.broker, &queue, operations, 256),
        )
        .await?;
        anyhow::Ok([publish, consume])
    }
    .await;
    // The raw queue is not part of the namespace's topology: it goes here, whatever happened.
    let deleted = crate::limits::delete_queue(&bench.broker, &queue).await;
    limits.extend(broker?);
    deleted?;

    limits.push(
        measure(
            deployment,
            bench,
            "postgresql insert rows (batch 500)",
            operations,
            &[LOAD, POSTGRESQL],
            crate::limits::attempt_inserts(
                &deployment.database_url,
                *tenant_id,
                body_size,
                operations,
                500,
            ),
        )
        .await?,
    );
    Ok(limits)
}

/// Two broker hops (each a publish with confirm plus a consume with ack), one POST and one row.
fn model_of(limits: &[LimitReport], max_phase: &ScenarioReport) -> Option<Model> {
    let cost = |name: &str| {
        limits
            .iter()
            .find(|limit| limit.name.starts_with(name))
            .map(|limit| limit.cpu_seconds_per_1000)
    };
    let model_cpu = 2.0 * (cost("rabbitmq publish")? + cost("rabbitmq consume")?)
        + cost("https POST")?
        + cost("postgresql insert")?;
    let ours_cpu: f64 = max_phase
        .processes
        .iter()
        .map(|process| process.cpu_seconds_per_1000_deliveries)
        .sum();
    let cpus = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let model_rate = if model_cpu > 0.0 {
        cpus * 1000.0 / model_cpu
    } else {
        0.0
    };
    Some(Model {
        model_cpu_seconds_per_1000: model_cpu,
        ours_cpu_seconds_per_1000: ours_cpu,
        cpu_multiple: if model_cpu > 0.0 {
            ours_cpu / model_cpu
        } else {
            0.0
        },
        model_deliveries_per_second: model_rate,
        ours_deliveries_per_second: max_phase.deliveries_per_second,
        throughput_share: if model_rate > 0.0 {
            max_phase.deliveries_per_second / model_rate
        } else {
            0.0
        },
    })
}
