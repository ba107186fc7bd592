//! Measuring one phase: what every process spent, how the log kept up, and when each expected
//! delivery first reached the receiver.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fp_testkit::pipeline::metric;

use crate::arrivals::{self, ReceiverAddresses, ReceiverStats, now_ns};
use crate::deployment::Deployment;
use crate::proc_stats::{self, Placement};
use crate::report::{Completeness, Ingest, Percentiles, ProcessFigures, ScenarioReport};

const ROWS_INSERTED: &str = "fp_log_ingest_rows_inserted_total";
/// First attempts' outcomes the dispatchers logged themselves (absent from builds before that).
const OUTCOMES_LOGGED: &str = "fp_dispatcher_outcomes_logged_total";
const ATTEMPTS: &str = "fp_dispatcher_attempts_total";
/// The dispatchers' ack and nack frames (absent from builds before coalesced acks).
const SETTLE_FRAMES: &str = "fp_broker_settle_frames_total";
/// Inputs parked at an endpoint's cap or a host's rate (each comes back as a parked copy).
const PARKED: [&str; 2] = [
    "fp_dispatcher_deferred_total",
    "fp_dispatcher_host_rate_deferred_total",
];
/// Copies that found their attempt's send taken by a twin.
const TWIN_SENDS_HELD: &str = "fp_dispatcher_twin_sends_held_total";

/// The receiver's control port and the metrics of log-ingest and the dispatchers: where a phase
/// reads its progress.
#[derive(Clone)]
pub struct Observed {
    pub receiver: ReceiverAddresses,
    pub log_ingest_health: SocketAddr,
    /// The running dispatchers' health addresses, as of the last [`Observed::track_dispatchers`].
    pub dispatchers: Arc<Mutex<Vec<SocketAddr>>>,
    pub control: reqwest::Client,
    pub clock_ticks: f64,
}

impl Observed {
    /// `GET <path>` on the receiver's control port.
    async fn receiver_get(&self, path: &str) -> anyhow::Result<bytes::Bytes> {
        Ok(self
            .control
            .get(format!("http://{}{path}", self.receiver.control))
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?)
    }

    pub async fn receiver_stats(&self) -> anyhow::Result<ReceiverStats> {
        Ok(serde_json::from_slice(&self.receiver_get("/stats").await?)?)
    }

    /// `POST /reset`, `/down` or `/up` on the receiver's control port.
    pub async fn receiver_post(&self, path: &str) -> anyhow::Result<()> {
        self.control
            .post(format!("http://{}{path}", self.receiver.control))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    async fn receiver_arrivals(&self) -> anyhow::Result<Vec<arrivals::Arrival>> {
        Ok(arrivals::decode(&self.receiver_get("/arrivals").await?)?)
    }

    /// Reads which dispatchers run now; call it after starting some while a probe runs.
    pub fn track_dispatchers(&self, deployment: &Deployment) {
        let running = dispatcher_health(deployment);
        *self
            .dispatchers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = running;
    }

    /// Attempts logged with their outcome: log-ingest's rows and the first attempts the
    /// dispatchers logged themselves. Only grows while a probe runs, as long as no dispatcher
    /// stops meanwhile (one started counts from 0).
    async fn rows_logged(&self) -> anyhow::Result<u64> {
        let dispatchers = self
            .dispatchers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut logged = metric(self.log_ingest_health, ROWS_INSERTED).await?;
        for health in dispatchers {
            logged += metric(health, OUTCOMES_LOGGED).await?;
        }
        Ok(logged)
    }
}

/// CPU ticks of every measured process at one moment, by label.
pub type CpuSnapshot = Vec<(String, u64)>;

pub fn cpu_snapshot(deployment: &Deployment) -> CpuSnapshot {
    let mut snapshot: CpuSnapshot = deployment
        .services
        .iter()
        .map(|service| {
            let ticks = proc_stats::cpu_ticks(service.pid).unwrap_or_default();
            (service.label.clone(), ticks.own)
        })
        .collect();
    snapshot.push((
        crate::LOAD.to_owned(),
        proc_stats::cpu_ticks(std::process::id())
            .map(|ticks| ticks.own)
            .unwrap_or(0),
    ));
    snapshot.push((
        crate::RABBITMQ.to_owned(),
        proc_stats::server_ticks("beam.smp", Placement::Host),
    ));
    // Only while the cluster phase's nodes run: a phase measures them from its start.
    let cluster = proc_stats::server_ticks("beam.smp", Placement::Container);
    if cluster > 0 {
        snapshot.push((crate::RABBITMQ_CLUSTER.to_owned(), cluster));
    }
    snapshot.push((
        crate::POSTGRESQL.to_owned(),
        proc_stats::server_ticks("postgres", Placement::Host),
    ));
    snapshot
}

/// CPU between two snapshots, per 1,000 operations, of the processes in `after` (all of them, or
/// those named in `involved`). A process started in between counts from its start; one stopped in
/// between is left out.
pub fn process_figures(
    deployment: &Deployment,
    clock_ticks: f64,
    before: &CpuSnapshot,
    after: &CpuSnapshot,
    involved: Option<&[&str]>,
    operations: u64,
) -> Vec<ProcessFigures> {
    after
        .iter()
        .filter(|(label, _)| involved.is_none_or(|names| names.contains(&label.as_str())))
        .map(|(label, after)| {
            let before = before
                .iter()
                .find(|(earlier, _)| earlier == label)
                .map_or(0, |(_, ticks)| *ticks);
            let cpu_seconds = after.saturating_sub(before) as f64 / clock_ticks;
            ProcessFigures {
                label: label.clone(),
                cpu_seconds,
                cpu_seconds_per_1000_deliveries: if operations > 0 {
                    cpu_seconds * 1000.0 / operations as f64
                } else {
                    0.0
                },
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

/// One sample of progress while a phase runs.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at_ns: u64,
    arrivals: u64,
    rows: u64,
}

/// What a phase produced, for [`Probe::finish`].
pub struct PhaseLoad {
    pub name: String,
    /// `events`, `submissions` or `backlog`.
    pub source: &'static str,
    /// Rate asked for; `None` = as fast as possible.
    pub rate: Option<f64>,
    /// Time of each expected delivery's event, by delivery id.
    pub expected: HashMap<u128, u64>,
    /// How long producing the load took.
    pub produce_seconds: f64,
    /// Throughput counts from here instead of from the first event (the backlog's release).
    pub measured_from_ns: Option<u64>,
    pub timeout: Duration,
    /// Whether the report keeps each first arrival (`--latencies-dir`); a million-event phase
    /// would otherwise hold 16 MB for nothing.
    pub keep_arrivals: bool,
}

/// Counters read at the start of a phase, and a sampler of progress while it runs.
pub struct Probe {
    rows_before: u64,
    /// Each dispatcher's counters (`DispatcherCounters`) when the scenario began.
    dispatchers_before: Vec<(SocketAddr, DispatcherCounters)>,
    cpu_before: CpuSnapshot,
    sampling: Arc<AtomicBool>,
    sampler: tokio::task::JoinHandle<Vec<Sample>>,
}

/// A dispatcher's counters that a scenario reports as its differences.
#[derive(Debug, Clone, Copy, Default)]
struct DispatcherCounters {
    attempts: u64,
    settle_frames: u64,
    parked: u64,
    twin_sends_held: u64,
}

impl DispatcherCounters {
    async fn read(health: SocketAddr) -> anyhow::Result<Self> {
        let text = fp_testkit::pipeline::metrics_text(health).await?;
        let count = |name| fp_testkit::pipeline::sum_of_series(&text, name).round() as u64;
        Ok(DispatcherCounters {
            attempts: count(ATTEMPTS),
            settle_frames: count(SETTLE_FRAMES),
            parked: PARKED.into_iter().map(count).sum(),
            twin_sends_held: count(TWIN_SENDS_HELD),
        })
    }

    fn since(self, before: Self) -> Self {
        DispatcherCounters {
            attempts: self.attempts.saturating_sub(before.attempts),
            settle_frames: self.settle_frames.saturating_sub(before.settle_frames),
            parked: self.parked.saturating_sub(before.parked),
            twin_sends_held: self.twin_sends_held.saturating_sub(before.twin_sends_held),
        }
    }
}

fn dispatcher_health(deployment: &Deployment) -> Vec<SocketAddr> {
    deployment
        .services_of("fp-dispatcher")
        .filter_map(|service| service.health)
        .collect()
}

impl Probe {
    /// Resets the receiver's record and starts sampling (every 50 ms) for the logging rate
    /// and lag.
    pub async fn start(deployment: &Deployment, observed: &Observed) -> anyhow::Result<Probe> {
        observed.track_dispatchers(deployment);
        let rows_before = observed.rows_logged().await?;
        let mut dispatchers_before = Vec::new();
        for health in dispatcher_health(deployment) {
            dispatchers_before.push((health, DispatcherCounters::read(health).await?));
        }
        let cpu_before = cpu_snapshot(deployment);
        let sampling = Arc::new(AtomicBool::new(true));
        let sampler = {
            let sampling = sampling.clone();
            let observed = observed.clone();
            tokio::spawn(async move {
                let mut samples = Vec::new();
                while sampling.load(Ordering::Relaxed) {
                    let progress = async {
                        let stats = observed.receiver_stats().await?;
                        anyhow::Ok((stats.requests, observed.rows_logged().await?))
                    }
                    .await;
                    if let Ok((arrivals, rows)) = progress {
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
        Ok(Probe {
            rows_before,
            dispatchers_before,
            cpu_before,
            sampling,
            sampler,
        })
    }

    /// Waits until every expected delivery arrived and was logged with its outcome (or the
    /// timeout), then computes the phase's figures.
    pub async fn finish(
        self,
        deployment: &Deployment,
        observed: &Observed,
        load: PhaseLoad,
    ) -> anyhow::Result<ScenarioReport> {
        let events = load.expected.len() as u64;
        let deadline = tokio::time::Instant::now() + load.timeout;
        // When the counters first showed every row logged (this loop polls faster than the
        // sampler).
        let mut rows_done_ns = None;
        let (arrived, rows) = loop {
            let stats = observed.receiver_stats().await?;
            let rows = observed
                .rows_logged()
                .await?
                .saturating_sub(self.rows_before);
            if rows >= events && rows_done_ns.is_none() {
                rows_done_ns = Some(now_ns());
            }
            if stats.requests >= events && rows >= events {
                let arrived = observed.receiver_arrivals().await?;
                if distinct_expected(&arrived, &load.expected) == events {
                    break (arrived, rows);
                }
            }
            if tokio::time::Instant::now() > deadline {
                eprintln!(
                    "fp-bench: {}: timed out with {} requests and {rows} rows of {events}",
                    load.name, stats.requests
                );
                break (observed.receiver_arrivals().await?, rows);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let cpu_after = cpu_snapshot(deployment);
        let final_stats = observed.receiver_stats().await?;
        self.sampling.store(false, Ordering::Relaxed);
        let samples = self.sampler.await.unwrap_or_default();
        let mut attempts_per_dispatcher = Vec::new();
        let mut settle_frames = 0;
        let mut parked = 0;
        let mut twin_sends_held = 0;
        for health in dispatcher_health(deployment) {
            let before = self
                .dispatchers_before
                .iter()
                .find(|(earlier, _)| *earlier == health)
                .map_or_else(DispatcherCounters::default, |(_, counters)| *counters);
            let during = DispatcherCounters::read(health).await?.since(before);
            attempts_per_dispatcher.push(during.attempts);
            settle_frames += during.settle_frames;
            parked += during.parked;
            twin_sends_held += during.twin_sends_held;
        }

        let first = first_arrivals(&arrived, &load.expected);
        // (event or send time, latency) of each delivery that arrived.
        let timed = || {
            first.arrival.iter().filter_map(|(delivery, arrived)| {
                let occurred = load.expected.get(delivery)?;
                Some((*occurred, arrived.saturating_sub(*occurred)))
            })
        };
        let latencies: Vec<u64> = timed().map(|(_, latency)| latency).collect();
        let arrivals = if load.keep_arrivals {
            let mut arrivals: Vec<(u64, u64)> = timed().collect();
            arrivals.sort_unstable();
            arrivals
        } else {
            Vec::new()
        };
        let first_event_ns = load.expected.values().copied().min().unwrap_or(0);
        let from_ns = load.measured_from_ns.unwrap_or(first_event_ns);
        let last_arrival_ns = first.arrival.values().copied().max().unwrap_or(from_ns);
        let duration_seconds = last_arrival_ns.saturating_sub(from_ns) as f64 / 1e9;
        let delivered = first.arrival.len() as u64;
        Ok(ScenarioReport {
            name: load.name,
            source: load.source.to_owned(),
            events,
            target_rate_per_second: load.rate,
            publish_rate_per_second: if load.produce_seconds > 0.0 {
                events as f64 / load.produce_seconds
            } else {
                0.0
            },
            dispatchers: attempts_per_dispatcher.len(),
            duration_seconds,
            deliveries_per_second: if duration_seconds > 0.0 {
                delivered as f64 / duration_seconds
            } else {
                0.0
            },
            drain_seconds: load.measured_from_ns.and_then(|from| {
                rows_done_ns.map(|done| done.max(last_arrival_ns).saturating_sub(from) as f64 / 1e9)
            }),
            latency: Percentiles::from_ns(latencies),
            arrivals,
            ingest: ingest_figures(&samples, rows, rows_done_ns, last_arrival_ns),
            completeness: Completeness {
                expected: events,
                delivered,
                duplicates: first.duplicates,
                unexpected: first.unexpected,
                logged_rows: rows,
                complete: delivered == events && rows >= events,
            },
            processes: process_figures(
                deployment,
                observed.clock_ticks,
                &self.cpu_before,
                &cpu_after,
                None,
                delivered,
            ),
            attempts_per_dispatcher,
            settle_frames,
            parked,
            twin_sends_held,
            mean_body_bytes: final_stats
                .body_bytes
                .checked_div(final_stats.requests)
                .unwrap_or(0),
            window_unix_ns: [from_ns, last_arrival_ns],
        })
    }
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

struct FirstArrivals {
    arrival: HashMap<u128, u64>,
    /// Arrivals of an already seen delivery id (at-least-once redeliveries).
    duplicates: u64,
    /// Arrivals of ids the phase did not expect.
    unexpected: u64,
}

/// The first arrival of each expected delivery: its latency counts; later ones are duplicates.
fn first_arrivals(arrived: &[arrivals::Arrival], expected: &HashMap<u128, u64>) -> FirstArrivals {
    let mut first = FirstArrivals {
        arrival: HashMap::with_capacity(expected.len()),
        duplicates: 0,
        unexpected: 0,
    };
    for arrival in arrived {
        if !expected.contains_key(&arrival.delivery_id) {
            first.unexpected += 1;
            continue;
        }
        first
            .arrival
            .entry(arrival.delivery_id)
            .and_modify(|earliest| {
                first.duplicates += 1;
                *earliest = (*earliest).min(arrival.arrived_at_ns);
            })
            .or_insert(arrival.arrived_at_ns);
    }
    first
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
