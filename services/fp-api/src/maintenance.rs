//! The api's maintenance loop: prunes the outbox (published rows past `retention.outbox_grace_hours`)
//! and `submission_events` (rows past `Settings::submission_event_retention`) once at start and
//! then every `retention.maintenance_interval`. Every replica runs the loop; the
//! steps' advisory locks let one of them do each round (`fp_store::maintenance`).

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use fp_settings::{ExposeSecret, SecretString};
use fp_store::maintenance;
use fp_store::outbox::PruneBatches;
use tokio::sync::watch;

pub struct Maintenance {
    pub database_url: SecretString,
    pub outbox_grace: TimeDelta,
    pub submission_event_retention: TimeDelta,
    pub interval: Duration,
}

impl Maintenance {
    /// Runs a round now and then every interval until `stop` turns true; what each round did is
    /// logged and counted by `fp_store::maintenance`.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        let database_url = self.database_url.expose_secret();
        maintenance::run_rounds(database_url, self.interval, stop, |conn| {
            Box::pin(async move {
                let now = Utc::now();
                maintenance::prune_outbox(conn, now, self.outbox_grace, PruneBatches::STANDARD)
                    .await;
                maintenance::prune_submission_events(
                    conn,
                    now,
                    self.submission_event_retention,
                    PruneBatches::STANDARD,
                )
                .await;
            })
        })
        .await;
    }
}
