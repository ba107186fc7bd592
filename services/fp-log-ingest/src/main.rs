//! `fp-log-ingest`: persists every delivery attempt.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    fp_telemetry::init("fp-log-ingest");
    let settings = fp_settings::Settings::load()?;
    fp_log_ingest::run(settings).await
}
