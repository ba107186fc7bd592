//! `fp-api`: the tenant API and the outbox relay.

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    fp_telemetry::init("fp-api");
    let settings = fp_settings::Settings::load()?;
    fp_api::run(settings).await
}
