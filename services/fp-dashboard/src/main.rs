//! `fp-dashboard`: the server-rendered dashboard.

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let tracing = fp_telemetry::init("fp-dashboard");
    let result = match fp_settings::Settings::load() {
        Ok(settings) => fp_dashboard::run(settings).await,
        Err(error) => Err(error.into()),
    };
    // Spans still queued go out before the process ends.
    tracing.shutdown();
    result
}
