//! `fp-dispatcher`: delivers events to tenants' endpoints. Run as many as the load needs.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    fp_telemetry::init("fp-dispatcher");
    let settings = fp_settings::Settings::load()?;
    fp_dispatcher::run(settings).await
}
