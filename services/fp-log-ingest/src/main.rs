//! `fp-log-ingest`: persists every delivery attempt.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let tracing = fp_telemetry::init("fp-log-ingest");
    let result = match fp_settings::Settings::load() {
        Ok(settings) => fp_log_ingest::run(settings).await,
        Err(error) => Err(error.into()),
    };
    // Spans still queued go out before the process ends.
    tracing.shutdown();
    result
}
