//! The `fp-bench` driver: sets up a deployment, runs the phases, writes the report.
//!
//! Phases, in order (bench/README.md explains each figure):
//! - "events": events published to `fp.events` as internal services publish them (protobuf,
//!   routing key = event type, message id, traceparent, publisher confirms), first as fast as
//!   confirms allow, then paced at shares of the rate that reached the receiver (half, a quarter);
//! - "submissions": the same through the api (`POST /api/v2/submissions`, the outbox relay);
//! - scale-out: the max-rate events load again with more dispatchers;
//! - backlog: events queued while the receiver is down and no dispatcher runs, then drained;
//! - lifecycle (`--lifecycle`): a month of attempts seeded in the database, then the events load at
//!   half the max rate without maintenance and while retention drops partitions, payloads are
//!   cleared and a submission is erased through the api, A B A B;
//! - cluster: the max-rate events load on a three-node RabbitMQ cluster with replicated quorum
//!   queues, for the replication's cost per delivery beside the single node's.
//!
//! Each phase ends when every delivery arrived and every attempt was logged with its outcome (or
//! at the timeout). Then the machine's own limits are measured with the same receiver, broker and
//! database.

use std::fmt::Write as _;
use std::io::Write as _;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Parser, ValueEnum};
use diesel::sql_types::BigInt;
use fp_broker::Broker;
use fp_domain::api_key::IssuedKey;
use fp_domain::secret_box::{self, MasterKey};
use fp_domain::{Change, Event, Submission, SubmissionStatus};
use fp_store::identity::KeyOwner;
use fp_store::webhook_config::WebhookConfigRow;
use fp_testkit::rabbitmq_cluster::RabbitCluster;
use uuid::Uuid;

use crate::arrivals::{ReceiverAddresses, now_ns};
use crate::deployment::{Deployment, broker_url};
use crate::lifecycle::{self, SEEDED_DAYS};
use crate::load::{LoadTarget, Tenant};
use crate::phase::{Observed, PhaseLoad, Probe, cpu_snapshot, process_figures};
use crate::proc_stats;
use crate::report::{
    LifecycleReport, LimitReport, LogCheck, MaintenanceStep, Model, Percentiles, Report,
    RunSettings, ScenarioReport,
};
use crate::{LOAD, POSTGRESQL, RABBITMQ, RECEIVER};

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
    /// Events of the max-rate phase (a paced phase publishes its share of them).
    #[arg(long, default_value_t = 50_000)]
    pub events: u64,
    /// Tenants, each with a webhook config subscribed to the event and its own endpoint path.
    #[arg(long, default_value_t = 1_000)]
    pub tenants: u64,
    /// Dispatchers of the main phases.
    #[arg(long, default_value_t = 1)]
    pub dispatchers: usize,
    /// Dispatchers of the scale-out phase (the max-rate load again); 0 skips it.
    #[arg(long, default_value_t = 2)]
    pub scale_out_dispatchers: usize,
    /// Submissions created through the api in the second scenario's max-rate phase (the paced
    /// phases create their share of them); 0 skips the scenario.
    #[arg(long, default_value_t = 20_000)]
    pub submissions: u64,
    /// Requests to the api in flight at once in the submissions scenario.
    #[arg(long, default_value_t = 64)]
    pub api_window: usize,
    /// Events queued while the receiver is down and no dispatcher runs, then released; 0 skips
    /// the backlog phase.
    #[arg(long, default_value_t = 1_000_000)]
    pub backlog_events: u64,
    /// Which build of the services to run (`target/<profile>/`).
    #[arg(long, value_enum, default_value = "release")]
    pub profile: Profile,
    /// Directory of the service binaries, instead of `target/<profile>/`.
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Tiny load (200 events, 100 submissions, a backlog of 300, 20 tenants, 3,000 lifecycle rows
    /// with `--lifecycle`, unless given);
    /// checks only that every event arrived and was logged. Writes its JSON into the run
    /// directory, not `bench/results/`.
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
    /// Paced phases after each max-rate phase, as shares of the rate it reached (comma-separated).
    /// The latency target is judged at 0.5; lower shares show how latency falls with load.
    #[arg(long, value_delimiter = ',', default_value = "0.5,0.25")]
    pub paced_shares: Vec<f64>,
    /// Paced phases at these rates (per second, comma-separated) instead of shares: variants
    /// compared A B then carry the same load in their paced phases, where shares follow each
    /// run's own max rate. Such phases are named by their rate, so `targets.py` (which judges the
    /// shares) does not read them.
    #[arg(long, value_delimiter = ',', conflicts_with = "paced_shares")]
    pub paced_rates: Vec<f64>,
    /// Skips the paced phases.
    #[arg(long)]
    pub skip_paced: bool,
    /// Skips the raw limits (HTTPS POSTs, broker round trips, row inserts).
    #[arg(long)]
    pub skip_limits: bool,
    /// Operations per raw limit (default: `--events`).
    #[arg(long)]
    pub limit_ops: Option<u64>,
    /// Events of the cluster phase: the max-rate events load on a three-node RabbitMQ cluster in
    /// containers (needs docker; builds the local RabbitMQ image when missing); 0 skips it.
    #[arg(long, default_value_t = 20_000)]
    pub cluster_events: u64,
    /// Runs the lifecycle phase: `--lifecycle-rows` attempts seeded over 30 days, then the events
    /// load at half the max rate without and with maintenance (retention, payload clearing, an
    /// erasure), twice. Off by default: seeding 20 million rows takes minutes.
    #[arg(long)]
    pub lifecycle: bool,
    /// Attempts the lifecycle phase seeds.
    #[arg(long, default_value_t = 20_000_000)]
    pub lifecycle_rows: u64,
    /// Writes each phase's first arrivals into this directory (which must hold no CSV yet), one
    /// CSV a phase named after it: the event's time (for submissions, the request's
    /// send time) in ns since the Unix epoch and the latency in ns, in the order the events were
    /// made. Deliveries that never arrived are missing. Shows where in a phase the slow ones fall.
    #[arg(long)]
    pub latencies_dir: Option<PathBuf>,
}

/// Runs everything and returns the exit code: 0 when every event arrived and was logged.
pub async fn main(mut args: Args) -> anyhow::Result<i32> {
    crate::install_crypto_provider();
    if args.smoke {
        // A tiny load unless sizes were given explicitly on the command line.
        let given = |flag: &str| std::env::args().any(|arg| arg.starts_with(flag));
        if !given("--events") {
            args.events = 200;
        }
        if !given("--tenants") {
            args.tenants = 20;
        }
        if !given("--submissions") {
            args.submissions = 100;
        }
        if !given("--backlog-events") {
            args.backlog_events = 300;
        }
        // `--smoke --lifecycle` seeds a few thousand rows, not millions.
        if !given("--lifecycle-rows") {
            args.lifecycle_rows = 3_000;
        }
        // Starting three RabbitMQ containers takes a minute or two: only when asked for.
        if !given("--cluster-events") {
            args.cluster_events = 0;
        }
    }
    if args.events == 0 || args.tenants == 0 || args.dispatchers == 0 {
        bail!("--events, --tenants and --dispatchers must be at least 1");
    }
    if let Some(rate) = args
        .paced_rates
        .iter()
        .chain(&args.paced_shares)
        .find(|value| !value.is_finite() || **value <= 0.0)
    {
        bail!("--paced-rates and --paced-shares must be positive numbers, not {rate}");
    }
    if let Some(dir) = &args.latencies_dir {
        // Before the run, so a path that cannot be made, or files of an earlier run that would
        // clash, do not cost a run's measurements.
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let earlier = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .filter_map(Result::ok)
            .any(|entry| entry.path().extension().is_some_and(|ext| ext == "csv"));
        if earlier {
            bail!(
                "--latencies-dir {} already holds CSV files: give a directory without them",
                dir.display()
            );
        }
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
    if let Some(dir) = &args.latencies_dir {
        for scenario in &report.scenarios {
            write_arrivals(dir, &scenario.name, &scenario.arrivals)?;
        }
    }
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

/// The CSV of a phase's arrivals: its name with each run of characters other than ASCII letters
/// and digits as one '-', none at either end.
fn arrivals_file_name(phase: &str) -> String {
    let mut name = String::new();
    for c in phase.chars() {
        if c.is_ascii_alphanumeric() {
            name.push(c);
        } else if !name.is_empty() && !name.ends_with('-') {
            name.push('-');
        }
    }
    format!("{}.csv", name.trim_end_matches('-'))
}

/// `<dir>/<arrivals_file_name>`, `occurred_ns,latency_ns` a line. Written once the phases have
/// their final names (the lifecycle and cluster phases are renamed after they ran); a file already
/// there is an error, not overwritten, so two phases of one name cannot hide each other.
fn write_arrivals(dir: &Path, phase: &str, arrivals: &[(u64, u64)]) -> anyhow::Result<()> {
    let mut csv = String::from("occurred_ns,latency_ns\n");
    for (occurred, latency) in arrivals {
        // Writing into a String cannot fail.
        let _ = writeln!(csv, "{occurred},{latency}");
    }
    let path = dir.join(arrivals_file_name(phase));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("cannot create {} (is it there already?)", path.display()))?;
    file.write_all(csv.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// What the phases need of a running deployment.
struct Bench {
    load: LoadTarget,
    observed: Observed,
    broker: Broker,
    receiver_ca: PathBuf,
    namespace: String,
}

async fn start_dispatchers(deployment: &mut Deployment, count: usize) -> anyhow::Result<()> {
    for _ in 0..count {
        deployment
            .start_worker("fp-dispatcher", "FP__DISPATCHER__HEALTH_LISTEN")
            .await?;
    }
    Ok(())
}

async fn run(
    deployment: &mut Deployment,
    args: &Args,
    started_at: DateTime<Utc>,
) -> anyhow::Result<Report> {
    if args.lifecycle {
        // The services' maintenance loops run once at start, then not again during the run: the
        // lifecycle phase runs the steps itself, at a known moment, and no loop takes their lock.
        deployment.set("FP__RETENTION__MAINTENANCE_INTERVAL", "24h");
    }
    let receiver = deployment.start_receiver().await?;
    let receiver_ca = deployment.dir.join("receiver-ca.pem");
    let api = deployment.start_api().await?;
    start_dispatchers(deployment, args.dispatchers).await?;
    let log_ingest_health = deployment
        .start_worker("fp-log-ingest", "FP__LOG_INGEST__HEALTH_LISTEN")
        .await?;

    let tenants = seed_tenants(deployment, &receiver, args.tenants).await?;
    let broker = Broker::connect(&broker_url(), &deployment.name).await?;
    let mut bench = Bench {
        load: LoadTarget {
            publisher: broker.publisher(),
            events_exchange: broker.names.events_exchange.clone(),
            api,
            api_client: reqwest::Client::builder()
                .no_proxy()
                // A request sent on a pooled connection as the server closes it fails
                // ("connection closed before message completed"), which happened between two
                // phases when the api closed idle connections after 5 s. It keeps them 75 s now
                // (`api.keep_alive`), but an A B run may drive older builds: the client lets go
                // first.
                .pool_idle_timeout(API_IDLE_CONNECTION_KEPT)
                .build()?,
            database_url: deployment.database_url.clone(),
            tenants,
            text: "x".repeat(args.text_bytes),
        },
        observed: Observed {
            receiver,
            log_ingest_health,
            dispatchers: Arc::default(),
            control: reqwest::Client::builder().no_proxy().build()?,
            clock_ticks: proc_stats::clock_ticks_per_second() as f64,
        },
        broker,
        receiver_ca,
        namespace: deployment.name.clone(),
    };

    let mut scenarios = Vec::new();
    for source in [Source::Events, Source::Submissions] {
        let count = match source {
            Source::Events => args.events,
            Source::Submissions => args.submissions,
        };
        if count == 0 {
            continue;
        }
        let max = load_phase(deployment, &bench, args, source, count, None, None).await?;
        let max_rate = max.deliveries_per_second;
        let max_complete = max.completeness.complete;
        scenarios.push(max);
        if args.skip_paced || !max_complete || max_rate <= 0.0 {
            continue;
        }
        let paces: Vec<Pace> = if args.paced_rates.is_empty() {
            args.paced_shares
                .iter()
                .map(|&share| Pace::share_of(max_rate, share))
                .collect()
        } else {
            args.paced_rates
                .iter()
                .map(|&rate| Pace::at_rate(max_rate, rate))
                .collect()
        };
        for pace in paces {
            // As many as keep the paced phase about as long as the max-rate one.
            let paced = ((count as f64 * pace.share) as u64).max(1);
            scenarios
                .push(load_phase(deployment, &bench, args, source, paced, Some(pace), None).await?);
        }
    }
    // The limits are the yardstick for the phases before them: they are measured on the broker in
    // the same state, before a million messages go through it.
    let events_max = scenarios.iter().find(|scenario| {
        scenario.source == Source::Events.name() && scenario.target_rate_per_second.is_none()
    });
    let (limits, model) = match events_max {
        Some(events_max) if !args.skip_limits => {
            let limits = measure_limits(deployment, &bench, args, events_max).await?;
            let model = model_of(&limits, events_max);
            (limits, model)
        }
        _ => (Vec::new(), None),
    };
    let running = deployment.services_of("fp-dispatcher").count();
    if args.scale_out_dispatchers > 0 {
        start_dispatchers(
            deployment,
            args.scale_out_dispatchers.saturating_sub(running),
        )
        .await?;
        scenarios.push(
            load_phase(
                deployment,
                &bench,
                args,
                Source::Events,
                args.events,
                None,
                None,
            )
            .await?,
        );
    }
    if args.backlog_events > 0 {
        scenarios.push(backlog_phase(deployment, &bench, args).await?);
    }
    // Before the cluster phase, which leaves no queue worker on the machine's broker.
    let lifecycle = if args.lifecycle {
        Some(lifecycle_phase(deployment, &bench, args, started_at, &mut scenarios).await?)
    } else {
        None
    };
    if args.cluster_events > 0 {
        scenarios.push(cluster_phase(deployment, &mut bench, args).await?);
    }

    let expected: u64 = scenarios
        .iter()
        .map(|scenario| scenario.events)
        .sum::<u64>()
        + lifecycle
            .as_ref()
            .map_or(0, |lifecycle| lifecycle.other_deliveries);
    let log_check = check_log(deployment, expected).await?;
    bench.broker.close().await;

    let mut notes = vec![
        "rabbitmq and postgresql CPU is the whole server's: other work on the machine counts too"
            .to_owned(),
        "latency runs from the event's time (set just before publishing) or, for submissions, from the moment the load generator sent the request, to the arrival at the receiver"
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
            submissions: args.submissions,
            backlog_events: args.backlog_events,
            tenants: args.tenants,
            dispatchers: args.dispatchers,
            scale_out_dispatchers: args.scale_out_dispatchers,
            text_bytes: args.text_bytes,
            publish_window: args.publish_window,
            api_window: args.api_window,
            lifecycle_rows: if args.lifecycle {
                args.lifecycle_rows
            } else {
                0
            },
        },
        scenarios,
        log_check,
        limits,
        model,
        lifecycle,
        notes,
    })
}

/// Where a phase's load enters the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Events published to `fp.events`, as the outbox relay publishes them.
    Events,
    /// Submissions created through the api, whose outbox relay publishes the events.
    Submissions,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Events => "events",
            Source::Submissions => "submissions",
        }
    }
}

/// How long the load generator keeps an idle connection to the api: under the keep-alive of every
/// build of the api (5 s before `api.keep_alive`).
const API_IDLE_CONNECTION_KEPT: Duration = Duration::from_secs(2);

/// A paced phase's rate, and its share of the max-rate phase's.
#[derive(Debug, Clone, Copy)]
struct Pace {
    share: f64,
    rate: f64,
    /// Given as a rate (`--paced-rates`), not as a share.
    fixed_rate: bool,
}

impl Pace {
    fn share_of(max_rate: f64, share: f64) -> Self {
        Pace {
            share,
            rate: max_rate * share,
            fixed_rate: false,
        }
    }

    fn at_rate(max_rate: f64, rate: f64) -> Self {
        Pace {
            share: rate / max_rate,
            rate,
            fixed_rate: true,
        }
    }
}

/// Work run beside a phase's load (the lifecycle phase's maintenance).
type Beside<'a> = Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>>;

/// One phase: `count` events or submissions as fast as possible (`pace` None) or paced. With
/// `beside`, that work runs from the load's start, and an events load goes on at its pace until
/// the work is done too.
async fn load_phase(
    deployment: &Deployment,
    bench: &Bench,
    args: &Args,
    source: Source,
    count: u64,
    pace: Option<Pace>,
    beside: Option<Beside<'_>>,
) -> anyhow::Result<ScenarioReport> {
    let dispatchers = deployment.services_of("fp-dispatcher").count();
    let name = match pace {
        None => format!("{}: max rate, {dispatchers} dispatcher(s)", source.name()),
        Some(Pace {
            rate,
            fixed_rate: true,
            ..
        }) => format!("{}: paced at {rate:.0}/s", source.name()),
        Some(Pace { share, rate, .. }) => format!(
            "{}: {:.0} % of max rate ({rate:.0}/s)",
            source.name(),
            share * 100.0
        ),
    };
    let rate = pace.map(|pace| pace.rate);
    eprintln!("fp-bench: {name}: {count}");
    bench.observed.receiver_post("/reset").await?;
    let probe = Probe::start(deployment, &bench.observed).await?;
    let started = tokio::time::Instant::now();
    let keep_going = AtomicBool::new(beside.is_some());
    let produced = async {
        match source {
            Source::Events => {
                bench
                    .load
                    .publish_events_while(count, &keep_going, rate, args.publish_window)
                    .await
            }
            Source::Submissions => {
                bench
                    .load
                    .create_submissions(count, rate, args.api_window)
                    .await
            }
        }
    };
    let alongside = async {
        let Some(work) = beside else {
            return Ok(());
        };
        let done = work.await;
        keep_going.store(false, Ordering::Relaxed);
        done
    };
    let (expected, alongside) = tokio::join!(produced, alongside);
    let expected = expected?;
    alongside?;
    let load = PhaseLoad {
        name,
        source: source.name(),
        rate,
        expected,
        produce_seconds: started.elapsed().as_secs_f64(),
        measured_from_ns: None,
        timeout: Duration::from_secs(args.timeout_secs),
        keep_arrivals: args.latencies_dir.is_some(),
    };
    probe.finish(deployment, &bench.observed, load).await
}

/// Item 4 of the issue: the dispatchers are stopped and the receiver is down while
/// `--backlog-events` events are queued; then the receiver comes up and the dispatchers start
/// afresh (so their peak RSS is the backlog's), and the phase runs until the queue is drained
/// and logged. With dispatchers running, a down receiver would park each event in the retry
/// schedule (5 s, then 5 min), and the drain time would be the schedule's, not the pipeline's.
async fn backlog_phase(
    deployment: &mut Deployment,
    bench: &Bench,
    args: &Args,
) -> anyhow::Result<ScenarioReport> {
    let count = args.backlog_events;
    let name = format!(
        "backlog: {count} queued while down, then drained by {} dispatcher(s)",
        args.dispatchers
    );
    eprintln!("fp-bench: {name}");
    deployment.stop_all("fp-dispatcher").await;
    bench.observed.receiver_post("/down").await?;
    bench.observed.receiver_post("/reset").await?;
    let started = tokio::time::Instant::now();
    let expected = bench
        .load
        .publish_events(count, None, args.publish_window)
        .await?;
    let produce_seconds = started.elapsed().as_secs_f64();
    let probe = Probe::start(deployment, &bench.observed).await?;
    bench.observed.receiver_post("/up").await?;
    let released_ns = now_ns();
    start_dispatchers(deployment, args.dispatchers).await?;
    bench.observed.track_dispatchers(deployment);
    let load = PhaseLoad {
        name,
        source: "backlog",
        rate: None,
        expected,
        produce_seconds,
        measured_from_ns: Some(released_ns),
        // Draining a large backlog takes longer than one phase's usual limit.
        timeout: Duration::from_secs(args.timeout_secs.max(count / 500)),
        keep_arrivals: args.latencies_dir.is_some(),
    };
    probe.finish(deployment, &bench.observed, load).await
}

/// The max-rate events load on a three-node RabbitMQ cluster (`deploy/docker/rabbitmq-cluster.sh`:
/// containers of the local image, pause_minority) whose quorum queues have a replica on every node,
/// beside the first phase on the single node: what replication costs per delivery. The queue
/// workers move to the cluster (`fpctl migrate` declares the namespace there first); the api, the
/// database and the receiver stay. Last, since the workers and the load stay on the cluster, which
/// is taken down at the end, also after a failure.
async fn cluster_phase(
    deployment: &mut Deployment,
    bench: &mut Bench,
    args: &Args,
) -> anyhow::Result<ScenarioReport> {
    eprintln!("fp-bench: starting a three-node RabbitMQ cluster for the cluster phase");
    let cluster = RabbitCluster::start("fp-bench-cluster").await?;
    let outcome = async {
        deployment.stop_all("fp-dispatcher").await;
        deployment.stop_all("fp-log-ingest").await;
        deployment.set("FP__BROKER__URL", cluster.broker_url());
        deployment.set("FP__BROKER__QUORUM_INITIAL_GROUP_SIZE", "3");
        deployment.fpctl(&["migrate"]).await?;
        start_dispatchers(deployment, args.dispatchers).await?;
        bench.observed.log_ingest_health = deployment
            .start_worker("fp-log-ingest", "FP__LOG_INGEST__HEALTH_LISTEN")
            .await?;
        let broker = Broker::connect(cluster.broker_url(), &deployment.name).await?;
        bench.load.publisher = broker.publisher();
        let phase = load_phase(
            deployment,
            bench,
            args,
            Source::Events,
            args.cluster_events,
            None,
            None,
        )
        .await;
        broker.close().await;
        phase
    }
    .await;
    deployment.stop_all("fp-dispatcher").await;
    deployment.stop_all("fp-log-ingest").await;
    // `finish` deletes the namespace on the machine's broker.
    deployment.set("FP__BROKER__URL", broker_url());
    deployment.unset("FP__BROKER__QUORUM_INITIAL_GROUP_SIZE");
    let down = cluster.down().await;
    let mut report = outcome?;
    down?;
    report.name = format!(
        "{}, on 3 RabbitMQ nodes (replicated quorum queues)",
        report.name
    );
    Ok(report)
}

/// Runs of the lifecycle phase without and with maintenance, alternated (A B A B).
const LIFECYCLE_RUNS: u32 = 2;
/// Each maintained run lowers `retention.max_days` by this much, so as many more of the oldest
/// seeded days are past it.
const DAYS_DROPPED_PER_RUN: u32 = 3;
/// The payload retention a tenth of the tenants set before each maintained run.
const PAYLOAD_RETENTION_DAYS: i32 = 7;
/// How long a maintained run's load goes before the maintenance starts: the load is at its pace.
const MAINTENANCE_DELAY: Duration = Duration::from_secs(1);

/// Issue 15: the attempt table with `--lifecycle-rows` attempts over the 30 days before the run's
/// first day (a partition each), then the events load at half the events max rate, alternately
/// without maintenance and while a maintenance round (log-ingest's steps, timed one by one) and
/// an erasure through the api run. Each maintained run has its own work: `retention.max_days`
/// three days lower than the last (three more partitions past it), another tenth of the tenants
/// with a 7-day payload retention, another submission (created and delivered just before) to
/// erase. Its load goes on until the maintenance is done. Afterwards the seeded partitions left
/// are dropped, so the final check sees only the pipeline's rows.
async fn lifecycle_phase(
    deployment: &Deployment,
    bench: &Bench,
    args: &Args,
    started_at: DateTime<Utc>,
    scenarios: &mut Vec<ScenarioReport>,
) -> anyhow::Result<LifecycleReport> {
    let max_rate = scenarios
        .iter()
        .find(|scenario| {
            scenario.source == Source::Events.name()
                && scenario.target_rate_per_second.is_none()
                && scenario.completeness.complete
        })
        .map(|scenario| scenario.deliveries_per_second)
        .filter(|rate| *rate > 0.0)
        .context(
            "the lifecycle phase is paced at half the events max rate, which did not complete",
        )?;
    let pace = Pace::share_of(max_rate, 0.5);
    let count = ((args.events as f64 * pace.share) as u64).max(1);
    let database_url = deployment.database_url.as_str();
    // Before the run's first day, so no partition holds both seeded and pipeline rows.
    let end = lifecycle::day_start(started_at);
    eprintln!(
        "fp-bench: lifecycle: seeding {} attempts over the {SEEDED_DAYS} days before {end}",
        args.lifecycle_rows
    );
    let seeded = lifecycle::seed_attempts(
        database_url,
        &bench.load.tenants,
        args.lifecycle_rows,
        end,
        args.text_bytes,
    )
    .await?;
    let mut maintenance = Vec::new();
    let mut other_deliveries = 0;
    for run in 1..=LIFECYCLE_RUNS {
        let mut plain = load_phase(
            deployment,
            bench,
            args,
            Source::Events,
            count,
            Some(pace),
            None,
        )
        .await?;
        plain.name = format!("lifecycle {run}: 50 % ({:.0}/s), no maintenance", pace.rate);
        plain.source = "lifecycle".to_owned();
        scenarios.push(plain);

        let tenant_index = u64::from(run - 1);
        let tenant_id = bench
            .load
            .tenants
            .get(usize::try_from(tenant_index)?)
            .context("the lifecycle phase erases a submission of each of the first tenants")?
            .id;
        let submission_id = bench.load.create_submission(tenant_index).await?;
        other_deliveries += 1;
        lifecycle::wait_until_delivered(
            database_url,
            tenant_id,
            submission_id,
            Duration::from_secs(args.timeout_secs),
        )
        .await?;
        lifecycle::set_payload_retention(
            database_url,
            bench
                .load
                .tenants
                .iter()
                .skip(usize::try_from(run - 1)?)
                .step_by(10)
                .map(|tenant| tenant.id),
            PAYLOAD_RETENTION_DAYS,
        )
        .await?;
        let max_days = NonZeroU32::new(SEEDED_DAYS - DAYS_DROPPED_PER_RUN * run)
            .context("retention past every seeded day")?;
        let mut steps = Vec::new();
        let work = async {
            let began = Instant::now();
            tokio::time::sleep(MAINTENANCE_DELAY).await;
            let erasure = async {
                let from = began.elapsed().as_secs_f64();
                let erasing = Instant::now();
                let answer = bench
                    .load
                    .erase_submission(tenant_index, submission_id)
                    .await?;
                anyhow::Ok(MaintenanceStep {
                    step: "erasure".to_owned(),
                    skipped: false,
                    count: answer["delivery_attempts"].as_u64().unwrap_or(0),
                    counted: "attempts rewritten".to_owned(),
                    started_after_seconds: from,
                    seconds: erasing.elapsed().as_secs_f64(),
                })
            };
            let (round, erasure) = tokio::join!(
                lifecycle::maintenance_round(database_url, max_days, began),
                erasure
            );
            steps.extend(round?);
            steps.push(erasure?);
            Ok(())
        };
        let mut maintained = load_phase(
            deployment,
            bench,
            args,
            Source::Events,
            count,
            Some(pace),
            Some(Box::pin(work)),
        )
        .await?;
        maintained.name = format!(
            "lifecycle {run}: 50 % ({:.0}/s), maintenance running",
            pace.rate
        );
        maintained.source = "lifecycle".to_owned();
        scenarios.push(maintained);
        maintenance.push((usize::try_from(run)?, steps));
    }
    let dropped = lifecycle::drop_seeded(database_url, end).await?;
    eprintln!("fp-bench: lifecycle: dropped the {dropped} seeded partitions retention left");
    Ok(LifecycleReport {
        seeded_rows: seeded.rows,
        seeded_days: SEEDED_DAYS,
        seeded_tenants: bench.load.tenants.len(),
        seeding_seconds: seeded.seconds,
        vacuum_analyze_seconds: seeded.vacuum_seconds,
        bytes_per_million_attempts: if seeded.rows > 0 {
            seeded.size.total_bytes as f64 * 1e6 / seeded.rows as f64
        } else {
            0.0
        },
        seeded_size: seeded.size,
        maintenance,
        other_deliveries,
    })
}

/// Creates the tenants, their configs and API keys straight in the database (the api's tables,
/// written the way the api writes them: the secret sealed under the deployment's master key, the
/// key stored as its hash), which takes seconds for thousands of tenants where the api would take
/// minutes through `fpctl`.
async fn seed_tenants(
    deployment: &Deployment,
    receiver: &ReceiverAddresses,
    count: u64,
) -> anyhow::Result<Vec<Tenant>> {
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
        let api_key = IssuedKey::from_random(rand::random());
        fp_store::identity::create_api_key(
            &mut conn,
            KeyOwner::Tenant(tenant_id),
            "bench",
            &api_key.hash,
            &api_key.prefix,
        )
        .await?;
        tenants.push(Tenant {
            id: tenant_id,
            url,
            api_key: api_key.key,
        });
    }
    Ok(tenants)
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
    let processes = process_figures(
        deployment,
        bench.observed.clock_ticks,
        &before,
        &after,
        Some(involved),
        operations,
    );
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
        latency: None,
    })
}

/// [`measure`] for a paced limit whose `work` returns each operation's latency in nanoseconds.
async fn measure_latencies(
    deployment: &Deployment,
    bench: &Bench,
    name: &str,
    operations: u64,
    involved: &[&str],
    work: impl std::future::Future<Output = anyhow::Result<Vec<u64>>>,
) -> anyhow::Result<LimitReport> {
    let mut latencies = Vec::new();
    let mut limit = measure(deployment, bench, name, operations, involved, async {
        latencies = work.await?;
        Ok(())
    })
    .await?;
    limit.latency = Some(Percentiles::from_ns(latencies));
    Ok(limit)
}

/// Item 3 of the issue: (a) HTTPS POSTs to the same receiver with the deliveries' body size,
/// (b) broker publish with confirms, then consume with acks, with the events' message size,
/// (c) batched inserts of attempt rows with the same body size; and, paced at the 50 % phase's
/// rate, one broker hop's latency and (d) a durable row's.
async fn measure_limits(
    deployment: &Deployment,
    bench: &Bench,
    args: &Args,
    events_max: &ScenarioReport,
) -> anyhow::Result<Vec<LimitReport>> {
    let operations = args.limit_ops.unwrap_or(args.events).max(1);
    let body_size = usize::try_from(events_max.mean_body_bytes)?.max(1);
    let tenant_id = bench.load.tenants.first().context("no tenant")?.id;
    let message_size = fp_contracts::encode_event(&Event {
        id: Uuid::now_v7(),
        tenant_id,
        occurred_at: Utc::now(),
        change: Change::SubmissionCreated {
            submission: Submission {
                id: 1,
                campaign_id: 1,
                star_rating: 4,
                text_feedback: bench.load.text.clone(),
                customer_name: Some("Bench Customer".to_owned()),
                status: SubmissionStatus::Pending,
            },
        },
    })
    .len();
    let mut limits = Vec::new();
    bench.observed.receiver_post("/reset").await?;
    let url = format!("https://{}/raw", bench.observed.receiver.https);
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
    // One hop's latency at the paced phase's rate: the broker's share of the end-to-end figure.
    let round_trip_rate = (events_max.deliveries_per_second / 2.0).max(1.0);
    let round_trips = (operations / 2).max(1);
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
        // Half of the messages acked one by one (the old yardstick, and what the dispatcher
        // does), half with multiple-acks (what log-ingest does, and the best the broker does).
        let single_acks = (operations / 2).max(1);
        let consume = measure(
            deployment,
            bench,
            "rabbitmq consume + ack",
            single_acks,
            &[LOAD, RABBITMQ],
            crate::limits::broker_consume(&bench.broker, &queue, single_acks, 256, 1),
        )
        .await?;
        let multiple_acks = operations.saturating_sub(single_acks).max(1);
        let consume_multiple = measure(
            deployment,
            bench,
            &format!("rabbitmq consume + multiple-ack ({ACKS_PER_MULTIPLE_ACK})"),
            multiple_acks,
            &[LOAD, RABBITMQ],
            crate::limits::broker_consume(
                &bench.broker,
                &queue,
                multiple_acks,
                256,
                ACKS_PER_MULTIPLE_ACK,
            ),
        )
        .await?;
        let round_trip = measure_latencies(
            deployment,
            bench,
            &format!("rabbitmq one hop at {round_trip_rate:.0}/s"),
            round_trips,
            &[LOAD, RABBITMQ],
            crate::limits::broker_round_trips(
                &bench.broker,
                &queue,
                message_size,
                round_trips,
                round_trip_rate,
            ),
        )
        .await?;
        // The attempt records' hop as the dispatcher may batch it at best: records of the
        // events' size, RECORDS_PER_MESSAGE to a message, costed per record.
        let batched_messages = (operations / RECORDS_PER_MESSAGE).max(1);
        let records = batched_messages * RECORDS_PER_MESSAGE;
        let batch_bytes = message_size * usize::try_from(RECORDS_PER_MESSAGE)?;
        let publish_batched = measure(
            deployment,
            bench,
            &format!("rabbitmq publish + confirm, {RECORDS_PER_MESSAGE} records a message"),
            records,
            &[LOAD, RABBITMQ],
            crate::limits::broker_publish(
                &bench.broker,
                &queue,
                batch_bytes,
                batched_messages,
                args.publish_window,
            ),
        )
        .await?;
        let consume_batched = measure(
            deployment,
            bench,
            &format!("rabbitmq consume + multiple-ack, {RECORDS_PER_MESSAGE} records a message"),
            records,
            &[LOAD, RABBITMQ],
            crate::limits::broker_consume(
                &bench.broker,
                &queue,
                batched_messages,
                256,
                ACKS_PER_MULTIPLE_ACK,
            ),
        )
        .await?;
        anyhow::Ok([
            publish,
            consume,
            round_trip,
            consume_multiple,
            publish_batched,
            consume_batched,
        ])
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
                tenant_id,
                body_size,
                operations,
                500,
            ),
        )
        .await?,
    );
    // A durable row's latency at the same pace as the hop: the database's share of each step
    // of the end-to-end figure that commits before it goes on.
    limits.push(
        measure_latencies(
            deployment,
            bench,
            &format!("postgresql commit at {round_trip_rate:.0}/s"),
            round_trips,
            &[LOAD, POSTGRESQL],
            crate::limits::paced_commits(
                &deployment.database_url,
                tenant_id,
                body_size,
                round_trips,
                round_trip_rate,
            ),
        )
        .await?,
    );
    crate::limits::delete_raw_rows(&deployment.database_url).await?;
    Ok(limits)
}

/// Messages a multiple-ack settles in the limits (log-ingest's batches are larger still).
const ACKS_PER_MULTIPLE_ACK: u64 = 64;

/// Attempt records a message carries in the batched limit: the dispatcher's
/// `record_batch_max` default, the most it puts in one message.
const RECORDS_PER_MESSAGE: u64 = 256;

/// The model: one event hop (a publish with confirm, a consume settled by a multiple-ack), the
/// attempt record's hop as batched as the dispatcher may batch it, one POST and one row. The
/// unbatched model before it (two hops of single messages, each acked alone) is kept beside it.
fn model_of(limits: &[LimitReport], max_phase: &ScenarioReport) -> Option<Model> {
    let cost = |name: &str| {
        limits
            .iter()
            .find(|limit| limit.name.starts_with(name))
            .map(|limit| limit.cpu_seconds_per_1000)
    };
    let endpoint_and_row = cost("https POST")? + cost("postgresql insert")?;
    let unbatched_cpu = 2.0
        * (cost("rabbitmq publish + confirm")? + cost("rabbitmq consume + ack")?)
        + endpoint_and_row;
    let model_cpu = cost("rabbitmq publish + confirm")?
        + cost("rabbitmq consume + multiple-ack (")?
        + cost("rabbitmq publish + confirm, ")?
        + cost("rabbitmq consume + multiple-ack, ")?
        + endpoint_and_row;
    let ours_cpu: f64 = max_phase
        .processes
        .iter()
        .map(|process| process.cpu_seconds_per_1000_deliveries)
        .sum();
    let cpus = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let rate_of = |cpu: f64| if cpu > 0.0 { cpus * 1000.0 / cpu } else { 0.0 };
    let model_rate = rate_of(model_cpu);
    Some(Model {
        unbatched_model_cpu_seconds_per_1000: unbatched_cpu,
        unbatched_model_deliveries_per_second: rate_of(unbatched_cpu),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_arrivals_file_is_named_after_its_phase_without_runs_of_dashes() {
        assert_eq!(
            arrivals_file_name("events: 50 % of max rate (1801/s)"),
            "events-50-of-max-rate-1801-s.csv"
        );
        assert_eq!(
            arrivals_file_name("lifecycle 1: 50 % (900/s), no maintenance"),
            "lifecycle-1-50-900-s-no-maintenance.csv"
        );
    }

    #[test]
    fn an_arrivals_file_is_never_overwritten() {
        let dir = std::env::temp_dir().join(format!("fp-bench-arrivals-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        write_arrivals(&dir, "events: paced at 40/s", &[(1, 2), (3, 4)]).expect("first write");
        let again = write_arrivals(&dir, "events: paced at 40/s", &[(5, 6)]);
        let written = std::fs::read_to_string(dir.join("events-paced-at-40-s.csv"));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            again.is_err(),
            "a second phase of the same name must not overwrite the first"
        );
        assert_eq!(
            written.expect("the file"),
            "occurred_ns,latency_ns\n1,2\n3,4\n"
        );
    }
}
