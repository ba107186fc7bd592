//! log-ingest's maintenance loop, for the table it owns: once at start and then every
//! `retention.maintenance_interval`, it makes the `delivery_attempts` partitions of the coming days,
//! drops those past `retention.max_days`, and clears payloads past each tenant's retention. Every
//! replica runs the loop; each step's advisory lock lets one of them do it per round. What a step
//! did is logged and counted by `fp_store::maintenance`, the same as for `fpctl maintenance run`.

use std::time::Duration;

use chrono::Utc;
use fp_settings::{ExposeSecret, RetentionSettings, SecretString};
use fp_store::maintenance;
use fp_store::partitions::PartitionPolicy;
use tokio::sync::watch;

pub struct Maintenance {
    database_url: SecretString,
    policy: PartitionPolicy,
    interval: Duration,
}

impl Maintenance {
    pub fn new(database_url: SecretString, retention: &RetentionSettings) -> Self {
        Maintenance {
            database_url,
            policy: PartitionPolicy {
                partition_days: retention.partition_days,
                days_ahead: retention.days_ahead,
                max_days: retention.max_days,
            },
            interval: retention.maintenance_interval,
        }
    }

    /// Runs a round now and then every interval until `stop` turns true. Partitions first, so
    /// a long payload clearing never delays tomorrow's partition.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        let database_url = self.database_url.expose_secret();
        maintenance::run_rounds(database_url, self.interval, stop, |conn| {
            Box::pin(async move {
                let now = Utc::now();
                maintenance::create_partitions(conn, now, self.policy).await;
                maintenance::drop_partitions(conn, now, self.policy).await;
                maintenance::clear_payloads(conn, now).await;
            })
        })
        .await;
    }
}
