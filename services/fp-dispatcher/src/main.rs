//! `fp-dispatcher`: delivers events to tenants' endpoints. Run as many as the load needs.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    fp_telemetry::init("fp-dispatcher")
        .flush_after(async { fp_dispatcher::run(fp_settings::Settings::load()?).await })
        .await
}
