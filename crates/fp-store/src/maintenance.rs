//! Maintenance steps as one unit of work each: taken under the step's advisory lock
//! ([`crate::advisory_lock`]), timed, logged and counted the same way whoever runs them: the
//! services' maintenance loops (each for the tables it owns) and `fpctl maintenance run`.

use std::pin::Pin;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use diesel_async::AsyncPgConnection;
use tokio::sync::watch;

use crate::StoreError;
use crate::advisory_lock::{LockedWork, MaintenanceLock, try_with_lock};
use crate::outbox::{self, PruneBatches};
use crate::partitions::PartitionPolicy;
use crate::{erasure, payload_retention};

/// A service's maintenance loop: `round` now and then every `interval` until `stop` turns true; a
/// round under way is abandoned then (every step commits in small transactions, so nothing is left
/// half done). Each round opens a connection of its own, so the session locks its steps take go
/// with that connection if the round is cut short, never back into a pool.
pub async fn run_rounds<F>(
    database_url: &str,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
    round: F,
) where
    F: for<'c> Fn(&'c mut AsyncPgConnection) -> Pin<Box<dyn Future<Output = ()> + Send + 'c>>,
{
    let one_round = async || match crate::connect(database_url).await {
        Ok(mut conn) => round(&mut conn).await,
        Err(error) => {
            tracing::warn!(%error, "maintenance round skipped: no database connection");
        }
    };
    loop {
        tokio::select! {
            () = one_round() => {}
            _ = stop.wait_for(|stopping| *stopping) => return,
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|stopping| *stopping) => return,
        }
    }
}

/// A maintenance step: its name in logs and in the `step` label of the `fp_maintenance_*`
/// metrics, the lock it runs under, and what it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Published outbox rows past their grace period removed (fp-api).
    OutboxPrune,
    /// `submission_events` rows removed once their events' attempts can no longer exist (fp-api).
    SubmissionEventsPrune,
    /// Attempts' bodies and headers past their tenant's payload retention cleared.
    PayloadClear,
    /// `delivery_attempts` partitions made ahead of time (fp-log-ingest).
    PartitionCreate,
    /// `delivery_attempts` partitions past `retention.max_days` dropped (fp-log-ingest).
    PartitionDrop,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::OutboxPrune => "outbox_prune",
            Step::SubmissionEventsPrune => "submission_events_prune",
            Step::PayloadClear => "payload_clear",
            Step::PartitionCreate => "partition_create",
            Step::PartitionDrop => "partition_drop",
        }
    }

    fn lock(self) -> MaintenanceLock {
        match self {
            Step::OutboxPrune => MaintenanceLock::OutboxPruning,
            Step::SubmissionEventsPrune => MaintenanceLock::SubmissionEventsPruning,
            Step::PayloadClear => MaintenanceLock::PayloadRetention,
            Step::PartitionCreate | Step::PartitionDrop => MaintenanceLock::AttemptPartitions,
        }
    }

    /// The counter of what a run did, labelled by step.
    fn counter(self) -> &'static str {
        match self {
            Step::OutboxPrune | Step::SubmissionEventsPrune => "fp_maintenance_rows_removed_total",
            Step::PayloadClear => "fp_maintenance_payloads_cleared_total",
            Step::PartitionCreate => "fp_maintenance_partitions_created_total",
            Step::PartitionDrop => "fp_maintenance_partitions_dropped_total",
        }
    }

    /// What a run's count is, in words: `12 rows removed`.
    pub fn counted(self) -> &'static str {
        match self {
            Step::OutboxPrune | Step::SubmissionEventsPrune => "rows removed",
            Step::PayloadClear => "payloads cleared",
            Step::PartitionCreate => "partitions created",
            Step::PartitionDrop => "partitions dropped",
        }
    }
}

/// What one run of a step did.
#[derive(Debug)]
pub struct StepReport {
    pub step: Step,
    /// `Ok(Some(count))`: done, `count` as [`Step::counted`] says; `Ok(None)`: skipped, since another
    /// runner held the step's lock; `Err`: failed (nothing is left half done: every step commits
    /// as it goes and starts again where it stopped).
    pub outcome: Result<Option<u64>, StoreError>,
    pub duration: Duration,
}

impl StepReport {
    /// The outcome as the `outcome` label and an operator reads it.
    pub fn outcome_name(&self) -> &'static str {
        match self.outcome {
            Ok(Some(_)) => "done",
            Ok(None) => "skipped",
            Err(_) => "failed",
        }
    }

    /// Logs the run and records it: `fp_maintenance_runs_total{step,outcome}`, and for a run that
    /// did its work the step's counter and `fp_maintenance_step_duration_seconds{step}`.
    fn record(&self) {
        let step = self.step.name();
        let duration_ms = self.duration.as_millis() as u64;
        match &self.outcome {
            Ok(Some(rows)) => {
                tracing::info!(
                    step,
                    count = rows,
                    counted = self.step.counted(),
                    duration_ms,
                    "maintenance step done"
                );
                metrics::counter!(self.step.counter(), "step" => step).increment(*rows);
                metrics::histogram!("fp_maintenance_step_duration_seconds", "step" => step)
                    .record(self.duration.as_secs_f64());
            }
            Ok(None) => {
                tracing::info!(
                    step,
                    "maintenance step skipped: another runner holds its lock"
                );
            }
            Err(error) => {
                tracing::warn!(step, %error, duration_ms, "maintenance step failed");
            }
        }
        metrics::counter!(
            "fp_maintenance_runs_total",
            "step" => step,
            "outcome" => self.outcome_name(),
        )
        .increment(1);
    }
}

/// Runs `work` as `step`: under its lock on `conn` (a connection of the caller's own, not a
/// pooled one: see [`try_with_lock`]), then logs and records what it did.
pub async fn run_step<F>(conn: &mut AsyncPgConnection, step: Step, work: F) -> StepReport
where
    F: for<'c> FnOnce(&'c mut AsyncPgConnection) -> LockedWork<'c, u64, StoreError>,
{
    let started = Instant::now();
    let outcome = try_with_lock(conn, step.lock(), work).await;
    let report = StepReport {
        step,
        outcome,
        duration: started.elapsed(),
    };
    report.record();
    report
}

/// Outbox pruning: removes the rows published more than `grace` before `now`, in `batches`.
pub async fn prune_outbox(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
    grace: TimeDelta,
    batches: PruneBatches,
) -> StepReport {
    // A grace reaching past the calendar's start keeps every row.
    let published_before = now
        .checked_sub_signed(grace)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    run_step(conn, Step::OutboxPrune, |conn| {
        Box::pin(async move { outbox::prune_published(conn, published_before, batches).await })
    })
    .await
}

/// `submission_events` pruning: removes the rows of events created more than `retention` before
/// `now` (`Settings::submission_event_retention`: by then none of their attempts is left), in
/// `batches`.
pub async fn prune_submission_events(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
    retention: TimeDelta,
    batches: PruneBatches,
) -> StepReport {
    // A retention reaching past the calendar's start keeps every row.
    let created_before = now
        .checked_sub_signed(retention)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    run_step(conn, Step::SubmissionEventsPrune, |conn| {
        Box::pin(
            async move { erasure::prune_submission_events(conn, created_before, batches).await },
        )
    })
    .await
}

/// Attempts per statement of payload clearing: each a short transaction beside log-ingest's inserts.
const PAYLOAD_CLEAR_BATCH_ROWS: i64 = 1_000;

/// Payload clearing: the bodies and headers of attempts past their tenant's payload retention at
/// `now` ([`crate::payload_retention::clear_expired_payloads`]).
pub async fn clear_payloads(conn: &mut AsyncPgConnection, now: DateTime<Utc>) -> StepReport {
    run_step(conn, Step::PayloadClear, |conn| {
        Box::pin(async move {
            payload_retention::clear_expired_payloads(conn, now, PAYLOAD_CLEAR_BATCH_ROWS).await
        })
    })
    .await
}

/// Partition creation: the `delivery_attempts` partitions of today through `policy.days_ahead`
/// days after `now` that are missing ([`PartitionPolicy::create_ahead`]).
pub async fn create_partitions(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
    policy: PartitionPolicy,
) -> StepReport {
    run_step(conn, Step::PartitionCreate, |conn| {
        Box::pin(async move {
            let created = policy.create_ahead(conn, now).await?;
            if !created.is_empty() {
                tracing::info!(partitions = ?created, "delivery_attempts partitions created");
            }
            Ok(created.len() as u64)
        })
    })
    .await
}

/// Retention: drops the `delivery_attempts` partitions wholly older than `policy.max_days`
/// before `now` ([`PartitionPolicy::drop_expired`]), never deleting row by row.
pub async fn drop_partitions(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
    policy: PartitionPolicy,
) -> StepReport {
    run_step(conn, Step::PartitionDrop, |conn| {
        Box::pin(async move {
            let dropped = policy.drop_expired(conn, now).await?;
            if !dropped.is_empty() {
                tracing::info!(partitions = ?dropped, "delivery_attempts partitions dropped");
            }
            Ok(dropped.len() as u64)
        })
    })
    .await
}
