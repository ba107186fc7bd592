//! `fpctl tenant delete`: removes a tenant and everything it owns (`fp_store::tenant_deletion`),
//! or with `--dry-run` counts what would go. Nothing is asked interactively: operators script it,
//! and the tenant is named by its id only, never by a name or a prefix.

use std::time::{Duration, Instant};

use anyhow::bail;
use fp_settings::{ExposeSecret, Settings};
use fp_store::tenant_deletion::{self, TenantRows};
use uuid::Uuid;

/// How often a long deletion says how far it has got.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

#[derive(clap::Args)]
pub struct DeleteArgs {
    /// The tenant's id (a UUID, as `fpctl tenant create` printed it).
    id: Uuid,
    /// Counts the rows a deletion would remove, per table, and deletes nothing.
    #[arg(long)]
    dry_run: bool,
    /// Delivery attempts deleted per transaction.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(i64).range(1..))]
    batch_rows: i64,
}

/// Prints `{"tenant_id", "dry_run", "rows": {table: count}, "total"}`: the rows the deletion
/// removed, or with `--dry-run` those it would remove. An unknown tenant is an error.
pub async fn delete(settings: &Settings, args: DeleteArgs) -> anyhow::Result<()> {
    let mut conn = fp_store::connect(settings.database.url.expose_secret()).await?;
    let rows = if args.dry_run {
        tenant_deletion::count(&mut conn, args.id).await?
    } else {
        let started = Instant::now();
        let mut told = Instant::now();
        tenant_deletion::delete(&mut conn, args.id, args.batch_rows, |attempts| {
            if told.elapsed() >= PROGRESS_EVERY {
                told = Instant::now();
                eprintln!(
                    "deleted {attempts} delivery attempts so far ({} s)",
                    started.elapsed().as_secs()
                );
            }
        })
        .await?
    };
    let Some(rows) = rows else {
        bail!("no tenant with id {}", args.id);
    };
    println!("{}", report(args.id, args.dry_run, &rows));
    Ok(())
}

fn report(tenant_id: Uuid, dry_run: bool, rows: &TenantRows) -> serde_json::Value {
    let per_table: serde_json::Map<String, serde_json::Value> = rows
        .tables
        .iter()
        .map(|counted| (counted.table.to_owned(), counted.rows.into()))
        .collect();
    serde_json::json!({
        "tenant_id": tenant_id,
        "dry_run": dry_run,
        "rows": per_table,
        "total": rows.total(),
    })
}
