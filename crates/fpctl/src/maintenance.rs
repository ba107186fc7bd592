//! `fpctl maintenance run`: every maintenance step once, each under the advisory lock the
//! services' loops take (`fp_store::maintenance`), so a step a service is doing right now is
//! skipped, not done twice. Prints a line per step; exits 1 when a step failed.

use std::process::ExitCode;

use anyhow::Context;
use chrono::{TimeDelta, Utc};
use fp_settings::{ExposeSecret, Settings};
use fp_store::maintenance::{self, StepReport};
use fp_store::outbox::PruneBatches;
use fp_store::partitions::PartitionPolicy;

pub async fn run(settings: &Settings) -> anyhow::Result<ExitCode> {
    let outbox_grace = TimeDelta::from_std(settings.retention.outbox_grace())
        .context("retention.outbox_grace_hours is out of range")?;
    let submission_event_retention = TimeDelta::from_std(settings.submission_event_retention())
        .context("retention.max_days or dispatcher.retry_schedule is out of range")?;
    // A connection of its own: the session locks go with it, whatever happens.
    let mut conn = fp_store::connect(settings.database.url.expose_secret()).await?;
    let now = Utc::now();
    let partitions = PartitionPolicy {
        partition_days: settings.retention.partition_days,
        days_ahead: settings.retention.days_ahead,
        max_days: settings.retention.max_days,
    };
    let reports = [
        maintenance::create_partitions(&mut conn, now, partitions).await,
        maintenance::drop_partitions(&mut conn, now, partitions).await,
        maintenance::clear_payloads(&mut conn, now).await,
        maintenance::prune_outbox(&mut conn, now, outbox_grace, PruneBatches::STANDARD).await,
        maintenance::prune_submission_events(
            &mut conn,
            now,
            submission_event_retention,
            PruneBatches::STANDARD,
        )
        .await,
    ];
    for report in &reports {
        println!("{}", describe(report));
    }
    Ok(if reports.iter().any(|report| report.outcome.is_err()) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `outbox_prune: done, 12 rows removed in 35 ms`, `...: skipped, ...` or `...: failed: <why>`.
fn describe(report: &StepReport) -> String {
    let step = report.step.name();
    match &report.outcome {
        Ok(Some(count)) => format!(
            "{step}: done, {count} {} in {} ms",
            report.step.counted(),
            report.duration.as_millis()
        ),
        Ok(None) => format!("{step}: skipped, a service's loop or another fpctl holds its lock"),
        Err(error) => format!("{step}: failed: {error}"),
    }
}
