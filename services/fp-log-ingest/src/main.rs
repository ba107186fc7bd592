//! `fp-log-ingest`: persists every delivery attempt.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    fp_telemetry::init("fp-log-ingest")
        .flush_after(async { fp_log_ingest::run(fp_settings::Settings::load()?).await })
        .await
}
