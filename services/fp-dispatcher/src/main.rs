//! `fp-dispatcher`: delivers events to tenants' endpoints. Run as many as the load needs.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let tracing = fp_telemetry::init("fp-dispatcher");
    let result = match fp_settings::Settings::load() {
        Ok(settings) => fp_dispatcher::run(settings).await,
        Err(error) => Err(error.into()),
    };
    // Spans still queued go out before the process ends.
    tracing.shutdown();
    result
}
