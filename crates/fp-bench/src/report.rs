//! The figures of one run: what goes to `bench/results/<timestamp>.json` and the terminal table.

use std::fmt::Write;

use serde::Serialize;

use crate::proc_stats::Machine;

/// Latency percentiles in milliseconds (nearest rank).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub samples: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    /// `values_ns` need not be sorted.
    pub fn from_ns(mut values_ns: Vec<u64>) -> Self {
        if values_ns.is_empty() {
            return Percentiles::default();
        }
        values_ns.sort_unstable();
        let rank = |p: f64| {
            let index =
                ((p * values_ns.len() as f64).ceil() as usize).clamp(1, values_ns.len()) - 1;
            values_ns[index] as f64 / 1e6
        };
        Percentiles {
            samples: values_ns.len(),
            p50_ms: rank(0.50),
            p90_ms: rank(0.90),
            p99_ms: rank(0.99),
            max_ms: rank(1.0),
        }
    }
}

/// CPU and memory of one process (or server) over one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessFigures {
    pub label: String,
    pub cpu_seconds: f64,
    pub cpu_seconds_per_1000_deliveries: f64,
    /// `VmHWM` at the end of the scenario (peak since the process started); `None` for the
    /// shared servers, whose peak says nothing about this run.
    pub peak_rss_mib: Option<f64>,
}

/// Whether every event reached the receiver and the log.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Completeness {
    pub expected: u64,
    /// Distinct expected delivery ids the receiver saw.
    pub delivered: u64,
    /// Requests beyond the first per delivery id (at-least-once redeliveries).
    pub duplicates: u64,
    /// Requests whose delivery id was not one this scenario expected.
    pub unexpected: u64,
    /// Attempts logged with their outcome during the scenario (log-ingest's rows and the first
    /// attempts the dispatchers logged themselves).
    pub logged_rows: u64,
    pub complete: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Ingest {
    /// Rows per second between the scenario's first and last inserted row (sampled).
    pub rows_per_second: f64,
    /// Largest gap between arrivals at the receiver and rows in the database seen while sampling.
    pub max_lag_rows: u64,
    /// From the last arrival until the last row was in, in milliseconds (sampling resolution).
    pub tail_lag_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub name: String,
    /// `events`, `submissions`, `backlog` or `lifecycle` (events beside maintenance, or not).
    pub source: String,
    pub events: u64,
    /// Dispatchers running at the end of the phase.
    pub dispatchers: usize,
    /// Publish rate asked for; `None` = as fast as confirms allow.
    pub target_rate_per_second: Option<f64>,
    pub publish_rate_per_second: f64,
    /// From the first event's time (the backlog: from its release) to the last arrival.
    pub duration_seconds: f64,
    pub deliveries_per_second: f64,
    /// The backlog only: from its release until every delivery arrived and every row was in.
    pub drain_seconds: Option<f64>,
    /// Event time (set just before publishing) or, for submissions, the request's send time, to
    /// arrival at the receiver.
    pub latency: Percentiles,
    /// Each delivery's first arrival as (event or send time, latency), in ns since the Unix epoch
    /// and ns, in the order the events were made; deliveries that never arrived are missing. Kept
    /// only for `--latencies-dir`, and not part of the JSON.
    #[serde(skip)]
    pub arrivals: Vec<(u64, u64)>,
    pub ingest: Ingest,
    pub completeness: Completeness,
    pub processes: Vec<ProcessFigures>,
    /// `fp_dispatcher_attempts_total` of each dispatcher during the scenario (work sharing).
    pub attempts_per_dispatcher: Vec<u64>,
    /// `fp_broker_settle_frames_total` of every dispatcher during the scenario: the ack and nack
    /// frames for its inputs (0 for builds that ack each input alone and do not count).
    pub settle_frames: u64,
    /// Inputs every dispatcher parked during the scenario (an endpoint at its cap, a host at its
    /// rate); each comes back as a parked copy, which takes its send unless its log check finds
    /// the attempt made.
    pub parked: u64,
    /// Copies that found their attempt's send taken by a twin and waited for its outcome.
    pub twin_sends_held: u64,
    /// Mean body size the receiver got.
    pub mean_body_bytes: u64,
    /// The measured window (first event to last arrival) in Unix nanoseconds, to match records
    /// taken elsewhere, such as exported spans (`bench/tools/span_breakdown.py`).
    pub window_unix_ns: [u64; 2],
}

/// One raw operation measured alone: its rate and the CPU of the processes doing it.
#[derive(Debug, Clone, Serialize)]
pub struct LimitReport {
    pub name: String,
    pub operations: u64,
    pub seconds: f64,
    pub operations_per_second: f64,
    /// CPU per 1,000 operations summed over `processes`.
    pub cpu_seconds_per_1000: f64,
    /// The processes that take part (`cpu_seconds_per_1000_deliveries` is per 1,000 operations).
    pub processes: Vec<ProcessFigures>,
    /// The paced limits' latency only: one broker hop's (publish to consume), a durable row's
    /// (falling due to commit).
    pub latency: Option<Percentiles>,
}

/// The ideal pipeline from the limits: per delivery one event hop (publish with confirm, consume
/// settled by multiple-acks), the attempt record's hop batched as the dispatcher may batch it,
/// one HTTPS POST and one inserted row, and nothing else.
#[derive(Debug, Clone, Serialize)]
pub struct Model {
    /// The model before batching (issue 17): two hops of single messages, each acked alone.
    pub unbatched_model_cpu_seconds_per_1000: f64,
    pub unbatched_model_deliveries_per_second: f64,
    pub model_cpu_seconds_per_1000: f64,
    /// Every measured process in the max-rate phase, per 1,000 deliveries.
    pub ours_cpu_seconds_per_1000: f64,
    /// Ours divided by the model (target <= 1.5).
    pub cpu_multiple: f64,
    /// What the model allows on this machine if CPU is the limit: CPUs / model CPU per delivery.
    pub model_deliveries_per_second: f64,
    pub ours_deliveries_per_second: f64,
    /// Ours divided by the model's (target >= 0.6).
    pub throughput_share: f64,
}

/// On-disk size of a set of `delivery_attempts` partitions.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableSize {
    pub partitions: usize,
    /// PostgreSQL's estimate after ANALYZE (`reltuples`).
    pub estimated_rows: u64,
    /// `pg_total_relation_size`: heap, TOAST and indexes.
    pub total_bytes: u64,
    /// `pg_table_size`: heap and TOAST.
    pub heap_bytes: u64,
    /// `pg_indexes_size`.
    pub index_bytes: u64,
}

/// One maintenance step of a lifecycle run, or the erasure through the api.
#[derive(Debug, Clone, Serialize)]
pub struct MaintenanceStep {
    /// `partition_create`, `partition_drop`, `payload_clear` (`fp_store::maintenance::Step`) or
    /// `erasure`.
    pub step: String,
    /// Another runner held the step's lock, so it did nothing.
    pub skipped: bool,
    pub count: u64,
    /// What `count` counts: `partitions dropped`, `payloads cleared`, `attempts rewritten`.
    pub counted: String,
    /// From the start of the phase's load.
    pub started_after_seconds: f64,
    pub seconds: f64,
}

/// The lifecycle phase: a month of seeded attempts, then the events load at half the max rate
/// without and with maintenance (the phases themselves are in `scenarios`).
#[derive(Debug, Clone, Serialize)]
pub struct LifecycleReport {
    pub seeded_rows: u64,
    pub seeded_days: u32,
    pub seeded_tenants: usize,
    pub seeding_seconds: f64,
    pub vacuum_analyze_seconds: f64,
    pub seeded_size: TableSize,
    /// `seeded_size.total_bytes` per 1,000,000 seeded attempts.
    pub bytes_per_million_attempts: f64,
    /// Per maintained run (1-based), its steps.
    pub maintenance: Vec<(usize, Vec<MaintenanceStep>)>,
    /// Deliveries outside the phases' loads: the submissions created to be erased.
    pub other_deliveries: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSettings {
    pub profile: String,
    pub smoke: bool,
    pub events: u64,
    pub submissions: u64,
    pub backlog_events: u64,
    pub tenants: u64,
    pub dispatchers: usize,
    pub scale_out_dispatchers: usize,
    pub text_bytes: usize,
    pub publish_window: usize,
    pub api_window: usize,
    /// Attempts seeded for the lifecycle phase; 0 when it did not run.
    pub lifecycle_rows: u64,
}

/// Final check of the database against everything published.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LogCheck {
    pub expected: u64,
    pub rows: u64,
    pub distinct_deliveries: u64,
    pub rows_with_200: u64,
    pub complete: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub started_at: String,
    pub machine: Machine,
    pub settings: RunSettings,
    pub scenarios: Vec<ScenarioReport>,
    pub log_check: LogCheck,
    /// The raw limits (empty with `--skip-limits`).
    pub limits: Vec<LimitReport>,
    pub model: Option<Model>,
    pub lifecycle: Option<LifecycleReport>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn complete(&self) -> bool {
        self.log_check.complete
            && self
                .scenarios
                .iter()
                .all(|scenario| scenario.completeness.complete)
    }

    /// The terminal table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let s = &self.settings;
        let _ = writeln!(
            out,
            "fp-bench {} | {} ({} CPUs, {} MiB, Linux {}) | profile {} | {} tenants{}",
            self.started_at,
            m.cpu_model,
            m.cpus,
            m.memory_mib,
            m.kernel,
            s.profile,
            s.tenants,
            if s.smoke {
                " | SMOKE (figures meaningless)"
            } else {
                ""
            }
        );
        let _ = writeln!(out, "kernel writeback: {}", m.writeback);
        for scenario in &self.scenarios {
            let c = &scenario.completeness;
            let l = &scenario.latency;
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "== {} ({} events{}) ==",
                scenario.name,
                scenario.events,
                scenario
                    .target_rate_per_second
                    .map(|rate| format!(", paced at {rate:.0}/s"))
                    .unwrap_or_default()
            );
            let _ = writeln!(
                out,
                "  deliveries/s {:>10.1}   publish/s {:>10.1}   duration {:>8.2} s",
                scenario.deliveries_per_second,
                scenario.publish_rate_per_second,
                scenario.duration_seconds
            );
            if let Some(drain) = scenario.drain_seconds {
                let _ = writeln!(
                    out,
                    "  drained in {drain:.2} s from the release (queued at {:.1}/s)",
                    scenario.publish_rate_per_second
                );
            }
            let _ = writeln!(
                out,
                "  e2e latency ms  p50 {:>8.2}  p90 {:>8.2}  p99 {:>8.2}  max {:>8.2}  (n={})",
                l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms, l.samples
            );
            let _ = writeln!(
                out,
                "  rows logged/s {:>14.1}   max lag {} rows   tail lag {:.0} ms",
                scenario.ingest.rows_per_second,
                scenario.ingest.max_lag_rows,
                scenario.ingest.tail_lag_ms
            );
            let _ = writeln!(
                out,
                "  arrived {}/{} (duplicates {}, unexpected {}), logged {}: {}",
                c.delivered,
                c.expected,
                c.duplicates,
                c.unexpected,
                c.logged_rows,
                if c.complete { "complete" } else { "INCOMPLETE" }
            );
            if !scenario.attempts_per_dispatcher.is_empty() {
                let _ = writeln!(
                    out,
                    "  attempts per dispatcher: {:?}; input ack frames: {}; parked: {}; twin sends held: {}",
                    scenario.attempts_per_dispatcher,
                    scenario.settle_frames,
                    scenario.parked,
                    scenario.twin_sends_held
                );
            }
            let _ = writeln!(
                out,
                "  {:<24} {:>10} {:>16} {:>14}",
                "process", "CPU s", "CPU s/1000 del.", "peak RSS MiB"
            );
            for process in &scenario.processes {
                let _ = writeln!(
                    out,
                    "  {:<24} {:>10.2} {:>16.3} {:>14}",
                    process.label,
                    process.cpu_seconds,
                    process.cpu_seconds_per_1000_deliveries,
                    process
                        .peak_rss_mib
                        .map(|mib| format!("{mib:.1}"))
                        .unwrap_or_else(|| "-".to_owned())
                );
            }
        }
        if !self.limits.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "== limits (same receiver, broker, database) ==");
            let _ = writeln!(
                out,
                "  {:<34} {:>9} {:>12} {:>16}",
                "operation", "ops", "ops/s", "CPU s/1000 ops"
            );
            for limit in &self.limits {
                let _ = writeln!(
                    out,
                    "  {:<34} {:>9} {:>12.1} {:>16.3}",
                    limit.name,
                    limit.operations,
                    limit.operations_per_second,
                    limit.cpu_seconds_per_1000
                );
                if let Some(l) = &limit.latency {
                    let _ = writeln!(
                        out,
                        "    latency ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  (n={})",
                        l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms, l.samples
                    );
                }
            }
        }
        if let Some(model) = &self.model {
            let _ = writeln!(
                out,
                "  model CPU s/1000 deliveries {:.3}; ours {:.3} = {:.2}x the model \
                 (unbatched model {:.3}, {:.1} deliveries/s)",
                model.model_cpu_seconds_per_1000,
                model.ours_cpu_seconds_per_1000,
                model.cpu_multiple,
                model.unbatched_model_cpu_seconds_per_1000,
                model.unbatched_model_deliveries_per_second
            );
            let _ = writeln!(
                out,
                "  model deliveries/s {:.1}; ours {:.1} = {:.0} % of the model",
                model.model_deliveries_per_second,
                model.ours_deliveries_per_second,
                model.throughput_share * 100.0
            );
        }
        if let Some(lifecycle) = &self.lifecycle {
            lifecycle_table(&mut out, lifecycle, &self.scenarios);
        }
        let check = &self.log_check;
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "database: {} rows, {} distinct deliveries, {} answered 200, of {} expected: {}",
            check.rows,
            check.distinct_deliveries,
            check.rows_with_200,
            check.expected,
            if check.complete {
                "complete"
            } else {
                "INCOMPLETE"
            }
        );
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }
}

/// The lifecycle section: seeding and disk, the runs without and with maintenance side by side,
/// and what each maintenance step took.
fn lifecycle_table(out: &mut String, lifecycle: &LifecycleReport, scenarios: &[ScenarioReport]) {
    const MIB: f64 = 1024.0 * 1024.0;
    let size = &lifecycle.seeded_size;
    let _ = writeln!(out);
    let _ = writeln!(out, "== lifecycle ==");
    let _ = writeln!(
        out,
        "  seeded {} attempts over {} days ({} partitions, {} tenants) in {:.1} s ({:.0} rows/s); VACUUM ANALYZE {:.1} s",
        lifecycle.seeded_rows,
        lifecycle.seeded_days,
        size.partitions,
        lifecycle.seeded_tenants,
        lifecycle.seeding_seconds,
        if lifecycle.seeding_seconds > 0.0 {
            lifecycle.seeded_rows as f64 / lifecycle.seeding_seconds
        } else {
            0.0
        },
        lifecycle.vacuum_analyze_seconds
    );
    let _ = writeln!(
        out,
        "  disk: {:.1} MiB ({:.1} heap + TOAST, {:.1} indexes) = {:.1} MiB per million attempts",
        size.total_bytes as f64 / MIB,
        size.heap_bytes as f64 / MIB,
        size.index_bytes as f64 / MIB,
        lifecycle.bytes_per_million_attempts / MIB
    );
    let _ = writeln!(
        out,
        "  {:<58} {:>9} {:>12} {:>10} {:>9} {:>9} {:>9}",
        "run", "deliv./s", "ingest rows/s", "max lag", "tail ms", "p50 ms", "p99 ms"
    );
    for scenario in scenarios.iter().filter(|s| s.source == "lifecycle") {
        let _ = writeln!(
            out,
            "  {:<58} {:>9.1} {:>12.1} {:>10} {:>9.0} {:>9.2} {:>9.2}",
            scenario.name,
            scenario.deliveries_per_second,
            scenario.ingest.rows_per_second,
            scenario.ingest.max_lag_rows,
            scenario.ingest.tail_lag_ms,
            scenario.latency.p50_ms,
            scenario.latency.p99_ms
        );
    }
    for (run, steps) in &lifecycle.maintenance {
        for step in steps {
            let _ = writeln!(
                out,
                "  run {run} {:<18} {:>10} {:<20} started at {:>7.2} s, took {:>8.3} s{}",
                step.step,
                step.count,
                step.counted,
                step.started_after_seconds,
                step.seconds,
                if step.skipped {
                    " (SKIPPED: lock held)"
                } else {
                    ""
                }
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<u64> = (1..=100).map(|ms| ms * 1_000_000).collect();
        let p = Percentiles::from_ns(values);
        assert_eq!(p.samples, 100);
        assert_eq!(p.p50_ms, 50.0);
        assert_eq!(p.p90_ms, 90.0);
        assert_eq!(p.p99_ms, 99.0);
        assert_eq!(p.max_ms, 100.0);
        assert_eq!(Percentiles::from_ns(Vec::new()).samples, 0);
        assert_eq!(Percentiles::from_ns(vec![7_000_000]).p50_ms, 7.0);
    }
}
