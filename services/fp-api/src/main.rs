//! `fp-api`: the tenant API and the outbox relay.

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let tracing = fp_telemetry::init("fp-api");
    let result = match fp_settings::Settings::load() {
        Ok(settings) => fp_api::run(settings).await,
        Err(error) => Err(error.into()),
    };
    // Spans still queued go out before the process ends.
    tracing.shutdown();
    result
}
