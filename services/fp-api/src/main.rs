//! `fp-api`: the tenant API and the outbox relay.

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    fp_telemetry::init("fp-api")
        .flush_after(async { fp_api::run(fp_settings::Settings::load()?).await })
        .await
}
